"""CareChain: a permissioned ledger network for secure, consented sharing of health records.

Packages by audience (lower layers never import higher ones; ``tests/unit/test_layering.py`` checks it):

====  ======================================  ==============================================================
layer package                                 for
====  ======================================  ==============================================================
0     ``core``, ``labels``, ``*.v1``          everyone: crypto, Merkle proofs, tokens, errors, FHIR helpers,
                                              sensitivity labels, the generated protobuf stubs
1     ``client``                              partner hospitals and patients (the SDK); public API
2     ``runtime``                             the six servers' shared runtime (internal)
3     ``identity`` ``storage`` ``ledger``     the services (internal, except the modules each declares in
      ``consent`` ``audit`` ``records``       its ``CLIENT_MODULES``); ``fhir``: the FHIR R4 REST gateway
      ``fhir``                                in front of records
4     ``dev`` ``admin`` ``cli``               the local network, dev servers, demo; operator tools; the CLI
====  ======================================  ==============================================================
"""

__version__ = "0.1.0"
