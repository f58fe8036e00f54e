# carechain-ledger: the ledger service may only sign with its own key svc-ledger.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-ledger" {
  capabilities = ["read"]
}
path "transit/sign/svc-ledger" {
  capabilities = ["update"]
}
