# carechain-audit: the audit service may only sign with its own key svc-audit.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-audit" {
  capabilities = ["read"]
}
path "transit/sign/svc-audit" {
  capabilities = ["update"]
}
