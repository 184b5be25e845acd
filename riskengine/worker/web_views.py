"""The worker's web views, on Faust's web server (``--web-port``, bound to RISKENGINE_WORKER_WEB_HOST).

- ``GET /users/{userId}``: the user's detection state. Routed with ``topic_route`` on the trades
  topic, so any worker answers: the request is forwarded to the worker owning the user's partition
  (the same murmur2 partitioner the producer uses for the userId key). 404 for an unknown user.
- ``GET /users/{userId}/orders?limit=``: the user's open orders and recent order activity (the
  kept orders' events, newest first, at most ``limit``, default 50), and the last inconsistent
  order events. Routed the same way.
- ``GET /alerts?user=&pattern=&severity=&since=&limit=``: recent alerts raised by this worker,
  newest first (``since`` is an event time in epoch ms). 400 with a message for a bad parameter.
- ``GET /stats``: throughput, consumer lag per partition (trades, and order events), trades late for
  the market, the market and pair agents' counters (released, late, re-delivered, held), dead letters by
  reason, alerts by pattern, order events in, inconsistent and late ones, active rules version,
  rejected rules messages, active reference version (with the sizes of its lists), rejected and
  ignored reference messages.
- ``GET /health``: 200 once table recovery is complete and no rebalance is in progress, else 503.
- ``GET /metrics``: the same figures and the latency, batch-size and event-time-lag histograms in
  the Prometheus text format (:mod:`riskengine.worker.metrics`).
- ``POST /admin/alerts/clear``: empty this worker's recent-alerts buffer. Admin endpoints (those
  that change anything) require ``Authorization: Bearer <RISKENGINE_WORKER_ADMIN_TOKEN>`` when a
  token is configured (401 otherwise).
- ``POST /admin/snapshot``: snapshot this worker's table partitions now (see
  :mod:`riskengine.worker.snapshots`); returns the manifests written. 409 while tables recover, 502 when
  the snapshot store fails.

Every response is JSON except /metrics.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import faust
from faust.web import View

from riskengine.core import PatternType, Severity, StateFormatError, decode_state
from riskengine.errors import WorkerError
from riskengine.worker.agents.user_agent import UserAgent
from riskengine.worker.context import WorkerContext
from riskengine.worker.faust_compat import recovering
from riskengine.worker.metrics import CONTENT_TYPE, Metrics, exposition
from riskengine.worker.snapshots import SnapshotError, Snapshotter
from riskengine.worker.tables.user_state import ORDERS, TRADES, EnvelopeError, decode_envelope

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
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
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
    """True when no admin token is configured or the request carries it as a bearer token."""
    token = context.settings.worker_admin_token
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token.get())


def register_views(app: faust.App, context: WorkerContext, users: UserAgent, snapshots: Snapshotter) -> None:
    """Add the worker's pages to ``app``."""
    recent_alerts = context.metrics.recent_alerts
    table = users.user_state.table

    @app.page("/users/{user_id}")
    @app.topic_route(topic=users.trades, match_info="user_id")
    async def user_state(web: Any, request: Any, user_id: str) -> Any:
        if not user_id or len(user_id) > MAX_USER_ID:
            return web.json({"error": "userId must be 1 to 128 characters"}, status=400)
        raw = table.get(user_id.encode())
        if raw is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        try:
            return web.json(state_document(user_id, raw))
        except (EnvelopeError, StateFormatError) as exc:
            return web.json({"error": f"state of {user_id!r} is unreadable: {exc}"}, status=500)

    @app.page("/users/{user_id}/orders")
    @app.topic_route(topic=users.trades, match_info="user_id")
    async def user_orders(web: Any, request: Any, user_id: str) -> Any:
        if not user_id or len(user_id) > MAX_USER_ID:
            return web.json({"error": "userId must be 1 to 128 characters"}, status=400)
        try:
            limit = _int_param(request.query, "limit", 50, 1, MAX_LIMIT)
        except BadRequest as exc:
            return web.json({"error": str(exc)}, status=400)
        assert limit is not None
        raw = table.get(user_id.encode())
        if raw is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        try:
            return web.json(orders_document(user_id, raw, limit))
        except (EnvelopeError, StateFormatError) as exc:
            return web.json({"error": f"state of {user_id!r} is unreadable: {exc}"}, status=500)

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
                return self.json({"error": "a valid bearer token is required"}, status=401)
            cleared = len(recent_alerts)
            recent_alerts.clear()
            return self.json({"cleared": cleared})

    @app.page("/admin/snapshot")
    class Snapshot(View):
        async def post(self, request: Any) -> Any:
            if not authorized(context, request):
                return self.json({"error": "a valid bearer token is required"}, status=401)
            try:
                manifests = await snapshots.snapshot()
            except SnapshotError as exc:
                return self.json({"error": str(exc)}, status=409)
            except Exception as exc:  # The store (S3) failed: report it instead of a bare 500.
                return self.json({"error": f"snapshot store failed: {exc!r}"}, status=502)
            return self.json({"snapshots": [m.to_dict() for m in manifests]})
