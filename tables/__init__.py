"""Faust table definitions: per-user state, per-symbol state, reference data."""
