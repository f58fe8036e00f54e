"""The FHIR R4 REST gateway: HTTP in front of the records service (docs/fhir.md); SMART Backend Services
authorisation in :mod:`.smart` (docs/fhir-smart.md).

Other packages may import only what ``CLIENT_MODULES`` lists; the rest is internal.
"""

CLIENT_MODULES: tuple[str, ...] = ()
