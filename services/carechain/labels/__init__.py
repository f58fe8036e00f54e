"""Labelling data and the labelling report (docs/sensitivity.md)."""
