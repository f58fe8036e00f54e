# carechain-consent: the consent service may only sign with its own key svc-consent.
# Mount names are the defaults; `carechain admin vault-bootstrap` rewrites them if configured otherwise.
path "transit/keys/svc-consent" {
  capabilities = ["read"]
}
path "transit/sign/svc-consent" {
  capabilities = ["update"]
}
