"""Avro contracts (``riskengine.<Name>.avsc``): the single source of truth for every message.

Loaded and expanded by :mod:`riskengine.contracts`; this package only carries the files.
"""
