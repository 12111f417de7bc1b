# Vault policy for a Gatehouse agent: read the credentials of the connections it
# serves, and nothing else. Attach it to the agent's AppRole, Kubernetes or JWT role.
#   vault policy write gatehouse-agent deploy/vault/gatehouse-agent.hcl

# KV v2 secrets of the connections (credential: {vault: {path: secret/data/gatehouse/…, key: …}}).
# Reading a version (?version=N) needs no more than read.
path "secret/data/gatehouse/*" {
  capabilities = ["read"]
}

# A dynamic secret, e.g. database credentials (credential: {vault: {path: database/creds/gatehouse-ro,
# key: password, dynamic: true}}): each read makes a lease the agent renews while it runs…
path "database/creds/gatehouse-ro" {
  capabilities = ["read"]
}

# …and revokes when it stops, each by its own path (sys/leases/revoke/<lease id>): this allows
# revoking the leases of this role and no others (update on sys/leases/revoke itself, where the
# lease id is in the body, would allow revoking any lease in Vault). Add one such path per
# dynamic secret. Renewal (sys/leases/renew), looking up and renewing its own token
# (auth/token/lookup-self, renew-self) are in Vault's built-in `default` policy.
path "sys/leases/revoke/database/creds/gatehouse-ro/*" {
  capabilities = ["update"]
}
