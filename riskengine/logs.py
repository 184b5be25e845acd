"""Logging for every riskengine process: the level and format from the settings, noisy libraries quieted.

``RISKENGINE_LOG_FORMAT=json`` writes one JSON object per line (for a log pipeline: Loki,
Elasticsearch, CloudWatch...) with the time, level, logger, message, the process's ``worker`` id
(the host name: the pod name on Kubernetes) and ``app`` id, and, where the log call passes them with
``extra=``, the record's ``topic``, ``partition``, ``offset``, ``tradeId``, ``userId`` and ``reason``
(:data:`CONTEXT_FIELDS`). ``text`` (the default) keeps the human-readable lines.

The CLI calls :func:`configure`; the worker passes :func:`faust_logging_config` to Faust, which
sets logging up itself when ``faust -A riskengine worker`` starts.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

from riskengine.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Attributes a log call may pass with ``extra=`` that JSON lines carry as fields of their own.
CONTEXT_FIELDS = ("topic", "partition", "offset", "tradeId", "userId", "reason")
#: Libraries that log every request at INFO (httpx: one line per registry call; the registry client:
#: every lookup that precedes a registration) only say WARNING and up.
QUIET_LOGGERS = ("httpx", "httpcore", "schema_registry")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises for an odd value (it is shown with ``repr``)."""

    def __init__(self, worker: str | None = None, app: str | None = None) -> None:
        super().__init__()
        self.worker = worker or socket.gethostname()
        self.app = app

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line: fixed fields first, context fields when present."""
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        if self.app:
            document["app"] = self.app
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=repr, ensure_ascii=False)


def quiet_libraries() -> None:
    """Raise the level of the libraries in :data:`QUIET_LOGGERS` to WARNING."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(settings: Settings) -> None:
    """Root logging for a ``riskengine`` command: level and format from the settings."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(app=settings.worker_app_id))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    quiet_libraries()


def faust_logging_config(settings: Settings) -> dict[str, Any] | None:
    """Faust's ``logging_config`` for the worker: None keeps Faust's own text lines.

    Merged into Faust's defaults (its level and handler name stay), with the handler's formatter
    replaced by :class:`JsonFormatter` when the format is ``json``.
    """
    loggers = {name: {"level": "WARNING"} for name in QUIET_LOGGERS}
    if settings.log_format != "json":
        return {"merge": True, "loggers": loggers}
    return {
        "merge": True,
        "formatters": {"json": {"()": JsonFormatter, "app": settings.worker_app_id}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
        },
        "loggers": loggers,
    }
