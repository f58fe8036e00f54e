"""Real backend servers on localhost for development and tests.

``carechain up --with-backends`` and the integration tests start OpenBao, MinIO
and etcd through these launchers (one place), on 127.0.0.1 with free ports and
temporary data directories. Binaries are found by :func:`find_tool`.
"""
