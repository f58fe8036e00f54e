# carechain-operator: what `carechain admin vault-bootstrap` needs, for running it without a root token.
# Attach to the platform team's own login (OIDC, userpass, ...), not to a service.

# Enable and read the engines and auth methods.
path "sys/mounts" {
  capabilities = ["read"]
}
path "sys/mounts/transit" {
  capabilities = ["create", "read", "update", "sudo"]
}
path "sys/mounts/carechain" {
  capabilities = ["create", "read", "update", "sudo"]
}
path "sys/auth" {
  capabilities = ["read"]
}
path "sys/auth/approle" {
  capabilities = ["create", "read", "update", "sudo"]
}
path "sys/auth/kubernetes" {
  capabilities = ["create", "read", "update", "sudo"]
}

# The per-service policies (sys/policy/ is the older spelling of the same endpoint).
path "sys/policies/acl/carechain-*" {
  capabilities = ["create", "read", "update", "list"]
}
path "sys/policy/carechain-*" {
  capabilities = ["create", "read", "update"]
}

# Roles for the services, their role ids and new secret ids.
path "auth/approle/role/carechain-*" {
  capabilities = ["create", "read", "update", "list"]
}
path "auth/kubernetes/config" {
  capabilities = ["create", "read", "update"]
}
path "auth/kubernetes/role/carechain-*" {
  capabilities = ["create", "read", "update", "list"]
}

# Create the services' signing keys and the pseudonym key; read their public keys.
# No sign, decrypt, datakey or export: the operator cannot act as a service.
path "transit/keys/svc-*" {
  capabilities = ["create", "read", "update"]
}
path "transit/keys/identity-pseudonym" {
  capabilities = ["create", "read", "update"]
}
path "transit/keys/ledger-metadata" {
  capabilities = ["create", "read", "update"]
}
