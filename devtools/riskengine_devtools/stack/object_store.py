"""The S3 object store: VersityGW (Apache-2.0) serving a POSIX folder, built with ``go install``.

Buckets are the top-level folders of ``data/s3/buckets``; object metadata goes to a sidecar
folder instead of extended attributes, which not every file system keeps.
"""

from __future__ import annotations

from pathlib import Path

import aioboto3
import aiohttp
from botocore.exceptions import ClientError

from riskengine.connections import s3_client_options
from riskengine_devtools.stack.service import Address, Say, Service, StackConfigError, address_from_url
from riskengine_devtools.stack.tools import go_install, staged_dir

VERSION = "v1.7.0"
PACKAGE = f"github.com/versity/versitygw/cmd/versitygw@{VERSION}"
_TIMEOUT = aiohttp.ClientTimeout(total=5)


def versitygw_arguments(address: Address, region: str, metadata: Path, buckets: Path) -> list[str]:
    """Gateway options after the executable; the root credentials travel in the environment."""
    return [
        "--port",
        str(address),
        "--region",
        region,
        # One line per request would soon dwarf every other log of the stack.
        "--quiet",
        "posix",
        "--sidecar",
        str(metadata),
        str(buckets),
    ]


class ObjectStore(Service):
    """Table snapshots and their manifests."""

    name = "s3"
    system_user = "riskengine-s3"

    @property
    def address(self) -> Address:
        if not self.settings.s3_endpoint_url:
            raise StackConfigError(
                "RISKENGINE_S3_ENDPOINT_URL is empty (AWS): the local stack needs a local endpoint"
            )
        return address_from_url("s3_endpoint_url", self.settings.s3_endpoint_url)

    @property
    def product(self) -> str:
        return f"VersityGW {VERSION}"

    @property
    def executable(self) -> Path:
        """The gateway binary in the cache."""
        return self.paths.cache_dir / f"versitygw-{VERSION}" / "bin" / "versitygw"

    async def install(self, say: Say) -> bool:
        if self.executable.is_file():
            return False
        say(f"{self.name:9} building {PACKAGE} (log {self.install_log}; a few minutes on first run)")
        with staged_dir(self.executable.parent.parent) as partial:
            await go_install(
                PACKAGE,
                bin_dir=partial / "bin",
                cache_dir=self.paths.cache_dir,
                log=self.install_log,
                say=say,
            )
        return True

    @property
    def metadata_dir(self) -> Path:
        """The sidecar folder of object metadata."""
        return self.data_dir / "meta"

    @property
    def buckets_dir(self) -> Path:
        """One folder per bucket."""
        return self.data_dir / "buckets"

    async def prepare(self) -> None:
        await super().prepare()
        self.metadata_dir.mkdir(exist_ok=True)
        self.buckets_dir.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.executable),
            *versitygw_arguments(self.address, self.settings.s3_region, self.metadata_dir, self.buckets_dir),
        ]

    def environment(self) -> dict[str, str]:
        return {
            "ROOT_ACCESS_KEY": self.settings.s3_access_key_id,
            "ROOT_SECRET_KEY": self.settings.s3_secret_access_key.get(),
        }

    async def probe(self) -> bool:
        # Any S3 answer will do, even AccessDenied for this unsigned request: the gateway serves.
        try:
            async with (
                aiohttp.ClientSession(timeout=_TIMEOUT) as session,
                session.get(f"http://{self.address}/") as response,
            ):
                return "xml" in response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def configure(self) -> str:
        bucket = self.settings.s3_bucket
        async with aioboto3.Session().client("s3", **s3_client_options(self.settings)) as s3:
            try:
                await s3.head_bucket(Bucket=bucket)
                return f"bucket {bucket} exists"
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            await s3.create_bucket(Bucket=bucket)
        return f"bucket {bucket} created"
