# carechain-consent: the consent service may sign with its own key svc-consent, and seal and open clinical
# metadata on the ledger with the ledger metadata key (docs/security.md, "Ledger privacy"): data keys
# under it, generated and unwrapped inside Transit. No validator, and not identity, holds this.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-consent" {
  capabilities = ["read"]
}
path "transit/sign/svc-consent" {
  capabilities = ["update"]
}
path "transit/datakey/plaintext/ledger-metadata" {
  capabilities = ["update"]
}
path "transit/decrypt/ledger-metadata" {
  capabilities = ["update"]
}
