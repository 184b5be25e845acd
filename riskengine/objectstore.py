"""S3 connection options from the one settings object (snapshots and tests use aioboto3)."""

from __future__ import annotations

from typing import Any

from aiobotocore.config import AioConfig

from riskengine.settings import Settings


def s3_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``aioboto3.Session().client("s3", ...)``."""
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
