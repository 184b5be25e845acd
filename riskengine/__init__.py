"""riskengine: real-time trade risk and market-abuse surveillance on Kafka and Faust."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # PEP 562: ``faust -A riskengine`` looks up ``riskengine.app``, the worker's Faust app. Building
    # it only then keeps ``import riskengine.core`` (replay, benchmarks, tests) free of Faust.
    if name == "app":
        from importlib import import_module

        found = import_module("riskengine.worker.app").app
        # Faust resolves ``-A riskengine`` more than once: bind the app so every look-up finds it.
        globals()["app"] = found
        return found
    raise AttributeError(f"module 'riskengine' has no attribute {name!r}")
