# carechain-storage: the storage service may only sign with its own key svc-storage.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-storage" {
  capabilities = ["read"]
}
path "transit/sign/svc-storage" {
  capabilities = ["update"]
}
