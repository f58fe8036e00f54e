# carechain-records: the records service may only sign with its own key svc-records.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-records" {
  capabilities = ["read"]
}
path "transit/sign/svc-records" {
  capabilities = ["update"]
}
