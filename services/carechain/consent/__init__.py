"""The consent service: patients' consent rules, decided into signed decision tokens.

Other packages may import only :data:`CLIENT_MODULES` (and ``v1``); the rest is internal.
"""

#: Modules other services and clients may import: the policy model and its checks (the ledger's contract
#: and the records gateway apply them too) and the FHIR Consent mapping the SDK uses.
CLIENT_MODULES = ("policy", "rules", "fhir_consent")
