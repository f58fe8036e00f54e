"""CareChain: a permissioned ledger network for secure, consented sharing of health records."""

__version__ = "0.1.0"
