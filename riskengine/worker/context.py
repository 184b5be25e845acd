"""What every part of the worker shares, built once from the settings before the Faust app."""

from __future__ import annotations

from dataclasses import dataclass

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.contracts.topics import Topics, topic_names
from riskengine.settings import Settings
from riskengine.worker.metrics import Metrics
from riskengine.worker.tables.reference_feed import ReferenceFeed


@dataclass(frozen=True)
class WorkerContext:
    """The worker's settings, topic names, schema catalog, metrics and reference data.

    Nothing here does I/O when built: the catalog is registered and warmed, and the reference data
    loaded, by :meth:`riskengine.worker.app.RiskApp.on_first_start`, before anything consumes.
    """

    settings: Settings
    names: Topics
    catalog: SchemaCatalog
    metrics: Metrics
    reference: ReferenceFeed

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        """The context of a worker configured by ``settings``."""
        names = topic_names(settings)
        catalog = SchemaCatalog.for_settings(settings)
        metrics = Metrics()
        return cls(settings, names, catalog, metrics, ReferenceFeed(settings, names, catalog, metrics))
