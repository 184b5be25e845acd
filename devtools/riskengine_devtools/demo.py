"""``riskengine demo`` (``make demo``): the whole system on this machine, until Ctrl-C.

In order: the local stack (Kafka, schema registry, S3, Elasticsearch, Kafka Connect; services
already running are reused), the topics, the schemas, the Elasticsearch sink connector, two workers
(``faust -A riskengine worker`` on web ports 6066 and 6067, see ``--worker-ports``), the dashboard
and the trade producer with mock trading and every abuse scenario. Then it prints the URLs and,
every few seconds, a summary line (trades/s produced and analyzed, consumer lag, alerts by pattern),
and the time from the start of ``make demo`` to the first alert the dashboard pushed to its
browsers.

Ctrl-C (or SIGTERM, or ``--duration``) stops everything it started, in reverse order, including the
stack services it started (``--keep-stack`` leaves them running). Processes' logs go to
``--workdir`` (default ``var/demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from riskengine.settings import Settings
from riskengine_devtools import DevtoolsError
from riskengine_devtools.stack import build_services
from riskengine_devtools.stack.runner import State, down, inspect, up

BIN = Path(sys.executable).parent
WORKER_PORTS = (6066, 6067)
#: Seconds a started process has to answer its health URL.
READY_WITHIN = 240.0
SUMMARY_EVERY = 5.0
_TIMEOUT = aiohttp.ClientTimeout(total=5)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole system locally (stack, workers, dashboard, producer) until Ctrl-C",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--rate-ms", type=float, default=20.0, help="producer: mean ms between normal trades (default 20)"
    )
    parser.add_argument(
        "--scenario-every",
        type=int,
        default=150,
        help="producer: mean normal trades between two abuse scenarios (default 150)",
    )
    parser.add_argument(
        "--worker-ports",
        type=_ports,
        default=WORKER_PORTS,
        help="web ports of the workers, comma-separated (default 6066,6067: two workers)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("var/demo"), help="logs and worker data")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running at the end")
    parser.add_argument(
        "--started-at",
        type=float,
        help="epoch seconds the demo counts from (make demo passes its own start, install included)",
    )
    parser.set_defaults(handler=run_demo)


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("must be comma-separated port numbers") from None
    if not ports or not all(0 < port < 65536 for port in ports):
        raise argparse.ArgumentTypeError("must be comma-separated port numbers")
    return ports


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the demo; 0 after a clean stop, 1 when a step failed."""
    if args.duration < 0 or args.rate_ms <= 0 or args.scenario_every < 1:
        print("riskengine demo: --duration >= 0, --rate-ms > 0, --scenario-every >= 1", file=sys.stderr)
        return 2
    return asyncio.run(Demo(args, settings).run())


class StepFailed(DevtoolsError):
    """A demo step failed; the message says which and where its log is."""


class Demo:
    """The processes the demo started, and its summary."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.started_at = args.started_at or time.time()
        self.workdir: Path = args.workdir
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.started_services: list[str] = []
        self.worker_ports: tuple[int, ...] = args.worker_ports
        self.worker_urls = [f"http://{settings.worker_web_host}:{port}" for port in self.worker_ports]
        self.dashboard_url = f"http://{settings.dashboard_host}:{settings.dashboard_port}"
        self.producer_url = f"http://{settings.producer_host}:{settings.producer_port}"
        self.first_alert: float | None = None

    def say(self, text: str) -> None:
        """One progress line, with the seconds since the demo started."""
        print(f"[{time.time() - self.started_at:6.1f} s] {text}", flush=True)

    async def run(self) -> int:
        """Start everything, show the summary until stopped, stop everything."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        code = 0
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                await self._start(session)
                self._print_urls()
                watchers = [
                    asyncio.ensure_future(self._watch_alerts()),
                    asyncio.ensure_future(self._summaries(session)),
                ]
                if self.args.duration:
                    loop.call_later(self.args.duration, stop.set)
                await stop.wait()
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
                self.say("stopping")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    await session.post(
                        f"{self.producer_url}/api/admin/mock-trading/stop", headers=self._admin()
                    )
        except StepFailed as exc:
            self.say(f"FAILED: {exc}")
            code = 1
        finally:
            self._stop_processes()
            await self._stop_stack()
        return code

    # -- starting ------------------------------------------------------------------------------

    async def _start(self, session: aiohttp.ClientSession) -> None:
        await self._stack_up()
        for step in (("topics", "create"), ("schemas", "register"), ("connector", "deploy")):
            self.say("riskengine " + " ".join(step))
            await self._run_step([str(BIN / "riskengine"), *step], "-".join(step))
        for number, port in enumerate(self.worker_ports, start=1):
            datadir = self.workdir / f"worker-{number}"
            argv = [str(BIN / "faust"), "-A", "riskengine", "--datadir", str(datadir), "-l", "info"]
            self._spawn(f"worker-{number}", [*argv, "worker", "--web-port", str(port)])
        for url in self.worker_urls:
            await self._wait_http(session, f"{url}/health", "worker")
        self._spawn(
            "dashboard",
            [str(BIN / "riskengine"), "dashboard"],
            RISKENGINE_DASHBOARD_WORKER_URLS=",".join(self.worker_urls),
        )
        await self._wait_http(session, f"{self.dashboard_url}/", "dashboard")
        self._spawn("producer", [str(BIN / "riskengine-producer")])
        await self._wait_http(session, f"{self.producer_url}/health", "producer")
        query = {
            "rateMs": str(self.args.rate_ms),
            "scenarios": "all",
            "scenarioEvery": str(self.args.scenario_every),
            "quietMs": "10000",
        }
        async with session.post(
            f"{self.producer_url}/api/admin/mock-trading/start", params=query, headers=self._admin()
        ) as response:
            if response.status != 200:
                raise StepFailed(f"mock trading did not start: {response.status} {await response.text()}")
        self.say(f"mock trading started: a trade every {self.args.rate_ms:g} ms on average, all scenarios")

    async def _stack_up(self) -> None:
        services = build_services(self.settings)
        before = {service.name: (await inspect(service)).state for service in services}
        self.say("riskengine stack up")
        code = await up(services, self.settings.stack_start_timeout, lambda line: self.say(line))
        self.started_services = [name for name, state in before.items() if state is not State.READY]
        if code != 0:
            raise StepFailed("the stack did not start (see above; `riskengine stack status`)")

    async def _stop_stack(self) -> None:
        if self.args.keep_stack or not self.started_services:
            return
        self.say(f"stopping the stack services the demo started: {', '.join(self.started_services)}")
        await down(build_services(self.settings, self.started_services), lambda line: self.say(line))

    async def _run_step(self, argv: Sequence[str], name: str) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT)
            code = await process.wait()
        if code != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise StepFailed(f"{' '.join(argv[1:])} exited with {code}; {log}:\n{tail}")

    def _spawn(self, name: str, argv: Sequence[str], **env: str) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
            )
        self.processes.append((name, process))
        self.say(f"{name}: started, pid {process.pid}, log {log}")

    async def _wait_http(self, session: aiohttp.ClientSession, url: str, what: str) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    raise StepFailed(
                        f"{name} exited with {process.returncode}; see {self.workdir / name}.log"
                    )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        self.say(f"{what} ready: {url}")
                        return
            await asyncio.sleep(0.5)
        raise StepFailed(f"{what} not ready at {url} within {READY_WITHIN:.0f} s")

    def _admin(self) -> dict[str, str]:
        # Every POST to the producer must be JSON (riskengine.web_guard), body or not.
        token = self.settings.producer_admin_token.get()
        json = {"Content-Type": "application/json"}
        return json | {"Authorization": f"Bearer {token}"} if token else json

    def _print_urls(self) -> None:
        es = self.settings.elasticsearch_url
        lines = [
            f"dashboard       {self.dashboard_url}/",
            *(
                f"worker {n}        {url}/stats  {url}/alerts  {url}/users/{{userId}}"
                for n, url in enumerate(self.worker_urls, 1)
            ),
            f"producer API    {self.producer_url}/api/admin/stats  (POST /api/trades/produce)",
            f"Elasticsearch   {es}/risk-alerts/_search",
            f"Kafka Connect   {self.settings.connect_url}/connectors",
            "Ctrl-C stops everything the demo started.",
        ]
        self.say("ready:\n  " + "\n  ".join(lines))

    # -- watching ------------------------------------------------------------------------------

    async def _watch_alerts(self) -> None:
        """Read the dashboard's own alert stream: the first event is the first alert a browser sees."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        while self.first_alert is None:
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(f"{self.dashboard_url}/api/alerts/stream") as response,
                ):
                    async for line in response.content:
                        if line.startswith(b"data:"):
                            self.first_alert = time.time()
                            after = self.first_alert - self.started_at
                            self.say(f"first alert on the dashboard, {after:.1f} s after the demo started")
                            return
            except (TimeoutError, aiohttp.ClientError):
                pass
            # The stream ended or failed before an alert: connect again, without spinning.
            await asyncio.sleep(1.0)

    async def _summaries(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(SUMMARY_EVERY)
            self.say(await self._summary(session))

    async def _summary(self, session: aiohttp.ClientSession) -> str:
        """One line from the producer's stats and the dashboard's combined worker stats."""
        produced = await _json(session, f"{self.producer_url}/api/admin/stats", self._admin())
        workers = await _json(session, f"{self.dashboard_url}/api/stats") or {}
        rate = produced.get("produced", {}).get("tradesPerSecond", "?") if produced else "?"
        alerts = workers.get("alertsByPattern") or {}
        patterns = ", ".join(f"{name} {count}" for name, count in alerts.items()) or "none yet"
        return (
            f"produced {rate}/s, analyzed {float(workers.get('throughputPerSecond', 0.0)):.1f}/s "
            f"by {workers.get('workersUp', 0)}/{len(self.worker_urls)} workers, "
            f"lag {workers.get('consumerLagTotal', 0)}; alerts: {patterns}"
        )

    def _stop_processes(self) -> None:
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for name, process in reversed(self.processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            self.say(f"{name}: stopped ({process.returncode})")
        self.processes.clear()


async def _json(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Any:
    """The JSON body at ``url``, or None when it does not answer."""
    try:
        async with session.get(url, headers=headers or {}) as response:
            if response.status != 200:
                return None
            return json.loads(await response.text())
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
