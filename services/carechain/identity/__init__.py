"""The identity service: principals, access tokens and data keys released against consent decisions.

Other packages may import only ``v1``; the rest is internal.
"""

CLIENT_MODULES: tuple[str, ...] = ()
