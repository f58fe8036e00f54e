"""The shared server runtime (internal): server bootstrap, authentication and access tables, configuration,
peer stubs, logging, and the backend clients (Vault/OpenBao, etcd, SQLite, key managers).

Layer 2: may import :mod:`carechain.core` and :mod:`carechain.client`; never a service or dev tooling.
"""
