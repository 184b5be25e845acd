"""The live dashboard and the reporting views it serves (``riskengine dashboard``)."""

from riskengine.dashboard.server import create_dashboard, serving

__all__ = ["create_dashboard", "serving"]
