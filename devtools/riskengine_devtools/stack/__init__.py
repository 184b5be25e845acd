"""The local service stack: real Kafka, schema registry and S3 servers without containers.

``riskengine stack up|down|status`` (see :mod:`riskengine_devtools.stack_command`). Downloads are cached in
``RISKENGINE_CACHE_DIR``; logs, pid files and data live in ``RISKENGINE_STACK_DIR``. A new service
is one module with a :class:`~riskengine_devtools.stack.service.Service` subclass plus one entry in
:data:`SERVICES`.
"""

from __future__ import annotations

from collections.abc import Sequence

from riskengine.settings import Settings
from riskengine_devtools.stack.connect import KafkaConnect
from riskengine_devtools.stack.elasticsearch import Elasticsearch
from riskengine_devtools.stack.kafka import Kafka
from riskengine_devtools.stack.object_store import ObjectStore
from riskengine_devtools.stack.schema_registry import SchemaRegistry
from riskengine_devtools.stack.service import Service, StackPaths

#: Every service, in start order (``down`` stops in reverse).
SERVICES: tuple[type[Service], ...] = (Kafka, SchemaRegistry, ObjectStore, Elasticsearch, KafkaConnect)


def service_names() -> list[str]:
    """The names ``--only`` accepts, in start order."""
    return [service.name for service in SERVICES]


def build_services(settings: Settings, only: Sequence[str] = ()) -> list[Service]:
    """The services to act on (all, or those named in ``only``), in start order."""
    paths = StackPaths.from_settings(settings)
    return [service(settings, paths) for service in SERVICES if not only or service.name in only]
