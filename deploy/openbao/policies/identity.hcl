# carechain-identity: the identity service.
# Mount names are the defaults (transit/, carechain/); `carechain admin vault-bootstrap`
# rewrites them when CARECHAIN_VAULT_TRANSIT_MOUNT / CARECHAIN_VAULT_KV_MOUNT differ.

# Patients' key-encryption keys: create, read, configure (min_decryption_version,
# deletion_allowed), rotate and delete (crypto-shredding). Never export or back up.
path "transit/keys/patient-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "transit/datakey/plaintext/patient-*" {
  capabilities = ["update"]
}
# Batches of data keys are wrapped with encrypt (batch_input: one request per batch). "update"
# only, never "create": an encrypt can never create (upsert) a missing patient key.
path "transit/encrypt/patient-*" {
  capabilities = ["update"]
}
path "transit/decrypt/patient-*" {
  capabilities = ["update"]
}
path "transit/rewrap/patient-*" {
  capabilities = ["update"]
}

# Patient pseudonyms are HMACs under a key that never leaves Vault.
path "transit/keys/identity-pseudonym" {
  capabilities = ["read"]
}
path "transit/hmac/identity-pseudonym" {
  capabilities = ["update"]
}

# Its own signing key (access tokens, ledger transactions).
path "transit/keys/svc-identity" {
  capabilities = ["read"]
}
path "transit/sign/svc-identity" {
  capabilities = ["update"]
}

# Registry state in KV v2: principals, wrapped data keys, challenges, used decision tokens.
path "carechain/data/identity/*" {
  capabilities = ["create", "read", "update"]
}
path "carechain/metadata/identity/*" {
  capabilities = ["read", "list", "delete"]
}
