"""Processes of the stack: detached start, pid files, ownership checks, stop, ports, log tails.

Linux only: ownership and port holders are read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from riskengine_devtools.stack.service import Address

#: Written to a service log before each start, so a failure shows only this run's lines.
START_MARKER = "==== riskengine stack: starting "
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: the pid, and the command line it was started with (shell-quoted)."""

    pid: int
    command: str


def write_pid_file(path: Path, pid: int, argv: list[str]) -> None:
    """Record ``pid`` and ``argv``; the first line alone is the pid (``kill $(head -1 FILE)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{pid}\n{shlex.join(argv)}\n")
    partial.replace(path)


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``; None when there is no pid file. Raises ValueError when malformed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    first, _, rest = text.partition("\n")
    # 0 and 1 are never a server of ours, and 0 means "the whole process group" to kill().
    if not first.strip().isdigit() or int(first) < 2:
        raise ValueError(f"pid file {path} does not start with a pid")
    return PidRecord(int(first), rest.strip())


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone; one of our own children is reaped)."""
    try:
        # A server that died while this CLI still runs is our child: reap it, or it stays a zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def process_command(pid: int) -> str | None:
    """The shell-quoted command line of a running ``pid``, or None when it is gone."""
    if not is_alive(pid):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return shlex.join(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def owns(record: PidRecord) -> bool:
    """True when the recorded pid still runs the recorded command (not a re-used pid)."""
    return process_command(record.pid) == record.command


def start_detached(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    account: pwd.struct_passwd | None = None,
) -> int:
    """Start ``argv`` in a new session with output appended to ``log``; returns its pid.

    The new session keeps the server alive after the CLI exits and away from the terminal's
    signals (Ctrl-C in the shell that ran ``up`` must not stop Kafka). With ``account`` (the
    caller is root), the process drops to that account and its group alone before it executes
    ``argv``: the pid returned is the unprivileged server itself, not a privileged wrapper.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"{START_MARKER}{time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            # Root's supplementary groups (disk, adm...) must not follow the server.
            extra_groups=[] if account else None,
        )
    return process.pid


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        # Started with a new session, the server leads its own process group: signal the group
        # so helper processes it may have spawned go too.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


async def _wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def stop_process(pid: int, grace: float) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns how it ended.

    Raises :class:`OSError` when the process survives SIGKILL (another user's process, say).
    """
    started = time.monotonic()
    _signal(pid, signal.SIGTERM)
    if await _wait_gone(pid, grace):
        return f"SIGTERM, {time.monotonic() - started:.1f} s"
    _signal(pid, signal.SIGKILL)
    if await _wait_gone(pid, 10.0):
        return f"SIGKILL after {grace:.0f} s without exiting on SIGTERM"
    raise OSError(errno.EBUSY, f"pid {pid} survived SIGKILL")


def port_free(address: Address) -> bool:
    """True when nothing listens on ``address`` (a test bind, as the server itself will do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Without SO_REUSEADDR, connections in TIME_WAIT from a server just stopped would count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError:
            return False
    return True


async def accepts_connections(address: Address) -> bool:
    """True when a TCP connection to ``address`` succeeds within a second."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _TCP_LISTEN and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    return inodes


def _socket_links(proc: Path) -> set[str]:
    links: set[str] = set()
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return links  # gone meanwhile, or another user's process
    for fd in fds:
        try:
            links.add(os.readlink(fd))
        except OSError:
            continue  # closed since the listing (the listing's own descriptor, for one)
    return links


def port_holder(port: int) -> str:
    """Who listens on ``port``, as ``pid N (command)``, for messages; best effort."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if sockets:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            if _socket_links(proc) & sockets:
                command = process_command(int(proc.name)) or "?"
                return f"pid {proc.name} ({_shorten(command)})"
    return "a process this user cannot see"


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())  # one line, even for `python -c` scripts
    return text if len(text) <= limit else text[: limit - 3] + "..."


def log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of ``path`` written since the last start marker."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 256 * 1024))
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    recent = text.splitlines()
    for index in range(len(recent) - 1, -1, -1):
        if recent[index].startswith(START_MARKER):
            recent = recent[index + 1 :]
            break
    return recent[-lines:]


def with_tail(message: str, log: Path, lines: int = 20) -> str:
    """``message`` followed by the indented tail of ``log`` and its path."""
    tail = log_tail(log, lines)
    if not tail:
        return f"{message}\n  (no output in {log} since the start)"
    shown = "\n".join(f"    {line}" for line in tail)
    return f"{message}\n  last lines of {log}:\n{shown}"
