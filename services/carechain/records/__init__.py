"""The records service: the gateway partner hospitals call to store and read FHIR records.

Other packages may import only ``v1``; the rest is internal.
"""

CLIENT_MODULES: tuple[str, ...] = ()
