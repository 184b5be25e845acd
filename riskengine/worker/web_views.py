"""The worker's web views, on Faust's web server (``--web-port``, bound to RISKENGINE_WORKER_WEB_HOST).

Every request first passes :func:`riskengine.web_guard.guard` (installed in
:func:`riskengine.worker.app.app_options`): its Host must name a worker (421), an Origin must be a
worker's (403), query parameters are at most 256 characters (400), a POST must be
``Content-Type: application/json`` (415). Faust's own ``/table`` and ``/router`` pages are off:
the ``/users`` views below are the table inspection, decoded.

- ``GET /users/{userId}``: the user's detection state, decoded. Routed with ``topic_route`` on the trades
  topic, so any worker answers: the request is forwarded to the worker owning the user's partition
  (the same murmur2 partitioner the producer uses for the userId key). 404 for an unknown user.
- ``GET /users/{userId}/orders?limit=``: the user's open orders and recent order activity (the
  kept orders' events, newest first, at most ``limit``, default 50), and the last inconsistent
  order events. Routed the same way. Both ``/users`` views need the admin token when one is set
  (they show an account's state; 401 otherwise).
- ``GET /tables``: the worker's tables and the partitions this worker holds of each (active and
  standby). ``GET /tables/{name}?key=``: one key of the market (``market-state``, key: a symbol)
  or account-pair (``pair-state``) table, decoded, from the partitions this worker holds (404
  naming them when it holds none with the key: ask the other workers). Not routed: Faust routes
  by a topic's key, and these tables are keyed by a repartition topic's. The user table is read
  through ``/users``. Both need the admin token when one is set.
- ``GET /alerts?user=&pattern=&severity=&since=&limit=``: recent alerts raised by this worker,
  newest first (``since`` is an event time in epoch ms). 400 with a message for a bad parameter.
- ``GET /stats``: the detection core's build (compiled with mypyc or interpreted, and why),
  throughput, consumer lag per partition (trades, and order events), trades late for the market, the
  market and pair agents' counters (released, late, re-delivered, held), dead letters by reason,
  alerts by pattern, order events in, inconsistent and late ones, active rules version, rejected
  rules messages, active reference version (with the sizes of its lists), rejected and ignored
  reference messages.
- ``GET /health``: 200 once table recovery is complete and no rebalance is in progress, else 503.
- ``GET /metrics``: the same figures and the latency, batch-size and event-time-lag histograms in
  the Prometheus text format (:mod:`riskengine.worker.metrics`).
- ``POST /admin/alerts/clear``: empty this worker's recent-alerts buffer. Admin endpoints (those
  that change anything) require ``Authorization: Bearer <RISKENGINE_WORKER_ADMIN_TOKEN>`` when a
  token is configured (401 otherwise, a malformed header included). Without a token they answer
  only requests from the loopback interface (403 otherwise): a worker's web server is reachable by
  its peers and the dashboard, none of which should clear alerts or start snapshots unasked.
- ``POST /admin/snapshot``: snapshot this worker's table partitions now (see
  :mod:`riskengine.worker.snapshots`); returns the manifests written. 409 while tables recover, 502 when
  the snapshot store fails.

Every response is JSON except /metrics. An error answer carries no exception text (the log has it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import faust
from faust.web import View

from riskengine.core import BUILD as CORE_BUILD
from riskengine.core import PatternType, Severity, StateFormatError, decode_state
from riskengine.core.account_pairs import PairState, decode_pair_state
from riskengine.core.market import MarketState, decode_market_state
from riskengine.errors import CoreError, WorkerError
from riskengine.web_guard import is_loopback, token_matches
from riskengine.worker.agents.user_agent import UserAgent
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import held_partitions, recovering
from riskengine.worker.metrics import CONTENT_TYPE, Metrics, exposition
from riskengine.worker.snapshots import SnapshotError, Snapshotter
from riskengine.worker.tables.user_state import (
    MARKET_TABLE_NAME,
    ORDERS,
    PAIR_TABLE_NAME,
    TRADES,
    EnvelopeError,
    StateTable,
    decode_envelope,
)

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
#: Longest userId accepted (the contract's id limit).
MAX_USER_ID = 128


class BadRequest(WorkerError, ValueError):
    """A request parameter is invalid; the message is returned with status 400."""


def _int_param(query: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        # Shortened: the answer need not echo a 5,000-character value back.
        shown = raw if len(raw) <= 32 else raw[:32] + "..."
        raise BadRequest(f"{name} must be an integer, got {shown!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def alert_filter(query: Any) -> tuple[str | None, str | None, str | None, int | None, int]:
    """(user, pattern, severity, since, limit) from the query string; BadRequest names a bad one."""
    user = query.get("user") or None
    pattern = query.get("pattern") or None
    if pattern is not None and pattern not in PatternType.__members__:
        raise BadRequest(f"pattern must be one of {', '.join(PatternType.__members__)}, got {pattern!r}")
    severity = query.get("severity") or None
    if severity is not None and severity not in Severity.__members__:
        raise BadRequest(f"severity must be one of {', '.join(Severity.__members__)}, got {severity!r}")
    since = _int_param(query, "since", None, 0, 10**14)
    limit = _int_param(query, "limit", 100, 1, MAX_LIMIT)
    assert limit is not None
    return user, pattern, severity, since, limit


def state_document(user_id: str, raw: bytes) -> dict[str, Any]:
    """A JSON view of one user's table value."""
    envelope = decode_envelope(raw)
    state = decode_state(envelope.state)
    book = state.orders
    return {
        "userId": user_id,
        "lastApplied": {
            "partition": envelope.partition,
            "tradesOffset": envelope.offsets[TRADES],
            "ordersOffset": envelope.offsets[ORDERS],
        },
        "pendingOutputs": len(envelope.pending),
        "watermark": state.watermark,
        "tradeCount": state.count,
        "notionalMean": state.mean,
        "notionalVariance": state.variance,
        "recentTrades": len(state.recent),
        "dayNotional": state.day_total,
        "symbols": {symbol: stats.price for symbol, stats in state.symbols.items()},
        "lastAlerts": {f"{pattern.value}:{key}": at for (pattern, key), at in state.fired.items()},
        "openOrders": len(book.open_orders()),
        "keptOrders": len(book.orders),
        "orderIssues": len(book.issues),
    }


def orders_document(user_id: str, raw: bytes, limit: int) -> dict[str, Any]:
    """A user's open orders, recent order activity (newest first) and inconsistent order events."""
    book = decode_state(decode_envelope(raw).state).orders
    activity = sorted(
        ((order.symbol, entry) for order in book.orders.values() for entry in order.activity()),
        key=lambda pair: (pair[1].timestamp, pair[1].event_id),
        reverse=True,
    )[:limit]
    return {
        "userId": user_id,
        "openOrders": [
            {
                "orderId": order.order_id,
                "symbol": order.symbol,
                "side": order.side.value,
                "price": order.price,
                "quantity": order.quantity,
                "remainingQuantity": order.remaining,
                "filledQuantity": order.filled,
                "placedAt": order.placed_at,
                "events": len(order.event_ids),
            }
            for order in book.open_orders()
        ],
        "recentActivity": [{"symbol": symbol, **entry.to_record()} for symbol, entry in activity],
        "issues": [
            {"timestamp": at, "kind": kind, "eventId": event_id} for at, kind, event_id in book.issue_list()
        ],
    }


def market_document(state: MarketState) -> dict[str, Any]:
    """A JSON view of one symbol's market state (its figures, not its ledger of execution ids)."""
    return {
        "lastApplied": {"timestamp": state.last_time, "tradeId": state.last_id},
        "executions": state.executions,
        "twins": state.twins,
        "contextAsOf": state.context_as_of,
        "bars": [
            {
                "start": bar.start,
                "high": bar.high,
                "low": bar.low,
                "close": bar.close,
                "notional": bar.notional,
            }
            for bar in state.bars
        ],
        "openBuckets": len(state.buckets),
        "volume": {
            "mean": state.volume_mean,
            "stdDev": math.sqrt(max(state.volume_var, 0.0)),
            "bars": state.volume_bars,
        },
        "accountHours": len(state.accounts),
        "pump": None
        if state.pump is None
        else {
            "lowTime": state.pump.low_time,
            "low": state.pump.low,
            "peakTime": state.pump.peak_time,
            "peak": state.pump.peak,
        },
        "lastAlerts": dict(state.fired),
    }


def pair_document(state: PairState) -> dict[str, Any]:
    """A JSON view of one owner pair's state: open legs and round trips per symbol."""
    return {
        "lastApplied": {"timestamp": state.last_time, "tradeId": state.last_id},
        "openLegs": {
            symbol: [
                {"timestamp": t, "buyingOwner": o, "quantity": q, "tradeId": i, "buyer": b, "seller": s}
                for t, o, q, i, b, s in legs
            ]
            for symbol, legs in state.legs.items()
        },
        "roundTrips": {
            symbol: [
                {
                    "completedAt": t,
                    "firstLeg": first,
                    "backLeg": back,
                    "firstQuantity": q1,
                    "backQuantity": q2,
                    "buyer": b,
                    "seller": s,
                }
                for t, first, back, q1, q2, b, s in trips
            ]
            for symbol, trips in state.trips.items()
        },
        "lastAlerts": dict(state.fired),
    }


#: Table name -> how its values are shown (the keyed agents' tables; users have /users).
DOCUMENTS = {
    MARKET_TABLE_NAME: lambda raw: market_document(decode_market_state(raw)),
    PAIR_TABLE_NAME: lambda raw: pair_document(decode_pair_state(raw)),
}


def table_lookup(table: StateTable, key: bytes) -> tuple[int, bytes] | None:
    """(partition, value) of ``key`` in a partition this worker holds, or None.

    Only held partitions are read: opening one through the table would create a database for a
    partition this worker does not own.
    """
    for partition, db in sorted(held_partitions(table.table).items()):
        raw = db.get(key)
        if raw is not None:
            return partition, bytes(raw)
    return None


def consumer_lag(app: faust.App, positions: dict[tuple[str, int], int], topic: str) -> dict[str, int]:
    """Partition -> events of ``topic`` on the broker this worker has not processed yet."""
    lag: dict[str, int] = {}
    try:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == topic]
        for tp in sorted(assigned):
            highwater = app.consumer.highwater(tp)
            position = positions.get((topic, tp.partition), -1) + 1
            if highwater is not None:
                lag[str(tp.partition)] = max(0, int(highwater) - position)
    except (AttributeError, RuntimeError, KeyError, AssertionError):
        return {}
    return lag


def stats_document(app: faust.App, context: WorkerContext) -> dict[str, Any]:
    """Throughput, lag, dead letters, alerts, rules and reference lists of this worker."""
    metrics = context.metrics
    rules = context.reference.rules
    lists = context.reference.lists
    active = lists.current.data
    return {
        "uptimeSeconds": round(time.time() - metrics.started, 1),
        "coreBuild": {"compiled": CORE_BUILD.compiled, "detail": CORE_BUILD.detail},
        "tradesIn": metrics.trades_in,
        "analyzed": metrics.analyzed,
        "throughputPerSecond": metrics.throughput(),
        "consumerLag": consumer_lag(app, metrics.positions, context.names.trades),
        "orderEventsIn": metrics.order_events_in,
        "orderEventsLag": consumer_lag(app, metrics.positions, context.names.orders),
        "orderIssues": dict(metrics.order_issues),
        "lateOrderEvents": metrics.late_order_events,
        "heldEvents": metrics.held_events,
        "rebalances": metrics.rebalances,
        "fencedBatches": metrics.fenced_batches,
        "lateForMarket": metrics.late_for_market,
        "marketContextStale": metrics.market_context_stale,
        "marketContextVersions": context.reference.markets.contexts.count(),
        "marketAgent": dict(metrics.keyed["market"]),
        "pairAgent": dict(metrics.keyed["pair"]),
        "deadLetters": dict(metrics.dead_letters_by_reason),
        "deadLettersTotal": sum(metrics.dead_letters_by_reason.values()),
        "alertsByPattern": dict(metrics.alerts_by_pattern),
        "redelivered": metrics.redelivered,
        "resentOutputs": metrics.resent,
        "invalidProfiles": metrics.invalid_profiles,
        "rulesVersion": rules.current.version,
        "rulesRejected": rules.rejected,
        "rulesIgnoredStale": rules.stale,
        "referenceVersion": lists.current.version,
        "referenceRejected": lists.rejected,
        "referenceIgnoredStale": lists.stale,
        "referenceLastError": lists.last_error,
        "referenceLists": {
            "sanctionedUsers": len(active.sanctioned_users),
            "sanctionedCountries": len(active.sanctioned_countries),
            "restrictedCountries": len(active.restricted_countries),
            "markets": len(active.markets),
        },
    }


def prometheus_text(stats: dict[str, Any], metrics: Metrics | None = None) -> str:
    """The /stats figures (:func:`stats_document`), with ``metrics``' histograms, in the Prometheus
    text format (written by prometheus_client, see :mod:`riskengine.worker.metrics`)."""
    return exposition(lambda: stats, None if metrics is None else metrics.histograms)


def authorized(context: WorkerContext, request: Any) -> bool:
    """May ``request`` use an admin endpoint: it carries the token, or none is set and it is local."""
    token = context.settings.worker_admin_token
    if not token:
        return is_loopback(request.remote)
    return token_matches(request.headers.get("Authorization"), token.get())


def may_inspect(context: WorkerContext, request: Any) -> bool:
    """May ``request`` read an account's state: no token is set, or it carries the token."""
    token = context.settings.worker_admin_token
    return not token or token_matches(request.headers.get("Authorization"), token.get())


def _denied(web: Any, context: WorkerContext) -> Any:
    if context.settings.worker_admin_token:
        return web.json({"error": "a valid bearer token is required"}, status=401)
    return web.json(
        {"error": "without RISKENGINE_WORKER_ADMIN_TOKEN admin endpoints answer only localhost"}, status=403
    )


def _unreadable(web: Any, user_id: str, exc: Exception) -> Any:
    log.error("state of %r is unreadable: %s", user_id, exc)
    return web.json({"error": f"state of {user_id!r} is unreadable (see the worker's log)"}, status=500)


def register_views(
    app: faust.App,
    context: WorkerContext,
    users: UserAgent,
    snapshots: Snapshotter,
    state_tables: Mapping[str, StateTable] | None = None,
) -> None:
    """Add the worker's pages to ``app``; ``state_tables``: the keyed agents' tables by name."""
    recent_alerts = context.metrics.recent_alerts
    table = users.user_state.table
    keyed = {name: t for name, t in (state_tables or {}).items() if name in DOCUMENTS}

    def user_value(user_id: str) -> bytes | None:
        # Changed since it was last written: the table has it as it was then.
        key = user_id.encode()
        live = users.analysis.live_value(key)
        return live if live is not None else table.get(key)

    @app.page("/tables")
    async def tables(web: Any, request: Any) -> Any:
        if not may_inspect(context, request):
            return _denied(web, context)
        listed: list[dict[str, Any]] = [{"name": table.name, "help": table.help, "view": "/users/{userId}"}]
        for name, state_table in keyed.items():
            listed.append(
                {
                    "name": name,
                    "help": state_table.table.help,
                    "view": f"/tables/{name}?key=",
                    "heldPartitions": sorted(held_partitions(state_table.table)),
                }
            )
        return web.json({"tables": listed})

    @app.page("/tables/{name}")
    async def table_key(web: Any, request: Any, name: str) -> Any:
        if not may_inspect(context, request):
            return _denied(web, context)
        state_table = keyed.get(name)
        if state_table is None:
            return web.json({"error": f"no such table here; one of {', '.join(keyed)}"}, status=404)
        key = request.query.get("key") or ""
        if not key or len(key) > MAX_USER_ID:
            return web.json({"error": "key must be 1 to 128 characters"}, status=400)
        found = table_lookup(state_table, key.encode())
        if found is None:
            held = sorted(held_partitions(state_table.table))
            return web.json(
                {"error": f"{key!r} is not in this worker's partitions {held}; ask the other workers"},
                status=404,
            )
        partition, raw = found
        try:
            document = DOCUMENTS[name](raw)
        except CoreError as exc:
            return _unreadable(web, key, exc)
        return web.json({"table": name, "key": key, "partition": partition, "state": document})

    @app.page("/users/{user_id}")
    @app.topic_route(topic=users.trades, match_info="user_id")
    async def user_state(web: Any, request: Any, user_id: str) -> Any:
        if not may_inspect(context, request):
            return _denied(web, context)
        if not user_id or len(user_id) > MAX_USER_ID:
            return web.json({"error": "userId must be 1 to 128 characters"}, status=400)
        raw = user_value(user_id)
        if raw is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        try:
            return web.json(state_document(user_id, raw))
        except (EnvelopeError, StateFormatError) as exc:
            return _unreadable(web, user_id, exc)

    @app.page("/users/{user_id}/orders")
    @app.topic_route(topic=users.trades, match_info="user_id")
    async def user_orders(web: Any, request: Any, user_id: str) -> Any:
        if not may_inspect(context, request):
            return _denied(web, context)
        if not user_id or len(user_id) > MAX_USER_ID:
            return web.json({"error": "userId must be 1 to 128 characters"}, status=400)
        try:
            limit = _int_param(request.query, "limit", 50, 1, MAX_LIMIT)
        except BadRequest as exc:
            return web.json({"error": str(exc)}, status=400)
        assert limit is not None
        raw = user_value(user_id)
        if raw is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        try:
            return web.json(orders_document(user_id, raw, limit))
        except (EnvelopeError, StateFormatError) as exc:
            return _unreadable(web, user_id, exc)

    @app.page("/alerts")
    async def alerts(web: Any, request: Any) -> Any:
        try:
            user, pattern, severity, since, limit = alert_filter(request.query)
        except BadRequest as exc:
            return web.json({"error": str(exc)}, status=400)
        found = []
        for alert in reversed(recent_alerts):
            if user is not None and alert["userId"] != user:
                continue
            if pattern is not None and alert["patternType"] != pattern:
                continue
            if severity is not None and alert["severity"] != severity:
                continue
            if since is not None and alert["timestamp"] < since:
                continue
            found.append(alert)
            if len(found) >= limit:
                break
        return web.json({"alerts": found, "count": len(found)})

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        return web.json(stats_document(app, context))

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        if recovering(app):
            return web.json({"status": "recovering"}, status=503)
        return web.json(
            {
                "status": "ready",
                "rulesVersion": context.reference.rules.current.version,
                "referenceVersion": context.reference.lists.current.version,
            }
        )

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        text = prometheus_text(stats_document(app, context), context.metrics)
        return web.text(text, content_type=CONTENT_TYPE)

    @app.page("/admin/alerts/clear")
    class ClearAlerts(View):
        async def post(self, request: Any) -> Any:
            if not authorized(context, request):
                return _denied(self, context)
            cleared = len(recent_alerts)
            recent_alerts.clear()
            return self.json({"cleared": cleared})

    @app.page("/admin/snapshot")
    class Snapshot(View):
        async def post(self, request: Any) -> Any:
            if not authorized(context, request):
                return _denied(self, context)
            try:
                manifests = await snapshots.snapshot()
            except SnapshotError as exc:
                return self.json({"error": str(exc)}, status=409)
            except Exception:  # The store (S3) failed: say so instead of a bare 500; details to the log.
                log.exception("snapshot store failed")
                return self.json({"error": "snapshot store failed (see the worker's log)"}, status=502)
            return self.json({"snapshots": [m.to_dict() for m in manifests]})
