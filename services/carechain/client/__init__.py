"""The partner client: what a hospital integrator or a patient imports (:class:`CareChainClient`).

Layer 1: imports only :mod:`carechain.core`, the generated ``*.v1`` stubs and the services' declared client
modules (``CLIENT_MODULES`` in each service package); never the server runtime, backends or dev tooling, so
``import carechain.client`` stays fast.

- :mod:`carechain.client.sdk`: :class:`~carechain.client.sdk.CareChainClient`, the API.
- :mod:`carechain.client.proofs`: client-side checks of ledger and audit proofs, trusting no server.
- :mod:`carechain.client.channels`, :mod:`~carechain.client.auth`, :mod:`~carechain.client.tls`,
  :mod:`~carechain.client.endpoints`: channels, tokens, TLS and endpoints (shared with the services).
"""
