"""What every stack service has: addresses, folders, and the steps the runner drives.

A service is one local server (Kafka, the schema registry, the S3 gateway, ...). The runner
(:mod:`riskengine_devtools.stack.runner`) calls, in this order: :meth:`Service.install` (download into the
cache, once), :meth:`Service.prepare` (write config, format storage), :meth:`Service.command`
(started detached, output to :attr:`Service.log_file`), :meth:`Service.probe` until it answers,
then :meth:`Service.configure` (idempotent set-up through the service's own API).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from riskengine.settings import PREFIX, Settings
from riskengine_devtools import DevtoolsError

#: Every stack service binds here, whatever host name the settings use for it.
LOOPBACK = "127.0.0.1"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")

#: Prints one line of progress or result (the CLI passes a flushing ``print``).
Say = Callable[[str], None]


class StackError(DevtoolsError):
    """A stack operation failed; the message names the service, the artifact or the log to read."""


class StackConfigError(StackError):
    """The settings point a service somewhere the local stack cannot serve (not this machine)."""


@dataclass(frozen=True)
class Address:
    """A TCP listen address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _variable(field: str) -> str:
    return PREFIX + field.upper()


def _local(field: str, value: str, host: str | None, port: int | None) -> Address:
    if host not in _LOCAL_HOSTS:
        raise StackConfigError(
            f"{_variable(field)}={value!r} does not point at this machine; "
            f"the local stack serves {LOOPBACK} only"
        )
    if port is None:
        raise StackConfigError(f"{_variable(field)}={value!r} has no port")
    return Address(LOOPBACK, port)


def address_from_url(field: str, url: str) -> Address:
    """The local address an ``http://host:port/...`` setting points at; ``field`` names the setting."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise StackConfigError(f"{_variable(field)}={url!r}: {exc}") from None
    return _local(field, url, parts.hostname, port)


def address_from_bootstrap(field: str, servers: str) -> Address:
    """The local address of a one-broker ``host:port`` bootstrap list."""
    entries = [entry.strip() for entry in servers.split(",") if entry.strip()]
    if len(entries) != 1:
        raise StackConfigError(f"{_variable(field)}={servers!r}: the local stack runs exactly one broker")
    host, _, port = entries[0].rpartition(":")
    return _local(field, servers, host, int(port) if port.isdigit() else None)


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps downloads (``cache_dir``) and runtime files (``stack_dir``), absolute.

    Both are made absolute once: services run with their data folder as working directory, and
    some (VersityGW) do not accept relative paths.
    """

    stack_dir: Path
    cache_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackPaths:
        """The folders of ``settings``, relative ones taken from the current directory."""
        return cls(settings.stack_dir.absolute(), settings.cache_dir.absolute())

    @property
    def logs(self) -> Path:
        """Service and download logs."""
        return self.stack_dir / "logs"

    @property
    def run(self) -> Path:
        """Pid files and the lock that serialises stack commands."""
        return self.stack_dir / "run"

    @property
    def data(self) -> Path:
        """One data folder per service."""
        return self.stack_dir / "data"

    @property
    def conf(self) -> Path:
        """Rendered configuration files, one folder per service."""
        return self.stack_dir / "conf"


class Service(ABC):
    """One local server: how to download, configure, start and probe it.

    A subclass sets :attr:`name` and implements the abstract members; adding it to
    :data:`riskengine_devtools.stack.SERVICES` is all the runner needs.
    """

    #: Short name: ``--only`` selection and the log, pid, data and conf file names.
    name: ClassVar[str]
    #: Seconds between SIGTERM and SIGKILL when stopping.
    stop_timeout: ClassVar[float] = 30.0
    #: The system account the server runs as when the stack runs as root (created once, see
    #: :mod:`riskengine_devtools.stack.accounts`); None: it runs as whoever runs the stack.
    system_user: ClassVar[str | None] = None

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        self.settings = settings
        self.paths = paths

    @property
    @abstractmethod
    def address(self) -> Address:
        """The address clients use (the one ``status`` prints)."""

    @property
    def bound_addresses(self) -> tuple[Address, ...]:
        """Every address the server listens on; each must be free before it starts."""
        return (self.address,)

    @property
    @abstractmethod
    def product(self) -> str:
        """Product and version, e.g. ``Kafka 4.1.1``."""

    @abstractmethod
    async def install(self, say: Say) -> bool:
        """Download what the service runs into the cache dir unless it is there; True if it downloaded.

        Raises :class:`StackError` naming the artifact and the download log on failure.
        """

    async def prepare(self) -> None:
        """Write configuration and initialise storage before a start (default: the data folder)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        """Variables added to the inherited environment of the server process."""
        return {}

    @abstractmethod
    async def probe(self) -> bool:
        """One readiness check: True when the server answers its clients."""

    async def configure(self) -> str:
        """Idempotent set-up once ready (after every ``up``); returns what it did, or ``""``."""
        return ""

    @property
    def writable_dirs(self) -> tuple[Path, ...]:
        """The folders the server writes itself: handed to :attr:`system_user` before each start."""
        return (self.data_dir,)

    @property
    def log_file(self) -> Path:
        """The server's stdout and stderr."""
        return self.paths.logs / f"{self.name}.log"

    @property
    def install_log(self) -> Path:
        """Output of the download step."""
        return self.paths.logs / f"{self.name}-install.log"

    @property
    def pid_file(self) -> Path:
        """Pid and command line of the process the stack started."""
        return self.paths.run / f"{self.name}.pid"

    @property
    def data_dir(self) -> Path:
        """The server's persistent data and working directory."""
        return self.paths.data / self.name

    @property
    def conf_dir(self) -> Path:
        """Configuration files rendered for the server."""
        return self.paths.conf / self.name
