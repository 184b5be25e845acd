"""Real worker processes: ``faust -A riskengine worker`` as subprocesses, each isolated.

Each run (a test, a chaos scenario) gets its own app id (consumer group, changelog topics) and topic
suffix, so runs never share state. :class:`WorkerProcess` always ends its process (``stop``) and
keeps the log for messages. Used by the integration tests and by ``riskengine chaos``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.contracts.topics import ensure_topics, topic_specs
from riskengine.settings import Settings

#: The checkout (the workers' working directory).
REPO = Path(__file__).resolve().parents[3]
FAUST = Path(sys.executable).parent / "faust"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def isolated(settings: Settings, unique: str, prefix: str = "riskengine-test") -> Settings:
    """``settings`` with an app id (``prefix-unique``) and topic suffix (``-unique``) of their own."""
    return dataclasses.replace(settings, worker_app_id=f"{prefix}-{unique}", worker_topic_suffix=f"-{unique}")


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process for ``settings``: the test's own, plus its isolation."""
    # Inherit every RISKENGINE_* setting (a stack on other ports, credentials) and add the test's.
    env = dict(os.environ)
    env["RISKENGINE_WORKER_APP_ID"] = settings.worker_app_id
    env["RISKENGINE_WORKER_TOPIC_SUFFIX"] = settings.worker_topic_suffix
    env["RISKENGINE_TOPIC_PARTITIONS"] = str(settings.topic_partitions)
    env["RISKENGINE_WORKER_SNAPSHOT_INTERVAL"] = "0"
    for name, value in extra.items():
        env["RISKENGINE_" + name.upper()] = value
    return env


class WorkerProcess:
    """One worker subprocess with its own datadir and web port."""

    def __init__(self, settings: Settings, datadir: Path, name: str = "worker", **extra: str) -> None:
        self.settings = settings
        self.datadir = datadir
        self.port = free_port()
        self.log_path = datadir.parent / f"{name}.log"
        self.env = worker_env(settings, **extra)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """Base URL of the worker's web server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch the worker (returns at once; see :meth:`wait_ready`)."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *(str(FAUST), "-A", "riskengine", "--datadir", str(self.datadir), "-l", "info", "worker"),
                *("--web-port", str(self.port), "--web-host", "127.0.0.1"),
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def alive(self) -> bool:
        """True while the process runs (False before the first start)."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What this run of the worker logged so far."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    async def wait_ready(self, wait_s: float = 60.0) -> None:
        """Wait until the worker logs that it is ready; fail with the log tail otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if "Worker]: Ready" in self.log():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker not ready after {wait_s}s:\n{self.log()[-4000:]}")

    def freeze(self) -> None:
        """SIGSTOP: the worker neither consumes, commits nor heartbeats until killed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


async def prepare(settings: Settings) -> SchemaCatalog:
    """Create the isolated topics and return a registered catalog for encoding test messages."""
    await ensure_topics(settings, topic_specs(settings))
    catalog = SchemaCatalog.for_settings(settings)
    await catalog.register()
    return catalog


@contextlib.asynccontextmanager
async def running(workers: list[WorkerProcess]) -> AsyncIterator[list[WorkerProcess]]:
    """Start ``workers``, wait until each is ready, and stop them all on the way out."""
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            await worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
