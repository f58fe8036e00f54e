"""The identity service: principals, access tokens and data keys released against consent decisions.

Other packages may import only ``v1`` and the modules in CLIENT_MODULES; the rest is internal.
"""

# data_key_client: GenerateDataKey / ReleaseDataKey batched across concurrent callers (the records gateway).
CLIENT_MODULES: tuple[str, ...] = ("data_key_client",)
