"""``up``, ``down`` and ``status`` over a list of services, in start order.

``up`` re-uses a service whose recorded process still runs and answers, and starts the others;
``down`` stops, in reverse order, only processes the stack started (by pid file, checking the
command line still matches); ``status`` inspects without changing anything.
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from riskengine_devtools.stack.accounts import account_environment, server_account
from riskengine_devtools.stack.procs import (
    is_alive,
    owns,
    port_free,
    port_holder,
    read_pid_file,
    start_detached,
    stop_process,
    with_tail,
    write_pid_file,
)
from riskengine_devtools.stack.service import Say, Service, StackError, StackPaths
from riskengine_devtools.stack.tools import PROGRESS_EVERY

#: Seconds between readiness probes while a service starts.
PROBE_EVERY = 0.5


class State(enum.Enum):
    """What ``status`` finds for a service."""

    READY = "ready"
    STARTING = "running, not ready"
    STOPPED = "stopped"
    STALE = "stale pid"
    PORT_TAKEN = "port taken"


@dataclass(frozen=True)
class Inspection:
    """A service's state, the pid the stack recorded for it, and an explanation."""

    state: State
    pid: int | None = None
    detail: str = ""


def _taken_ports(service: Service) -> list[str]:
    return [
        f"{address} is in use by {port_holder(address.port)}"
        for address in service.bound_addresses
        if not port_free(address)
    ]


async def inspect(service: Service) -> Inspection:
    """Find the state of ``service`` from its pid file, its process, its ports and a probe."""
    try:
        record = read_pid_file(service.pid_file)
    except ValueError as exc:
        return Inspection(State.STALE, None, str(exc))
    if record is not None:
        if not is_alive(record.pid):
            return Inspection(State.STALE, record.pid, f"process gone; pid file {service.pid_file}")
        if not owns(record):
            return Inspection(State.STALE, record.pid, "the pid now belongs to another program")
        if await service.probe():
            return Inspection(State.READY, record.pid)
        return Inspection(State.STARTING, record.pid, f"not answering on {service.address}")
    taken = _taken_ports(service)
    if taken:
        return Inspection(State.PORT_TAKEN, None, "; ".join(taken))
    return Inspection(State.STOPPED)


@contextmanager
def stack_lock(paths: StackPaths, say: Say) -> Iterator[None]:
    """Serialise ``up`` and ``down`` across processes (two ``up`` must not start two Kafkas)."""
    paths.run.mkdir(parents=True, exist_ok=True)
    with (paths.run / "stack.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another `riskengine stack` command to finish (lock {lock.name})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _line(service: Service, action: str, detail: str) -> str:
    try:
        address = str(service.address)
    except StackError:
        address = "?"
    return f"{service.name:9} {address:16} {action:8} {detail}"


async def _wait_ready(service: Service, pid: int, ready_within: float, say: Say) -> float:
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY
    while True:
        if not is_alive(pid):
            raise StackError(with_tail(f"{service.name}: pid {pid} exited during start-up", service.log_file))
        if await service.probe():
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > ready_within:
            raise TimeoutError
        if now >= next_report:
            say(
                f"  ... waiting for {service.name} on {service.address}: {now - started:.0f} s "
                f"(log {service.log_file})"
            )
            next_report = now + PROGRESS_EVERY
        await asyncio.sleep(PROBE_EVERY)


async def _start(service: Service, ready_within: float, say: Say) -> tuple[int, float]:
    taken = _taken_ports(service)
    if taken:
        raise StackError(f"{service.name}: cannot start, {'; '.join(taken)}")
    await service.prepare()
    # After prepare: what it wrote (Kafka's formatted storage, say) goes to the account too.
    account = server_account(service.system_user, service.writable_dirs)
    argv = service.command()
    env = {**os.environ, **service.environment(), **account_environment(account, service.data_dir)}
    pid = start_detached(argv, env=env, cwd=service.data_dir, log=service.log_file, account=account)
    write_pid_file(service.pid_file, pid, argv)
    try:
        return pid, await _wait_ready(service, pid, ready_within, say)
    except TimeoutError:
        stopped = await stop_process(pid, service.stop_timeout)
        service.pid_file.unlink(missing_ok=True)
        raise StackError(
            with_tail(
                f"{service.name}: not ready after {ready_within:.0f} s; stopped pid {pid} ({stopped})",
                service.log_file,
            )
        ) from None
    except StackError:
        service.pid_file.unlink(missing_ok=True)
        raise


async def _configure(service: Service) -> str:
    try:
        return await service.configure()
    except StackError:
        raise
    except Exception as exc:
        # Whatever the service's own API raised (HTTP, S3 client errors): it is that service's failure.
        raise StackError(f"{service.name}: set-up after start failed: {type(exc).__name__}: {exc}") from exc


async def _bring_up(
    service: Service, found: Inspection, install_error: StackError | None, ready_within: float, say: Say
) -> tuple[str, str]:
    """Make ``service`` ready; returns what was done (``started``, ``reused``, ``waited``) and details."""
    started = time.monotonic()
    if found.state is State.READY and found.pid is not None:
        return "reused", _details(service, found.pid, await _configure(service))
    if found.state is State.STARTING and found.pid is not None:
        # Ours, but not answering: still booting (an `up` interrupted by Ctrl-C), or hung. Give it
        # the start-up time before calling it a failure.
        try:
            await _wait_ready(service, found.pid, ready_within, say)
        except TimeoutError:
            message = f"{service.name}: pid {found.pid} runs but is not ready after {ready_within:.0f} s"
            raise StackError(with_tail(message, service.log_file)) from None
        note = await _configure(service)
        return "waited", _details(service, found.pid, note, time.monotonic() - started)
    if found.state is State.PORT_TAKEN:
        raise StackError(f"{service.name}: cannot start, {found.detail}")
    if install_error is not None:
        raise install_error
    service.pid_file.unlink(missing_ok=True)  # a stale one, if any
    pid, ready_after = await _start(service, ready_within, say)
    return "started", _details(service, pid, await _configure(service), ready_after)


def _details(service: Service, pid: int, note: str, ready_after: float | None = None) -> str:
    timing = f", ready in {ready_after:.1f} s" if ready_after is not None else ""
    return f"{service.product}, pid {pid}{timing}" + (f"; {note}" if note else "")


async def _install(service: Service, say: Say) -> StackError | None:
    started = time.monotonic()
    try:
        downloaded = await service.install(say)
    except StackError as exc:
        return StackError(f"{service.name}: download failed: {exc}")
    if downloaded:
        say(f"{service.name:9} downloaded in {time.monotonic() - started:.1f} s")
    return None


async def up(services: Sequence[Service], ready_within: float, say: Say) -> int:
    """Start what is not running, in order; 0 when every service is ready, 1 when one failed.

    Downloads run concurrently first (they are most of a first run); services then start one by
    one, each after the previous is ready, since later ones may depend on earlier ones (Connect on
    Kafka). The first failure stops the sequence.
    """
    started = time.monotonic()
    found = {service.name: await inspect(service) for service in services}
    pending = [s for s in services if found[s.name].state not in (State.READY, State.STARTING)]
    outcomes = await asyncio.gather(*(_install(service, say) for service in pending))
    errors = {service.name: error for service, error in zip(pending, outcomes, strict=True)}
    actions: list[str] = []
    for index, service in enumerate(services):
        try:
            action, detail = await _bring_up(
                service, found[service.name], errors.get(service.name), ready_within, say
            )
        except StackError as exc:
            say(_line(service, "FAILED", str(exc)))
            for skipped in services[index + 1 :]:
                say(_line(skipped, "skipped", f"not started: {service.name} failed"))
            return 1
        say(_line(service, action, detail))
        actions.append(action)
    summary = ", ".join(f"{actions.count(action)} {action}" for action in dict.fromkeys(actions))
    say(f"stack up: {len(services)} ready ({summary}) in {time.monotonic() - started:.1f} s")
    return 0


async def down(services: Sequence[Service], say: Say) -> int:
    """Stop, in reverse order, what the stack started; 0 unless a process could not be stopped."""
    code = 0
    for service in reversed(services):
        try:
            record = read_pid_file(service.pid_file)
        except ValueError as exc:
            service.pid_file.unlink()
            say(_line(service, "cleaned", f"{exc}; removed it"))
            continue
        if record is None:
            say(_line(service, "stopped", "not running (no pid file)"))
            continue
        if not is_alive(record.pid):
            detail = f"pid {record.pid} had already exited; removed its pid file"
        elif not owns(record):
            detail = f"pid {record.pid} now runs another program: left alone; removed the pid file"
        else:
            try:
                detail = f"stopped pid {record.pid} ({await stop_process(record.pid, service.stop_timeout)})"
            except OSError as exc:
                say(_line(service, "FAILED", f"cannot stop pid {record.pid}: {exc}"))
                code = 1
                continue
        service.pid_file.unlink(missing_ok=True)
        say(_line(service, "stopped", detail))
    return code


async def status(services: Sequence[Service], say: Say) -> int:
    """Print each service's address, state and pid; 0 when all are ready, else 1."""
    found = [await inspect(service) for service in services]
    say(f"{'SERVICE':9} {'ADDRESS':16} {'STATE':19} {'PID':>7}  DETAIL")
    for service, inspection in zip(services, found, strict=True):
        pid = str(inspection.pid) if inspection.pid is not None else "-"
        detail = inspection.detail or (service.product if inspection.state is State.READY else "")
        say(f"{service.name:9} {service.address!s:16} {inspection.state.value:19} {pid:>7}  {detail}")
    return 0 if all(inspection.state is State.READY for inspection in found) else 1
