"""Operator tools (bootstrap of production backends)."""
