"""Core primitives every layer may use: cryptography, RFC 9162 Merkle trees, signed tokens, errors with their
gRPC status, FHIR helpers, private files, the network's names and trust layout, tracing.

Layer 0: imports nothing from CareChain but other core modules and the generated ``*.v1`` stubs.
"""
