"""The FHIR R4 REST gateway in front of the records gateway; SMART Backend Services authorisation in :mod:`.smart`."""
