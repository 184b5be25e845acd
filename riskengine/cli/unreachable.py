"""One clear line, instead of a traceback, when a command cannot reach a service.

Every ``riskengine`` command that talks to Kafka, the schema registry or S3 runs its work through
:func:`reaching`: a connection failure becomes one line naming the service, where the settings say
it is, and the variable to change, and the command exits 1 (``riskengine connector`` does the same
for Kafka Connect and Elasticsearch in :mod:`riskengine.search.sink_connector`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

from riskengine.errors import CommandError
from riskengine.settings import Settings

T = TypeVar("T")

#: aiokafka's ways of saying the broker cannot be reached.
_KAFKA_ERRORS = (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError)


class ServiceUnreachable(CommandError):
    """Raised by :func:`reaching`; ``str()`` is the one line to print."""


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unreachable_line(exc: BaseException, settings: Settings) -> str | None:
    """The line for ``exc`` if it (or its cause) is a connection failure, else None."""
    for cause in _causes(exc):
        if isinstance(cause, _KAFKA_ERRORS):
            return (
                f"Kafka at {settings.kafka_bootstrap_servers} is unreachable "
                f"(RISKENGINE_KAFKA_BOOTSTRAP_SERVERS): {_first_line(cause)}"
            )
        if isinstance(cause, httpx.TransportError):
            return (
                f"the schema registry at {settings.schema_registry_url} is unreachable "
                f"(RISKENGINE_SCHEMA_REGISTRY_URL): {_first_line(cause)}"
            )
        s3 = _s3_failure(cause)
        if s3 == "unreachable":
            return (
                f"S3 at {settings.s3_endpoint_url or 'AWS'} is unreachable (RISKENGINE_S3_ENDPOINT_URL, "
                f"bucket RISKENGINE_S3_BUCKET={settings.s3_bucket}): {_first_line(cause)}"
            )
        if s3 == "refused":
            # Answered, but no: a missing bucket, wrong credentials. Named as plainly.
            return (
                f"S3 at {settings.s3_endpoint_url or 'AWS'} refused the request for bucket "
                f"{settings.s3_bucket} (RISKENGINE_S3_BUCKET, RISKENGINE_S3_ACCESS_KEY_ID, "
                f"RISKENGINE_S3_SECRET_ACCESS_KEY): {_first_line(cause)}"
            )
    return None


def _s3_failure(exc: BaseException) -> str | None:
    """ "unreachable", "refused" (the server said no) or None for what is not an S3 client error."""
    # botocore is imported only by the commands that use S3.
    if not type(exc).__module__.startswith(("botocore", "aiobotocore")):
        return None
    from botocore.exceptions import ClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, BotoConnectionError | NoCredentialsError):
        return "unreachable"
    if isinstance(exc, ClientError):
        return "refused"
    return None


class _NoConnectErrors(logging.Filter):
    """Drops aiokafka's own "Unable connect to ..." errors: the command's one line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to")


def reaching(work: Coroutine[Any, Any, T], settings: Settings) -> T:
    """``asyncio.run(work)``; a connection failure raises :class:`ServiceUnreachable` with its line."""
    quiet = _NoConnectErrors()
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.addFilter(quiet)
    try:
        return asyncio.run(work)
    except Exception as exc:
        line = unreachable_line(exc, settings)
        if line is None:
            raise
        raise ServiceUnreachable(line) from exc
    finally:
        kafka_log.removeFilter(quiet)


def report(command: str, exc: ServiceUnreachable) -> int:
    """Print ``riskengine <command>: <line>`` on stderr; the exit code 1."""
    print(f"riskengine {command}: {exc}", file=sys.stderr)
    return 1
