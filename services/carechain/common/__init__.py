"""Shared proto types."""
