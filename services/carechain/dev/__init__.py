"""Development tooling (internal): the one-command local network, dev servers for OpenBao, MinIO and etcd,
the demo story, the local certificate authority and reports that regenerate docs.

Layer 4 with :mod:`carechain.admin` and :mod:`carechain.cli`: may import anything; nothing imports it but those.
"""
