"""The producer service: the seed's REST API over the simulator, Kafka and the audit trail.

Endpoints (JSON in and out). Every request first passes :func:`riskengine.web_guard.guard`: its
Host must name this server (421), an Origin must be this server's own (403), query parameters are at
most 256 characters (400), and a POST must be ``Content-Type: application/json`` (415).
When ``RISKENGINE_PRODUCER_ADMIN_TOKEN`` is set, ``/api/admin/*`` and ``/api/trades/produce`` need
``Authorization: Bearer <token>`` (401 otherwise, a malformed header included). When it is not
set, ``/api/admin/*`` answer only requests from the loopback interface (403 otherwise): they start
and stop a simulation that writes to the shared topics, which nobody on the network should do
without a token; ``/api/trades/produce`` stays open, as on the seed, for local tools.

- ``POST /api/trades/produce``: body is a ``CryptoTrade`` in the seed's camelCase fields.
  ``userId``, ``symbol``, ``side``, ``quantity`` and ``price`` are required; ``tradeId`` (generated),
  ``timestamp`` (now), ``notional`` (quantity x price), ``customerId`` (the simulated account's, else
  the userId), ``exchange`` (the first configured), ``orderType`` (MARKET) and ``riskLevel``,
  ``counterpartyUserId``, ``orderId`` (null) are filled in when missing. A bad body (not UTF-8 or
  the declared charset, not JSON, nested too deeply, a bad field) is answered 400 with
  ``{"error", "field", "reason"}``, the field and the reason at most :data:`MAX_ECHO` characters
  each (a long input is never echoed back whole). 200 once the broker acknowledged the trade; 202
  if it has not within the ack timeout (it is being retried; see the audit endpoint).
- ``POST /api/admin/mock-trading/start``: start (or restart) the simulation, mapped onto the wall
  clock. Query: ``rateMs`` (mean ms between normal trades), ``scenarios`` (all, none, or names),
  ``seed``, ``users``, ``symbols``, ``exchanges``, ``scenarioEvery``, ``quietMs`` (how long a
  scenario's accounts stay quiet before it starts, default 5 minutes). The accounts' profiles are
  published to the user-profiles topic first, then the simulation's reference lists (the sanctioned
  countries the population is drawn against, as in ``riskengine generate``'s reference file) as
  one ``RiskReference`` record on risk-reference, versioned with the run's start in epoch ms (a
  later start supersedes it; see :func:`reference_message`).
- ``POST /api/admin/mock-trading/stop``: stop it. Starts and stops are serialized: one waits for
  the other, so two concurrent starts leave one simulation, which the next stop stops.
- ``GET /api/admin/stats``: produced per topic, trades/s over the last 10 s, errors, counts by
  scenario, the simulation's own counts, the audit trail's rows by status.
- ``GET /api/admin/audit``: ``?tradeId=`` gives the trade and its order's events with their
  produce status; or filter by ``eventId``, ``status``, ``scenarioId`` (``limit``, default 100).
- ``GET /health``: liveness, no token needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from riskengine.contracts.avro_codec import SchemaCache, SchemaCatalog
from riskengine.contracts.reference_record import RECORD_NAME, REFERENCE_KEY, reference_record
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import ensure_topics, topic_specs
from riskengine.core import InvalidTrade, ReferenceData, parse_trade
from riskengine.errors import SettingsError
from riskengine.logs import configure as configure_logging
from riskengine.settings import Settings
from riskengine.web_guard import allowed_names, guard, is_loopback, token_matches

from .audit import AuditLog, Outgoing
from .config import ProducerConfig
from .events import Event, Label
from .population import PopulationError, reference_document
from .publisher import KafkaTransport, Publisher, Transport
from .scenarios import parse_scenarios
from .simulator import InvalidConfig, SimulationConfig, Simulator

log = logging.getLogger(__name__)

#: The CryptoTrade fields a produce request may carry, in contract order.
TRADE_FIELDS = tuple(field["name"] for field in expanded_schema("CryptoTrade")["fields"])
#: Simulation fields -> the query parameter that sets them (for naming the one at fault).
_PARAMETERS = {
    "rate_ms": "rateMs",
    "scenarios": "scenarios",
    "seed": "seed",
    "users": "users",
    "symbols": "symbols",
    "exchanges": "exchanges",
    "scenario_every": "scenarioEvery",
    "quiet_ms": "quietMs",
}

#: Characters of a field name or reason an error answer carries at most: a reason may quote the
#: request (a 500,000-character side, a 4,000-digit timestamp), which must not come back whole.
MAX_ECHO = 200

Connector = Callable[[ProducerConfig], Awaitable[tuple[Transport, SchemaCache]]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text)} characters)"


def _bad_request(field: str, reason: str, error: str = "invalid request") -> web.Response:
    return web.json_response(
        {"error": error, "field": _clipped(field), "reason": _clipped(reason)}, status=400
    )


def event_message(event: Event, config: ProducerConfig) -> Outgoing:
    """The message for a simulated event: its topic, key (userId) and label."""
    topic = config.topics.trades if event.kind.value == "trade" else config.topics.orders
    return Outgoing(
        kind=event.kind.value,
        record_name=event.kind.record_name,
        topic=topic,
        key=event.user_id,
        event_id=event.event_id,
        event_ts=event.timestamp,
        record=event.record,
        scenario=event.scenario,
        scenario_id=event.scenario_id,
        order_id=event.record.get("orderId"),
    )


def reference_message(simulator: Simulator, config: ProducerConfig) -> Outgoing:
    """The simulation's reference lists as the ``RiskReference`` message published at start.

    The same lists as ``riskengine generate``'s reference file (without the profiles, which go to
    user-profiles one by one), so the workers see what ``riskengine replay --reference`` sees. The
    version is the run's start in epoch ms: every start supersedes the previous one's without
    reading the topic, and a ``riskengine reference publish`` after it continues from there.
    """
    start = simulator.config.start_ms
    document = reference_document(simulator.population, start)
    del document["profiles"]
    record = reference_record(
        ReferenceData.from_document(document),
        version=start,
        updated_at=start,
        updated_by=f"riskengine-producer (seed {simulator.config.seed})",
    )
    return Outgoing(
        kind="reference",
        record_name=RECORD_NAME,
        topic=config.topics.risk_reference,
        key=REFERENCE_KEY.decode(),
        event_id=f"reference@{start}",
        event_ts=start,
        record=record,
    )


@dataclass
class _Run:
    simulator: Simulator
    started_at: int
    task: asyncio.Task[None] | None = None
    # The event taken from the simulator and not submitted yet, the time sent up to, and the
    # labels whose events are not all sent yet (a label is stored once they are).
    unsent: Event | None = None
    sent_until: int = 0
    held: list[Label] = field(default_factory=list)

    def release_labels(self, audit: AuditLog, stopping: bool = False) -> None:
        """Store the labels whose events were all sent; when stopping, the rest as incomplete."""
        self.held.extend(self.simulator.drain_labels())
        if stopping:
            unsent = self.simulator.unreleased_ids() | ({self.unsent.event_id} if self.unsent else set())
            for label in self.held:
                audit.label(_trimmed(label, unsent))
            self.held = []
            return
        # Events come out in time order, so everything up to end_ts is sent once time moved past it.
        ready = [label for label in self.held if label.end_ts < self.sent_until]
        if ready:
            self.held = [label for label in self.held if label.end_ts >= self.sent_until]
            for label in ready:
                audit.label(label)


def _trimmed(label: Label, unsent: set[str]) -> Label:
    if not unsent & label.event_ids:
        return label
    return replace(
        label,
        complete=False,
        trade_ids=tuple(i for i in label.trade_ids if i not in unsent),
        order_event_ids=tuple(i for i in label.order_event_ids if i not in unsent),
    )


class MockTrading:
    """The simulation, paced by the wall clock: an event is sent when its timestamp comes."""

    def __init__(self, config: ProducerConfig, publisher: Publisher, audit: AuditLog) -> None:
        self._config = config
        self._publisher = publisher
        self._audit = audit
        self._run: _Run | None = None
        # Start awaits the broker (profiles, reference) between stopping the old run and creating
        # the new one; without the lock two concurrent starts both create one, and the first is
        # lost to stop() while it keeps producing.
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def simulator(self) -> Simulator | None:
        """The current (or last stopped) run's simulator."""
        return None if self._run is None else self._run.simulator

    @property
    def running(self) -> bool:
        """True while the simulation produces."""
        return self._run is not None and self._run.task is not None and not self._run.task.done()

    async def start(self, simulation: SimulationConfig) -> Simulator:
        """(Re)start with ``simulation`` (its ``start_ms`` should be now).

        The profiles are sent first, then the reference lists, then the events.
        """
        async with self._lock:
            return await self._start(simulation)

    async def _start(self, simulation: SimulationConfig) -> Simulator:
        await self._stop()
        simulator = Simulator(simulation)
        for profile in simulator.profiles():
            await self._publisher.submit(
                Outgoing(
                    kind="profile",
                    record_name="UserProfile",
                    topic=self._config.topics.user_profiles,
                    key=profile["userId"],
                    event_id=f"{profile['userId']}@{profile['updatedAt']}",
                    event_ts=profile["updatedAt"],
                    record=profile,
                )
            )
        await self._publisher.submit(reference_message(simulator, self._config))
        run = _Run(simulator, _now_ms())
        run.task = asyncio.create_task(self._produce(run), name="mock-trading")
        self._run = run
        return simulator

    async def stop(self) -> bool:
        """Stop producing; True if it was running."""
        async with self._lock:
            return await self._stop()

    async def _stop(self) -> bool:
        run, self._run = self._run, None
        if run is None or run.task is None:
            return False
        was_running = not run.task.done()
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.task
        run.simulator.abandon()
        run.release_labels(self._audit, stopping=True)
        return was_running

    async def _produce(self, run: _Run) -> None:
        try:
            for count, event in enumerate(run.simulator.events(), 1):
                run.unsent = event
                delay_ms = event.timestamp - _now_ms()
                if delay_ms > 0:
                    await asyncio.sleep(delay_ms / 1000)
                elif count % 200 == 0:
                    # Behind schedule (a high rate): still let the web server and acks run.
                    await asyncio.sleep(0)
                await self._publisher.submit(event_message(event, self._config))
                run.unsent, run.sent_until = None, event.timestamp
                run.release_labels(self._audit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("mock trading stopped")

    def snapshot(self) -> dict[str, Any]:
        """Whether it runs, with what, and the simulation's counts."""
        run = self._run
        if run is None:
            return {"running": False, "lastError": self.last_error}
        simulation = run.simulator.config
        return {
            "running": self.running,
            "startedAt": run.started_at,
            "seed": simulation.seed,
            "rateMs": simulation.rate_ms,
            "requestedTradesPerSecond": round(1000 / simulation.rate_ms, 3),
            "users": simulation.users,
            "symbols": list(simulation.symbols),
            "exchanges": list(simulation.exchanges),
            "scenarios": list(simulation.scenarios),
            "scenarioEvery": simulation.scenario_every,
            "quietMs": simulation.quiet_ms,
            "simulation": run.simulator.stats.to_dict(),
            "lastError": self.last_error,
        }


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason, "field": None, "reason": exc.text}, status=exc.status)


def _guard_body(error: str, field: str, reason: str) -> dict[str, Any]:
    return {"error": error, "field": field, "reason": reason}


def _auth(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        admin = request.path.startswith("/api/admin/")
        if not token and admin and not is_loopback(request.remote):
            return web.json_response(
                {
                    "error": "forbidden",
                    "field": None,
                    "reason": "without RISKENGINE_PRODUCER_ADMIN_TOKEN admin endpoints answer only localhost",
                },
                status=403,
            )
        guarded = admin or request.path == "/api/trades/produce"
        if token and guarded and not token_matches(request.headers.get("Authorization"), token):
            return web.json_response(
                {
                    "error": "unauthorized",
                    "field": "Authorization",
                    "reason": "a valid bearer token is required",
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="riskengine-producer"'},
            )
        return await handler(request)

    return check


class ProducerApp:
    """The request handlers and the resources they share."""

    def __init__(self, config: ProducerConfig, connect: Connector) -> None:
        self.config = config
        self._connect = connect
        self.audit = AuditLog(config.audit_db)
        self._publisher: Publisher | None = None
        self._trading: MockTrading | None = None

    @property
    def publisher(self) -> Publisher:
        """The publisher (available once the app started)."""
        assert self._publisher is not None, "the app has not started"
        return self._publisher

    @property
    def trading(self) -> MockTrading:
        """The mock-trading runner (available once the app started)."""
        assert self._trading is not None, "the app has not started"
        return self._trading

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: connect, recover unacknowledged messages; then shut down in order."""
        self.audit.open()
        transport, catalog = await self._connect(self.config)
        self._publisher = Publisher(transport, catalog, self.audit, self.config.topics.trades)
        self._trading = MockTrading(self.config, self._publisher, self.audit)
        await self._publisher.recover()
        try:
            yield
        finally:
            await self._trading.stop()
            await self._publisher.close()
            await transport.close()
            await asyncio.to_thread(self.audit.close)

    # -- /api/trades/produce ---------------------------------------------------------------

    async def produce(self, request: web.Request) -> web.Response:
        """Validate, complete and produce one trade."""
        # Read and parsed here rather than with request.json(): its unknown charset (LookupError) and
        # deep nesting (RecursionError) would be 500s.
        charset = request.charset or "utf-8"
        try:
            text = (await request.read()).decode(charset)
        except LookupError:
            return _bad_request("Content-Type", f"unknown charset {charset!r}")
        except UnicodeDecodeError as exc:
            return _bad_request("body", f"not {charset}: {exc.reason} at byte {exc.start}")
        try:
            body = json.loads(text)
        except ValueError as exc:
            return _bad_request("body", f"not JSON: {exc}")
        except RecursionError:
            return _bad_request("body", "nested too deeply (a trade is one flat JSON object)")
        if not isinstance(body, dict):
            return _bad_request("body", f"must be a JSON object, got {type(body).__name__}")
        unknown = [name for name in body if name not in TRADE_FIELDS]
        if unknown:
            return _bad_request(
                str(unknown[0]), f"unknown field (CryptoTrade fields: {', '.join(TRADE_FIELDS)})"
            )
        for name in ("userId", "symbol", "side", "quantity", "price"):
            if body.get(name) is None:
                return _bad_request(name, "missing")
        record = self._complete(body)
        try:
            trade = parse_trade(record)
        except InvalidTrade as exc:
            return _bad_request(exc.field, exc.reason)
        record = trade.to_record()
        message = Outgoing(
            kind="trade",
            record_name="CryptoTrade",
            topic=self.config.topics.trades,
            key=trade.user_id,
            event_id=trade.trade_id,
            event_ts=trade.timestamp,
            record=record,
            order_id=trade.order_id,
        )
        try:
            task = await self.publisher.submit(message)
        except ValueError as exc:
            return _bad_request("body", str(exc))
        try:
            delivery = await asyncio.wait_for(asyncio.shield(task), self.config.ack_timeout_s)
        except TimeoutError:
            return web.json_response(
                {
                    "status": "pending",
                    "tradeId": trade.trade_id,
                    "trade": record,
                    "detail": "not acknowledged yet; retried until it is (see /api/admin/audit?tradeId=)",
                },
                status=202,
            )
        return web.json_response(
            {
                "status": "acked",
                "tradeId": trade.trade_id,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "trade": record,
            }
        )

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        record = {name: None for name in TRADE_FIELDS} | body
        if record["tradeId"] is None:
            record["tradeId"] = f"T-api-{uuid.uuid4().hex[:20]}"
        if record["timestamp"] is None:
            record["timestamp"] = _now_ms()
        quantity, price = record["quantity"], record["price"]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (quantity, price))
        if record["notional"] is None and numbers:
            # An int beyond float's range (400 digits) times a float is an OverflowError; left
            # without a notional, parse_trade names the quantity or price at fault.
            with contextlib.suppress(OverflowError):
                record["notional"] = round(quantity * price, 8)
        if record["customerId"] is None:
            simulator, user_id = self.trading.simulator, record["userId"]
            account = None
            # Only a string can be an account's id (a list would not even hash); parse_trade names it.
            if simulator is not None and isinstance(user_id, str):
                account = simulator.population.by_id.get(user_id)
            record["customerId"] = user_id if account is None else account.customer_id
        if record["exchange"] is None:
            record["exchange"] = self.config.defaults.exchanges[0]
        if record["orderType"] is None:
            record["orderType"] = "MARKET"
        return record

    # -- /api/admin ------------------------------------------------------------------------

    async def start(self, request: web.Request) -> web.Response:
        """Start mock trading with the query's parameters over the configured defaults."""
        query = request.query
        defaults = self.config.defaults
        try:
            changes: dict[str, Any] = {}
            if "rateMs" in query:
                changes["rate_ms"] = _number(query, "rateMs", float)
            if "users" in query:
                changes["users"] = _number(query, "users", int)
            if "scenarioEvery" in query:
                changes["scenario_every"] = _number(query, "scenarioEvery", int)
            if "quietMs" in query:
                changes["quiet_ms"] = _number(query, "quietMs", int)
            if "scenarios" in query:
                try:
                    changes["scenarios"] = parse_scenarios(query["scenarios"])
                except ValueError as exc:
                    raise InvalidConfig("scenarios", str(exc)) from None
            for name in ("symbols", "exchanges"):
                if name in query:
                    changes[name] = tuple(p.strip() for p in query[name].split(",") if p.strip())
            seed = _number(query, "seed", int) if "seed" in query else defaults.seed
            if seed == 0:
                seed = random.SystemRandom().randrange(1, 2**31)
            simulation = replace(defaults, **changes).simulation(seed=seed, start_ms=_now_ms())
            restarted = self.trading.running
            simulator = await self.trading.start(simulation)
        except InvalidConfig as exc:
            return _bad_request(_PARAMETERS.get(exc.field, exc.field), exc.reason, "invalid parameter")
        except PopulationError as exc:
            return _bad_request("users", str(exc), "invalid parameter")
        body = {
            "status": "restarted" if restarted else "started",
            "profiles": len(simulator.population.users),
        }
        return web.json_response(body | self.trading.snapshot())

    async def stop(self, request: web.Request) -> web.Response:
        """Stop mock trading."""
        was_running = await self.trading.stop()
        return web.json_response({"status": "stopped" if was_running else "not running"})

    async def stats(self, request: web.Request) -> web.Response:
        """Producer, simulation and audit counters."""
        body = {
            "mockTrading": self.trading.snapshot(),
            "produced": self.publisher.snapshot(),
            "audit": {
                "rowsByStatus": await self.audit.status_counts(),
                "writeErrors": self.audit.write_errors,
            },
        }
        return web.json_response(body)

    async def audit_rows(self, request: web.Request) -> web.Response:
        """Audit rows of one trade, or by event id / status / scenario id."""
        query = request.query
        try:
            limit = _number(query, "limit", int) if "limit" in query else 100
        except InvalidConfig as exc:
            return _bad_request("limit", exc.reason)
        if not 1 <= limit <= 10_000:
            return _bad_request("limit", "must be between 1 and 10,000")
        if "tradeId" in query:
            rows = await self.audit.trade(query["tradeId"])
            if not rows:
                return web.json_response(
                    {"error": "not found", "field": "tradeId", "reason": "no such trade in the audit trail"},
                    status=404,
                )
            return web.json_response({"tradeId": query["tradeId"], "events": rows})
        status = query.get("status")
        if status is not None and status not in ("pending", "acked", "failed"):
            return _bad_request("status", "must be pending, acked or failed")
        rows = await self.audit.find(query.get("eventId"), status, query.get("scenarioId"), limit)
        return web.json_response({"events": rows})

    async def health(self, request: web.Request) -> web.Response:
        """Liveness."""
        return web.json_response({"status": "ok"})


def _number(query: Any, name: str, kind: type[int] | type[float]) -> Any:
    text = query[name]
    try:
        return kind(text)
    except ValueError:
        raise InvalidConfig(
            name, f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


#: The app's :class:`ProducerApp` (for embedding and tests).
PRODUCER = web.AppKey("producer", ProducerApp)


def create_app(config: ProducerConfig, connect: Connector, allowed_hosts: str = "") -> web.Application:
    """The aiohttp application; ``connect`` yields the transport and schema cache at start-up.

    ``allowed_hosts``: extra host names the server answers to (``RISKENGINE_WEB_ALLOWED_HOSTS``).
    """
    producer = ProducerApp(config, connect)
    names = allowed_names(config.host, allowed_hosts)
    app = web.Application(
        middlewares=[_json_errors, guard(names, body=_guard_body), _auth(config.admin_token.get())]
    )
    app[PRODUCER] = producer
    app.cleanup_ctx.append(producer.lifecycle)
    app.router.add_post("/api/trades/produce", producer.produce)
    app.router.add_post("/api/admin/mock-trading/start", producer.start)
    app.router.add_post("/api/admin/mock-trading/stop", producer.stop)
    app.router.add_get("/api/admin/stats", producer.stats)
    app.router.add_get("/api/admin/audit", producer.audit_rows)
    app.router.add_get("/health", producer.health)
    return app


def kafka_connector(settings: Settings) -> Connector:
    """Create the topics, register the contracts, and start an idempotent Kafka producer."""

    async def connect(config: ProducerConfig) -> tuple[Transport, SchemaCache]:
        topics = config.topics
        names = (topics.trades, topics.orders, topics.user_profiles, topics.risk_reference)
        compacted = (topics.user_profiles, topics.risk_reference)
        specs = [
            replace(spec, configs=_configs(spec.name, compacted, spec.configs))
            for spec in topic_specs(settings, names)
        ]
        await ensure_topics(settings, specs)
        catalog = SchemaCatalog.for_settings(settings)
        await catalog.register(["CryptoTrade", "OrderEvent", "UserProfile", RECORD_NAME])
        transport = KafkaTransport(settings)
        await transport.start()
        return transport, catalog

    return connect


def _configs(name: str, compacted: tuple[str, ...], configs: dict[str, str]) -> dict[str, str]:
    # topic_specs knows the engine's own names; a renamed reference-data topic must be compacted too.
    return configs | {"cleanup.policy": "compact"} if name in compacted else configs


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``riskengine-producer``."""
    parser = argparse.ArgumentParser(
        prog="riskengine-producer",
        description="The trade simulator service: the seed's REST API, scenario injection, audit trail. "
        "Settings come from RISKENGINE_* variables; the options below override them.",
    )
    parser.add_argument("--host", help="listen address (RISKENGINE_PRODUCER_HOST)")
    parser.add_argument("--port", type=int, help="listen port (RISKENGINE_PRODUCER_PORT)")
    parser.add_argument("--audit-db", type=Path, help="SQLite audit trail (RISKENGINE_PRODUCER_AUDIT_DB)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        config = ProducerConfig.from_settings(settings)
    except SettingsError as exc:
        print(f"riskengine-producer: bad setting: {exc}", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in (("host", args.host), ("port", args.port), ("audit_db", args.audit_db))
        if v is not None
    }
    config = replace(config, **overrides)
    configure_logging(settings)
    web.run_app(
        create_app(config, kafka_connector(settings), settings.web_allowed_hosts),
        host=config.host,
        port=config.port,
        print=log.info,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
