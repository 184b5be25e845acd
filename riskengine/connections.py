"""Client options for the services the engine talks to, from the one settings object.

Kafka (every aiokafka client: producers, consumers, admin) and S3 (aioboto3) are configured here
and nowhere else, so credentials and TLS are read in one place. The schema registry's client is in
:mod:`riskengine.contracts.avro_codec`, Elasticsearch's in :mod:`riskengine.search.index_templates.reporting`.
"""

from __future__ import annotations

import ssl
from typing import Any

from riskengine.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, or None for plaintext protocols."""
    if not settings.kafka_uses_tls:
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get()
    return options


def s3_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``aioboto3.Session().client("s3", ...)``."""
    # Imported here: only snapshots and the stack's S3 check need botocore.
    from aiobotocore.config import AioConfig

    options: dict[str, Any] = {
        "region_name": settings.s3_region,
        "aws_access_key_id": settings.s3_access_key_id,
        "aws_secret_access_key": settings.s3_secret_access_key.get(),
        # Path-style URLs work with every S3-compatible server (VersityGW, MinIO) and with AWS.
        "config": AioConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    }
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    return options
