# carechain-ledger: the ledger service may only sign with its own key svc-ledger.
# Each further validator gets carechain-<validator-id>: this policy with svc-ledger replaced by its id
# (`carechain admin vault-bootstrap --validator <id>`), so it signs with its own key only.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-ledger" {
  capabilities = ["read"]
}
path "transit/sign/svc-ledger" {
  capabilities = ["update"]
}
