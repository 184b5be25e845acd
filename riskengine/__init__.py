"""riskengine: real-time trade risk and market-abuse surveillance on Kafka and Faust."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # PEP 562: ``faust -A riskengine`` looks up ``riskengine.app``, the worker's Faust app. Building
    # it only then keeps ``import riskengine.core`` (replay, benchmarks, tests) free of Faust.
    if name == "app":
        from riskengine.settings import Settings
        from riskengine.worker.app import create_app

        app = create_app(Settings.from_env())
        # Faust resolves ``-A riskengine`` more than once: bind the app so every look-up finds it.
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'riskengine' has no attribute {name!r}")
