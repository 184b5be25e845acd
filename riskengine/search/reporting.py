"""Reporting views over Elasticsearch: alert search, a user's risk history, top risky users, counts,
and a symbol's market (price and volume over time with the symbol's alerts).

The Kafka Connect sink indexes ``risk-alerts`` and ``risk-analyzed-trades`` into indices named like
the topics (``RISKENGINE_WORKER_TOPIC_SUFFIX`` appended), with the mappings of
:mod:`riskengine.search.index_templates`. This module has three layers:

- parsing: ``parse_*`` turn a query string into a frozen, typed request, or raise
  :class:`ParameterError` naming the parameter (unknown names too, so a typo is not ignored);
- query bodies and result shaping: pure functions from a request to an Elasticsearch search body,
  and from Elasticsearch's answer to the JSON the views return (unit-tested without services);
- :class:`Reporting` runs them on an ``AsyncElasticsearch`` client, and
  :func:`create_reporting_app` serves them as a small aiohttp app (the dashboard mounts it under
  ``/api/reporting``): ``GET /alerts``, ``/users/{userId}/history``, ``/top-users``, ``/counts``,
  ``/trades``, ``/market``. A bad parameter answers 400 ``{"error", "parameter"}``; Elasticsearch
  unreachable answers 503.

Alerts carry a ``priority`` (0-100; null in alerts from engines before it existed): ``GET /alerts``
sorts by it on ``sort=priority`` (highest first, then newest; null last), keeps alerts of at least
``minPriority`` (which leaves out those without a priority), and counts the matching alerts per
priority band (:data:`PRIORITY_BANDS`).

Market-level alerts (PUMP_AND_DUMP, PRICE_CRASH, cross-account ROUND_TRIP_WASH, ...) are RiskAlerts
without a ``userId`` and with a ``symbol``: ``scope=market`` selects them, ``scope=account`` the
alerts of one account, ``scope=all`` both.

Times are epoch milliseconds or ISO 8601 (``2026-01-31T12:00:00Z``; no zone means UTC).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import elastic_transport
from aiohttp import web
from elasticsearch import ApiError, AsyncElasticsearch

from riskengine.contracts.topics import topic_names
from riskengine.core import PatternType, RiskLevel, Severity
from riskengine.errors import SearchError
from riskengine.settings import Settings

#: Longest user id and trade id accepted (the contracts' id limit).
MAX_ID = 128
#: Page size limit of the alert search, and Elasticsearch's default ``max_result_window``.
MAX_PAGE_SIZE = 100
MAX_RESULT_WINDOW = 10_000
#: Most analyzed trades and alerts a user's history returns.
MAX_HISTORY_TRADES = 1000
MAX_HISTORY_ALERTS = 100
MAX_TOP_USERS = 100
#: Most evidence trades looked up at once (an alert's evidence is bounded by the core's windows).
MAX_TRADE_IDS = 200
#: Most buckets a counts-over-time view may ask for.
MAX_BUCKETS = 500
#: Most whole intervals an automatically chosen interval divides the window into.
AUTO_BUCKETS = 60
MAX_QUERY_TEXT = 200
#: The window of top-users and counts when ``since`` is not given.
DEFAULT_WINDOW_MS = 24 * 3600 * 1000
#: Latest time accepted (year 5138): catches seconds-vs-milliseconds mix-ups and overflow.
MAX_EPOCH_MS = 10**14
#: Longest echo of a bad value in an error message (a hostile 5,000-digit value is not sent back whole).
MAX_ECHO = 40
#: Widest window of a market view: a quarter, so even its daily buckets stay readable (and cheap).
MAX_MARKET_SPAN_MS = 92 * 86_400_000
#: Most whole intervals an automatically chosen market interval divides the window into: a price
#: line needs more points than a bar chart of counts.
MARKET_BUCKETS = 120
#: Most alerts a market view returns, and the accounts it ranks by traded notional.
MAX_MARKET_ALERTS = 100
MARKET_ACCOUNTS = 10
#: An alert's priority is 0 to this (the RiskAlert contract).
MAX_PRIORITY = 100
#: Priority bands an alert search counts, highest first: (name, lowest priority in the band). The
#: dashboard colours them alike (red, amber, grey). Alerts without a priority count as ``none``.
PRIORITY_BANDS: tuple[tuple[str, int], ...] = (("80-100", 80), ("50-79", 50), ("0-49", 0))
NO_PRIORITY = "none"

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_INTERVAL = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
#: Intervals an automatic choice picks from, shortest first.
_AUTO_INTERVALS = ("1s", "5s", "10s", "30s", "1m", "5m", "10m", "15m", "30m", "1h", "3h", "6h", "12h", "1d")
_ENUM_ORDER = {name: index for index, name in enumerate(Severity.__members__)}

TopBy = Literal["max", "sum", "alerts"]
#: The order of an alert search: ``time`` (newest first) or ``priority`` (highest first, then newest).
AlertSort = Literal["time", "priority"]
CountSource = Literal["alerts", "trades"]
#: Which alerts: ``market`` (no userId: a symbol's market-level alerts), ``account`` (one account's),
#: or ``all``.
Scope = Literal["all", "market", "account"]
_TOP_BY: dict[str, TopBy] = {"max": "max", "sum": "sum", "alerts": "alerts"}
_SOURCES: dict[str, CountSource] = {"alerts": "alerts", "trades": "trades"}
_SCOPES: dict[str, Scope] = {"all": "all", "market": "market", "account": "account"}
_ALERT_SORTS: dict[str, AlertSort] = {"time": "time", "priority": "priority"}
#: A symbol as the contracts write it: BASE/QUOTE, one slash, no blanks (``BTC/USDT``).
_SYMBOL = re.compile(r"[^\s/]+/[^\s/]+")
#: ``split`` of a counts view -> the field per source it is a terms aggregation on.
SPLIT_FIELDS: dict[CountSource, dict[str, str]] = {
    "alerts": {"pattern": "patternType", "severity": "severity"},
    "trades": {"pattern": "triggeredPatterns", "riskLevel": "finalRiskLevel"},
}


class ParameterError(SearchError, ValueError):
    """A request parameter is missing, unknown or invalid; ``parameter`` names it (HTTP 400)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class SearchUnavailable(SearchError):
    """Elasticsearch could not be reached or could not answer (HTTP 503)."""


# --- parsing ---------------------------------------------------------------------------------


def now_ms() -> int:
    """The wall clock in epoch milliseconds (the default end of a window)."""
    return int(time.time() * 1000)


def _check_known(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in params:
        if name not in allowed:
            raise ParameterError(name, f"unknown parameter {name!r}; expected one of {', '.join(allowed)}")


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    return value or None


def _shown(raw: str) -> str:
    """``raw`` quoted for an error message, cut short when it is long."""
    return repr(raw if len(raw) <= MAX_ECHO else raw[: MAX_ECHO - 3] + "...")


def parse_time(name: str, raw: str) -> int:
    """Epoch milliseconds from ``raw``: an integer of epoch ms, or an ISO 8601 date or date-time."""
    text = raw.strip()
    if re.fullmatch(r"-?[0-9]+", text):
        # More digits than any accepted time: refused before int(), which raises on 4,300+ digits.
        if len(text.lstrip("-")) > len(str(MAX_EPOCH_MS)):
            raise ParameterError(
                name, f"{name} must be between 0 and {MAX_EPOCH_MS} epoch ms, got a {len(text)}-digit number"
            )
        value = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ParameterError(
                name, f"{name} must be epoch milliseconds or an ISO 8601 time, got {_shown(raw)}"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        value = int(parsed.timestamp() * 1000)
    if not 0 <= value <= MAX_EPOCH_MS:
        raise ParameterError(name, f"{name} must be between 0 and {MAX_EPOCH_MS} epoch ms, got {value}")
    return value


def _optional_time(params: Mapping[str, str], name: str) -> int | None:
    raw = _text(params, name)
    return None if raw is None else parse_time(name, raw)


def _window(params: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(since, until) as given, either may be missing; ParameterError when since is after until."""
    since = _optional_time(params, "since")
    until = _optional_time(params, "until")
    if since is not None and until is not None and since > until:
        raise ParameterError("since", f"since ({since}) is after until ({until})")
    return since, until


def _default_window(params: Mapping[str, str], now: int) -> tuple[int, int]:
    """(since, until) where a missing ``until`` is ``now`` and a missing ``since`` is a day before until."""
    since, until = _window(params)
    until = now if until is None else until
    since = max(0, until - DEFAULT_WINDOW_MS) if since is None else since
    if since > until:
        raise ParameterError("since", f"since ({since}) is after until ({until})")
    return since, until


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _text(params, name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", raw):
        # Also refuses a 5,000-digit value before int() would raise on it.
        raise ParameterError(name, f"{name} must be an integer between {low} and {high}, got {_shown(raw)}")
    value = int(raw)
    if not low <= value <= high:
        raise ParameterError(name, f"{name} must be between {low} and {high}, got {value}")
    return value


def _optional_int(params: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """``name`` as an integer in [low, high], or None when it is not given (or blank)."""
    return None if _text(params, name) is None else _int(params, name, low, low, high)


def _symbols(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated enum symbols (any of them matches); empty means no filter."""
    raw = _text(params, name)
    if raw is None:
        return ()
    values = tuple(dict.fromkeys(part.strip().upper() for part in raw.split(",") if part.strip()))
    for value in values:
        if value not in allowed:
            raise ParameterError(name, f"{name} must be one of {', '.join(allowed)}, got {_shown(value)}")
    return values


def _scope(params: Mapping[str, str], default: Scope) -> Scope:
    raw = _text(params, "scope") or default
    scope = _SCOPES.get(raw)
    if scope is None:
        raise ParameterError("scope", f"scope must be all, market or account, got {_shown(raw)}")
    return scope


def check_symbol(symbol: str, name: str = "symbol") -> str:
    """``symbol`` if it is BASE/QUOTE (``BTC/USDT``; 3 to 128 printable characters, no blanks), else
    ParameterError.

    Symbols are exact keywords in the indices, so case is kept: ``btc/usdt`` is another symbol.
    """
    if not 3 <= len(symbol) <= MAX_ID or not symbol.isprintable() or _SYMBOL.fullmatch(symbol) is None:
        raise ParameterError(name, f"{name} must be BASE/QUOTE such as BTC/USDT, got {_shown(symbol)}")
    return symbol


def check_user_id(user: str, name: str = "userId") -> str:
    """``user`` if it is a valid user id (1 to 128 characters), else ParameterError."""
    if not user or len(user) > MAX_ID:
        raise ParameterError(name, f"{name} must be 1 to {MAX_ID} characters")
    return user


def parse_interval(raw: str) -> int:
    """Milliseconds of a fixed interval such as ``30s``, ``5m``, ``1h``, ``1d``."""
    match = _INTERVAL.fullmatch(raw.strip())
    if match is None:
        raise ParameterError("interval", f"interval must look like 30s, 5m, 1h or 1d, got {_shown(raw)}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def auto_interval(span_ms: int, most: int = AUTO_BUCKETS) -> str:
    """The shortest interval of a fixed ladder that covers ``span_ms`` in at most ``most`` buckets."""
    for interval in _AUTO_INTERVALS:
        if span_ms // parse_interval(interval) <= most:
            return interval
    return _AUTO_INTERVALS[-1]


def _interval(params: Mapping[str, str], since: int, until: int, most: int) -> tuple[str, int]:
    """(interval, its ms): ``interval`` as given, else the automatic one; at most 500 buckets."""
    raw = _text(params, "interval")
    interval = auto_interval(until - since, most) if raw is None else raw
    interval_ms = parse_interval(interval)
    buckets = (until - since) // interval_ms + 1
    if buckets > MAX_BUCKETS:
        raise ParameterError(
            "interval", f"interval {interval} gives {buckets} buckets over the window; at most {MAX_BUCKETS}"
        )
    return interval, interval_ms


@dataclass(frozen=True)
class AlertSearch:
    """``GET /alerts``: filters (all optional, combined with AND), newest or highest priority
    first, paged."""

    user: str | None = None
    symbol: str | None = None
    scope: Scope = "all"
    patterns: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    since: int | None = None
    until: int | None = None
    q: str | None = None
    size: int = 20
    page: int = 1
    sort: AlertSort = "time"
    #: Alerts with at least this priority (alerts without one are left out); None: no filter.
    min_priority: int | None = None


def parse_alert_search(params: Mapping[str, str]) -> AlertSearch:
    """``user``, ``symbol``, ``scope`` (all, market or account), ``pattern`` and ``severity``
    (comma-separated: any of), ``since``, ``until``, ``q`` (words in the description or recommended
    action), ``minPriority`` (0-100), ``sort`` (time or priority), ``size`` (1-100), ``page``
    (from 1)."""
    _check_known(
        params,
        (
            "user",
            "symbol",
            "scope",
            "pattern",
            "severity",
            "since",
            "until",
            "q",
            "minPriority",
            "sort",
            "size",
            "page",
        ),
    )
    user = _text(params, "user")
    if user is not None:
        check_user_id(user, "user")
    symbol = _text(params, "symbol")
    if symbol is not None:
        check_symbol(symbol)
    q = _text(params, "q")
    if q is not None and len(q) > MAX_QUERY_TEXT:
        raise ParameterError("q", f"q must be at most {MAX_QUERY_TEXT} characters")
    since, until = _window(params)
    size = _int(params, "size", 20, 1, MAX_PAGE_SIZE)
    page = _int(params, "page", 1, 1, MAX_RESULT_WINDOW)
    if page * size > MAX_RESULT_WINDOW:
        raise ParameterError("page", f"page x size must be at most {MAX_RESULT_WINDOW}; narrow the search")
    raw_sort = _text(params, "sort") or "time"
    sort = _ALERT_SORTS.get(raw_sort)
    if sort is None:
        raise ParameterError("sort", f"sort must be time or priority, got {_shown(raw_sort)}")
    return AlertSearch(
        user=user,
        symbol=symbol,
        scope=_scope(params, "all"),
        patterns=_symbols(params, "pattern", tuple(PatternType.__members__)),
        severities=_symbols(params, "severity", tuple(Severity.__members__)),
        since=since,
        until=until,
        q=q,
        size=size,
        page=page,
        sort=sort,
        min_priority=_optional_int(params, "minPriority", 0, MAX_PRIORITY),
    )


@dataclass(frozen=True)
class UserHistory:
    """``GET /users/{userId}/history``: the user's most recent analyzed trades and alerts."""

    user: str
    since: int | None = None
    until: int | None = None
    size: int = 200
    alerts: int = 20


def parse_user_history(user: str, params: Mapping[str, str]) -> UserHistory:
    """``since``, ``until`` (optional), ``size`` (trades, 1-1000), ``alerts`` (0-100)."""
    _check_known(params, ("since", "until", "size", "alerts"))
    since, until = _window(params)
    return UserHistory(
        user=check_user_id(user),
        since=since,
        until=until,
        size=_int(params, "size", 200, 1, MAX_HISTORY_TRADES),
        alerts=_int(params, "alerts", 20, 0, MAX_HISTORY_ALERTS),
    )


@dataclass(frozen=True)
class TopUsers:
    """``GET /top-users``: users ranked by max or summed riskScore, or by alert count, in a window."""

    since: int
    until: int
    by: TopBy = "max"
    size: int = 10


def parse_top_users(params: Mapping[str, str], now: int) -> TopUsers:
    """``by`` (max, sum or alerts), ``size`` (1-100), ``since``/``until`` (default: the last 24 h)."""
    _check_known(params, ("since", "until", "by", "size"))
    since, until = _default_window(params, now)
    raw = _text(params, "by") or "max"
    by = _TOP_BY.get(raw)
    if by is None:
        raise ParameterError("by", f"by must be max, sum or alerts, got {raw!r}")
    return TopUsers(since=since, until=until, by=by, size=_int(params, "size", 10, 1, MAX_TOP_USERS))


@dataclass(frozen=True)
class Counts:
    """``GET /counts``: alerts or analyzed trades per interval, optionally split by a field."""

    since: int
    until: int
    interval: str
    interval_ms: int
    source: CountSource = "alerts"
    split: str | None = None


def parse_counts(params: Mapping[str, str], now: int) -> Counts:
    """``source`` (alerts or trades), ``split`` (alerts: pattern, severity; trades: pattern,
    riskLevel), ``interval`` (30s, 5m, ...; default: at most 60 buckets), ``since``/``until``
    (default: the last 24 h); at most 500 buckets."""
    _check_known(params, ("since", "until", "interval", "source", "split"))
    raw_source = _text(params, "source") or "alerts"
    source = _SOURCES.get(raw_source)
    if source is None:
        raise ParameterError("source", f"source must be alerts or trades, got {raw_source!r}")
    split = _text(params, "split")
    if split is not None and split not in SPLIT_FIELDS[source]:
        raise ParameterError(
            "split", f"split of {source} must be one of {', '.join(SPLIT_FIELDS[source])}, got {split!r}"
        )
    since, until = _default_window(params, now)
    interval, interval_ms = _interval(params, since, until, AUTO_BUCKETS)
    return Counts(
        since=since,
        until=until,
        interval=interval,
        interval_ms=interval_ms,
        source=source,
        split=split,
    )


@dataclass(frozen=True)
class MarketView:
    """``GET /market``: one symbol's price and volume per interval, and its alerts, in a window."""

    symbol: str
    since: int
    until: int
    interval: str
    interval_ms: int
    scope: Scope = "market"
    alerts: int = 50

    def alert_search(self) -> AlertSearch:
        """The alerts of the view as an alert search (the same filters ``GET /alerts`` uses)."""
        return AlertSearch(
            symbol=self.symbol, scope=self.scope, since=self.since, until=self.until, size=self.alerts
        )


def parse_market(params: Mapping[str, str], now: int) -> MarketView:
    """``symbol`` (required, BASE/QUOTE), ``since``/``until`` (default: the last 24 h; until after
    since, at most 92 days apart), ``interval`` (default: at most 120 buckets; at most 500),
    ``scope`` (market, account or all alerts of the symbol; default market), ``alerts`` (0-100)."""
    _check_known(params, ("symbol", "since", "until", "interval", "scope", "alerts"))
    raw = _text(params, "symbol")
    if raw is None:
        raise ParameterError("symbol", "symbol is required: BASE/QUOTE such as BTC/USDT")
    symbol = check_symbol(raw)
    since, until = _default_window(params, now)
    if since == until:
        raise ParameterError("until", f"until ({until}) must be after since ({since})")
    if until - since > MAX_MARKET_SPAN_MS:
        raise ParameterError(
            "since",
            f"the window is {(until - since) // 86_400_000} days; a market view spans at most "
            f"{MAX_MARKET_SPAN_MS // 86_400_000} days",
        )
    interval, interval_ms = _interval(params, since, until, MARKET_BUCKETS)
    return MarketView(
        symbol=symbol,
        since=since,
        until=until,
        interval=interval,
        interval_ms=interval_ms,
        scope=_scope(params, "market"),
        alerts=_int(params, "alerts", 50, 0, MAX_MARKET_ALERTS),
    )


def parse_trade_ids(params: Mapping[str, str]) -> tuple[str, ...]:
    """``ids``: comma-separated trade ids (1 to 200), e.g. an alert's evidence."""
    _check_known(params, ("ids",))
    raw = _text(params, "ids")
    if raw is None:
        raise ParameterError("ids", "ids is required: comma-separated trade ids")
    ids = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not 1 <= len(ids) <= MAX_TRADE_IDS:
        raise ParameterError("ids", f"ids must hold 1 to {MAX_TRADE_IDS} trade ids, got {len(ids)}")
    if any(len(i) > MAX_ID for i in ids):
        raise ParameterError("ids", f"a trade id is longer than {MAX_ID} characters")
    return ids


# --- query bodies ----------------------------------------------------------------------------


def _range(field: str, since: int | None, until: int | None) -> list[dict[str, Any]]:
    if since is None and until is None:
        return []
    bounds: dict[str, Any] = {"format": "epoch_millis"}
    if since is not None:
        bounds["gte"] = since
    if until is not None:
        bounds["lte"] = until
    return [{"range": {field: bounds}}]


def _bool(filters: list[dict[str, Any]], must: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    query: dict[str, Any] = {"filter": filters}
    if must:
        query["must"] = must
    return {"bool": query}


def alert_search_body(search: AlertSearch) -> dict[str, Any]:
    """The search body of :class:`AlertSearch` (alerts index)."""
    filters: list[dict[str, Any]] = []
    if search.user is not None:
        filters.append({"term": {"userId": search.user}})
    if search.symbol is not None:
        filters.append({"term": {"symbol": search.symbol}})
    if search.scope == "market":
        # A market-level alert has userId null, which the index holds as no value at all.
        filters.append({"bool": {"must_not": [{"exists": {"field": "userId"}}]}})
    elif search.scope == "account":
        filters.append({"exists": {"field": "userId"}})
    if search.patterns:
        filters.append({"terms": {"patternType": list(search.patterns)}})
    if search.severities:
        filters.append({"terms": {"severity": list(search.severities)}})
    filters += _range("timestamp", search.since, search.until)
    if search.min_priority is not None:
        # An alert without a priority has no value in the index: a range never matches it.
        filters.append({"range": {"priority": {"gte": search.min_priority}}})
    must = []
    if search.q is not None:
        # simple_query_string never fails on user syntax (a stray quote is taken literally).
        must.append(
            {
                "simple_query_string": {
                    "query": search.q,
                    "fields": ["description", "recommendedAction"],
                    "default_operator": "and",
                }
            }
        )
    return {
        "query": _bool(filters, must),
        "sort": copy.deepcopy(_ALERT_ORDER[search.sort]),
        "from": (search.page - 1) * search.size,
        "size": search.size,
        "track_total_hits": True,
        "aggs": copy.deepcopy(_PRIORITY_AGGS),
    }


#: Sort clauses of an alert search. ``missing: _last`` puts alerts without a priority after every
#: prioritized one; ``unmapped_type`` lets an index created before the field existed be sorted too
#: (all its alerts count as without a priority) instead of failing the search.
_ALERT_ORDER: dict[AlertSort, list[dict[str, Any]]] = {
    "time": [{"timestamp": "desc"}, {"alertId": "asc"}],
    "priority": [
        {"priority": {"order": "desc", "missing": "_last", "unmapped_type": "integer"}},
        {"timestamp": "desc"},
        {"alertId": "asc"},
    ],
}


def _priority_ranges() -> list[dict[str, Any]]:
    ranges = []
    upper: int | None = None
    for name, low in PRIORITY_BANDS:
        bounds: dict[str, Any] = {"key": name, "from": low}
        if upper is not None:
            bounds["to"] = upper  # exclusive
        ranges.append(bounds)
        upper = low
    return ranges


#: The matching alerts per priority band, and those without a priority (cheap: no hits).
_PRIORITY_AGGS: dict[str, Any] = {
    "priorityBands": {"range": {"field": "priority", "keyed": True, "ranges": _priority_ranges()}},
    "noPriority": {"missing": {"field": "priority"}},
}


#: Fields of an analyzed trade a history point needs (the rest stays in Elasticsearch).
_HISTORY_SOURCE = [
    "originalTrade.tradeId",
    "originalTrade.symbol",
    "originalTrade.side",
    "originalTrade.notional",
    "riskScore",
    "finalRiskLevel",
    "triggeredPatterns",
    "eventTimestamp",
]


def history_trades_body(history: UserHistory) -> dict[str, Any]:
    """The user's most recent analyzed trades (newest first) with a summary over the window."""
    return {
        "query": _bool(
            [
                {"term": {"originalTrade.userId": history.user}},
                *_range("eventTimestamp", history.since, history.until),
            ]
        ),
        "sort": [{"eventTimestamp": "desc"}, {"originalTrade.tradeId": "asc"}],
        "size": history.size,
        "_source": _HISTORY_SOURCE,
        "track_total_hits": True,
        "aggs": {
            "maxScore": {"max": {"field": "riskScore"}},
            "avgScore": {"avg": {"field": "riskScore"}},
            "levels": {"terms": {"field": "finalRiskLevel", "size": len(RiskLevel)}},
        },
    }


def history_alerts_body(history: UserHistory) -> dict[str, Any]:
    """The user's most recent alerts in the window (newest first)."""
    return {
        "query": _bool(
            [{"term": {"userId": history.user}}, *_range("timestamp", history.since, history.until)]
        ),
        "sort": [{"timestamp": "desc"}, {"alertId": "asc"}],
        "size": history.alerts,
        "track_total_hits": True,
    }


def top_users_body(top: TopUsers) -> dict[str, Any]:
    """A terms aggregation on the user id, ordered by the ranking metric (no hits)."""
    enum_size = len(PatternType)
    if top.by == "alerts":
        return {
            "query": _bool(_range("timestamp", top.since, top.until)),
            "size": 0,
            "aggs": {
                "users": {
                    "terms": {
                        "field": "userId",
                        "size": top.size,
                        "order": [{"_count": "desc"}, {"_key": "asc"}],
                    },
                    "aggs": {
                        "patterns": {"terms": {"field": "patternType", "size": enum_size}},
                        "severities": {"terms": {"field": "severity", "size": len(Severity)}},
                        **copy.deepcopy(_PRIORITY_AGGS),
                    },
                }
            },
        }
    return {
        "query": _bool(_range("eventTimestamp", top.since, top.until)),
        "size": 0,
        "aggs": {
            "users": {
                "terms": {
                    "field": "originalTrade.userId",
                    "size": top.size,
                    # Ranking on a sub-aggregation is exact per shard; a larger shard_size keeps it
                    # right when an index has several shards.
                    "shard_size": max(100, top.size * 10),
                    "order": [{f"{top.by}Score": "desc"}, {"_key": "asc"}],
                },
                "aggs": {
                    "maxScore": {"max": {"field": "riskScore"}},
                    "sumScore": {"sum": {"field": "riskScore"}},
                    "avgScore": {"avg": {"field": "riskScore"}},
                    "levels": {"terms": {"field": "finalRiskLevel", "size": len(RiskLevel)}},
                },
            }
        },
    }


def counts_body(counts: Counts) -> dict[str, Any]:
    """A date histogram over the window, every bucket present (zeros too), optionally split."""
    field = "timestamp" if counts.source == "alerts" else "eventTimestamp"
    histogram: dict[str, Any] = {
        "date_histogram": {
            "field": field,
            "fixed_interval": counts.interval,
            "min_doc_count": 0,
            "extended_bounds": {"min": counts.since, "max": counts.until},
        }
    }
    if counts.split is not None:
        histogram["aggs"] = {
            "split": {"terms": {"field": SPLIT_FIELDS[counts.source][counts.split], "size": len(PatternType)}}
        }
    return {
        "query": _bool(_range(field, counts.since, counts.until)),
        "size": 0,
        "aggs": {"overTime": histogram},
    }


#: Per-bucket and whole-window figures of a market view (prices and sizes of the analyzed trades).
_MARKET_METRICS: dict[str, Any] = {
    "volume": {"sum": {"field": "originalTrade.notional"}},
    "quantity": {"sum": {"field": "originalTrade.quantity"}},
    "low": {"min": {"field": "originalTrade.price"}},
    "high": {"max": {"field": "originalTrade.price"}},
}


def market_trades_body(view: MarketView) -> dict[str, Any]:
    """The symbol's trades per interval (every bucket present) and over the window, and the
    accounts that traded the most notional in it (no hits)."""
    return {
        "query": _bool(
            [
                {"term": {"originalTrade.symbol": view.symbol}},
                *_range("eventTimestamp", view.since, view.until),
            ]
        ),
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "overTime": {
                "date_histogram": {
                    "field": "eventTimestamp",
                    "fixed_interval": view.interval,
                    "min_doc_count": 0,
                    "extended_bounds": {"min": view.since, "max": view.until},
                },
                "aggs": _MARKET_METRICS,
            },
            **_MARKET_METRICS,
            "accounts": {
                "terms": {
                    "field": "originalTrade.userId",
                    "size": MARKET_ACCOUNTS,
                    "shard_size": MARKET_ACCOUNTS * 10,
                    "order": [{"volume": "desc"}, {"_key": "asc"}],
                },
                "aggs": {"volume": _MARKET_METRICS["volume"]},
            },
        },
    }


def market_alerts_body(view: MarketView) -> dict[str, Any]:
    """The symbol's alerts in the window (newest first), counted by pattern."""
    body = alert_search_body(view.alert_search())
    body["aggs"] = {"patterns": {"terms": {"field": "patternType", "size": len(PatternType)}}}
    return body


def trades_by_id_body(ids: tuple[str, ...]) -> dict[str, Any]:
    """The analyzed trades with the given trade ids."""
    return {"query": {"terms": {"originalTrade.tradeId": list(ids)}}, "size": len(ids)}


# --- result shaping --------------------------------------------------------------------------


def _sources(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [hit["_source"] for hit in response.get("hits", {}).get("hits", [])]


def _total(response: Mapping[str, Any]) -> int:
    total = response.get("hits", {}).get("total", 0)
    return int(total["value"] if isinstance(total, dict) else total)


def _terms(aggregation: Mapping[str, Any] | None) -> dict[str, int]:
    if not aggregation:
        return {}
    return {str(b["key"]): int(b["doc_count"]) for b in aggregation.get("buckets", [])}


def _metric(aggregations: Mapping[str, Any], name: str) -> float | None:
    value = aggregations.get(name, {}).get("value")
    return None if value is None else float(value)


def _zero_buckets(since: int, until: int, interval_ms: int) -> list[int]:
    """The bucket times Elasticsearch gives an empty window: multiples of the interval since the epoch."""
    return list(range(since - since % interval_ms, until + 1, interval_ms))


def priority_bands(aggregations: Mapping[str, Any] | None) -> dict[str, int]:
    """Alerts per priority band (:data:`PRIORITY_BANDS`, highest first, then ``none``); zeros when
    nothing was aggregated (no index yet)."""
    aggregations = aggregations or {}
    buckets = aggregations.get("priorityBands", {}).get("buckets", {})
    bands = {name: int(buckets.get(name, {}).get("doc_count", 0)) for name, _low in PRIORITY_BANDS}
    bands[NO_PRIORITY] = int(aggregations.get("noPriority", {}).get("doc_count", 0))
    return bands


def alert_search_result(search: AlertSearch, response: Mapping[str, Any]) -> dict[str, Any]:
    """``{"alerts", "total", "page", "size", "sort", "minPriority", "byPriority"}``; ``byPriority``
    counts every matching alert (not only this page's) per priority band."""
    return {
        "alerts": _sources(response),
        "total": _total(response),
        "page": search.page,
        "size": search.size,
        "sort": search.sort,
        "minPriority": search.min_priority,
        "byPriority": priority_bands(response.get("aggregations")),
    }


def history_result(
    history: UserHistory, trades: Mapping[str, Any], alerts: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The riskScore / riskLevel series (oldest first), a summary, and the recent alerts."""
    points = []
    for source in reversed(_sources(trades)):
        trade = source.get("originalTrade", {})
        points.append(
            {
                "tradeId": trade.get("tradeId"),
                "timestamp": source.get("eventTimestamp"),
                "symbol": trade.get("symbol"),
                "side": trade.get("side"),
                "notional": trade.get("notional"),
                "riskScore": source.get("riskScore"),
                "riskLevel": source.get("finalRiskLevel"),
                "triggeredPatterns": source.get("triggeredPatterns", []),
            }
        )
    aggregations = trades.get("aggregations", {})
    return {
        "userId": history.user,
        "since": history.since,
        "until": history.until,
        "trades": points,
        "summary": {
            "trades": _total(trades),
            "maxRiskScore": _metric(aggregations, "maxScore"),
            "avgRiskScore": _metric(aggregations, "avgScore"),
            "byLevel": _terms(aggregations.get("levels")),
        },
        "alerts": [] if alerts is None else _sources(alerts),
        "alertsTotal": 0 if alerts is None else _total(alerts),
    }


def top_users_result(top: TopUsers, response: Mapping[str, Any]) -> dict[str, Any]:
    """Rows ranked by ``value`` (the ``by`` metric), with the other figures of each user."""
    rows = []
    for bucket in response.get("aggregations", {}).get("users", {}).get("buckets", []):
        if top.by == "alerts":
            rows.append(
                {
                    "userId": bucket["key"],
                    "value": bucket["doc_count"],
                    "alerts": bucket["doc_count"],
                    "byPattern": _terms(bucket.get("patterns")),
                    "bySeverity": _terms(bucket.get("severities")),
                    "byPriority": priority_bands(bucket),
                }
            )
        else:
            rows.append(
                {
                    "userId": bucket["key"],
                    "value": _metric(bucket, f"{top.by}Score"),
                    "trades": bucket["doc_count"],
                    "maxRiskScore": _metric(bucket, "maxScore"),
                    "sumRiskScore": _metric(bucket, "sumScore"),
                    "avgRiskScore": _metric(bucket, "avgScore"),
                    "byLevel": _terms(bucket.get("levels")),
                }
            )
    return {"by": top.by, "since": top.since, "until": top.until, "users": rows}


def _series_order(name: str) -> tuple[int, str]:
    # Levels and severities read LOW -> CRITICAL; patterns alphabetically after them.
    return (_ENUM_ORDER.get(name, len(_ENUM_ORDER)), name)


def counts_result(counts: Counts, response: Mapping[str, Any]) -> dict[str, Any]:
    """``buckets`` of ``{"time", "total", "counts"}`` and the ``series`` names present."""
    buckets: list[dict[str, Any]] = []
    names: set[str] = set()
    aggregation = response.get("aggregations", {}).get("overTime")
    if aggregation is None:
        # No index yet (nothing indexed): the same zero buckets Elasticsearch gives an empty index,
        # aligned like its fixed intervals (multiples of the interval since the epoch).
        buckets = [
            {"time": key, "total": 0, "counts": {}}
            for key in _zero_buckets(counts.since, counts.until, counts.interval_ms)
        ]
    else:
        for bucket in aggregation.get("buckets", []):
            split = _terms(bucket.get("split"))
            names.update(split)
            buckets.append({"time": int(bucket["key"]), "total": int(bucket["doc_count"]), "counts": split})
    return {
        "source": counts.source,
        "split": counts.split,
        "interval": counts.interval,
        "intervalMs": counts.interval_ms,
        "since": counts.since,
        "until": counts.until,
        "series": sorted(names, key=_series_order),
        "buckets": buckets,
        "total": sum(b["total"] for b in buckets),
    }


def _market_figures(aggregations: Mapping[str, Any], trades: int) -> dict[str, Any]:
    """Trades, notional volume, quantity, low and high price, and the volume-weighted price."""
    volume = _metric(aggregations, "volume") or 0.0
    quantity = _metric(aggregations, "quantity") or 0.0
    return {
        "trades": trades,
        "volume": volume,
        "quantity": quantity,
        "price": volume / quantity if trades and quantity > 0 else None,
        "low": _metric(aggregations, "low") if trades else None,
        "high": _metric(aggregations, "high") if trades else None,
    }


def market_result(
    view: MarketView, trades: Mapping[str, Any], alerts: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``buckets`` (``time`` and the figures of :func:`_market_figures`, oldest first, empty ones
    too), the window's ``summary``, the top ``accounts`` by notional, and the symbol's ``alerts``."""
    aggregations = trades.get("aggregations")
    if aggregations is None:  # no index yet: the zero buckets of an empty window
        buckets = [
            {"time": key, **_market_figures({}, 0)}
            for key in _zero_buckets(view.since, view.until, view.interval_ms)
        ]
        summary, accounts = _market_figures({}, 0), []
    else:
        buckets = [
            {"time": int(b["key"]), **_market_figures(b, int(b["doc_count"]))}
            for b in aggregations.get("overTime", {}).get("buckets", [])
        ]
        summary = _market_figures(aggregations, _total(trades))
        accounts = [
            {"userId": b["key"], "trades": int(b["doc_count"]), "volume": _metric(b, "volume") or 0.0}
            for b in aggregations.get("accounts", {}).get("buckets", [])
        ]
    return {
        "symbol": view.symbol,
        "since": view.since,
        "until": view.until,
        "interval": view.interval,
        "intervalMs": view.interval_ms,
        "scope": view.scope,
        "buckets": buckets,
        "summary": summary,
        "accounts": accounts,
        "alerts": [] if alerts is None else _sources(alerts),
        "alertsTotal": 0 if alerts is None else _total(alerts),
        "alertsByPattern": {} if alerts is None else _terms(alerts.get("aggregations", {}).get("patterns")),
    }


def trades_result(ids: tuple[str, ...], response: Mapping[str, Any]) -> dict[str, Any]:
    """The analyzed trades in the order of ``ids``, and the ids not (yet) indexed."""
    found = {s.get("originalTrade", {}).get("tradeId"): s for s in _sources(response)}
    return {"trades": [found[i] for i in ids if i in found], "missing": [i for i in ids if i not in found]}


# --- Elasticsearch ---------------------------------------------------------------------------


def elasticsearch_client(settings: Settings) -> AsyncElasticsearch:
    """A client for ``RISKENGINE_ELASTICSEARCH_URL`` with its basic auth, if any."""
    auth = None
    if settings.elasticsearch_username:
        auth = (settings.elasticsearch_username, settings.elasticsearch_password.get())
    # One retry and a short timeout: a view should answer 503 in seconds, not hang on a dead node.
    return AsyncElasticsearch(settings.elasticsearch_url, basic_auth=auth, request_timeout=10, max_retries=1)


@dataclass(frozen=True)
class Indices:
    """The Elasticsearch indices the views read, named like their topics (see ``kafka.topic_names``)."""

    alerts: str
    trades: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Indices:
        """The sink's index names: the topic names with ``RISKENGINE_WORKER_TOPIC_SUFFIX``."""
        names = topic_names(settings)
        return cls(alerts=names.alerts, trades=names.analyzed_trades)


class Reporting:
    """The views, run on an Elasticsearch client; errors become :class:`SearchUnavailable`."""

    def __init__(self, es: AsyncElasticsearch, indices: Indices, url: str = "") -> None:
        self.es = es
        self.indices = indices
        self._url = url

    async def _search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            # A missing index (nothing indexed yet) is an empty answer, not an error.
            response = await self.es.search(
                index=index, body=body, ignore_unavailable=True, allow_no_indices=True
            )
        except elastic_transport.TransportError as exc:  # connection refused, timeout, TLS
            raise SearchUnavailable(
                f"Elasticsearch at {self._url or 'its URL'} is unreachable: {exc}"
            ) from exc
        except ApiError as exc:
            if exc.status_code >= 500:
                raise SearchUnavailable(f"Elasticsearch cannot answer: {exc}") from exc
            raise
        return dict(response.body)

    async def search_alerts(self, search: AlertSearch) -> dict[str, Any]:
        """Alerts matching ``search``, newest first."""
        return alert_search_result(search, await self._search(self.indices.alerts, alert_search_body(search)))

    async def user_history(self, history: UserHistory) -> dict[str, Any]:
        """The user's riskScore / riskLevel series, summary and recent alerts."""
        trades = await self._search(self.indices.trades, history_trades_body(history))
        alerts = None
        if history.alerts:
            alerts = await self._search(self.indices.alerts, history_alerts_body(history))
        return history_result(history, trades, alerts)

    async def top_users(self, top: TopUsers) -> dict[str, Any]:
        """The riskiest users of the window."""
        index = self.indices.alerts if top.by == "alerts" else self.indices.trades
        return top_users_result(top, await self._search(index, top_users_body(top)))

    async def counts(self, counts: Counts) -> dict[str, Any]:
        """Alerts or analyzed trades per interval."""
        index = self.indices.alerts if counts.source == "alerts" else self.indices.trades
        return counts_result(counts, await self._search(index, counts_body(counts)))

    async def trades(self, ids: tuple[str, ...]) -> dict[str, Any]:
        """Analyzed trades by trade id (an alert's evidence)."""
        return trades_result(ids, await self._search(self.indices.trades, trades_by_id_body(ids)))

    async def market(self, view: MarketView) -> dict[str, Any]:
        """A symbol's price and volume per interval and its alerts."""
        trades = await self._search(self.indices.trades, market_trades_body(view))
        alerts = None
        if view.alerts:
            alerts = await self._search(self.indices.alerts, market_alerts_body(view))
        return market_result(view, trades, alerts)


# --- HTTP ------------------------------------------------------------------------------------

REPORTING = web.AppKey("reporting", Reporting)


def _error(status: int, message: str, parameter: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """ParameterError -> 400, SearchUnavailable -> 503, a query Elasticsearch refused -> 502."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ParameterError as exc:
        return _error(400, str(exc), exc.parameter)
    except SearchUnavailable as exc:
        return _error(503, str(exc))
    except ApiError as exc:
        return _error(502, f"Elasticsearch refused the query: {exc}")


async def _alerts(request: web.Request) -> web.Response:
    reporting = request.app[REPORTING]
    return web.json_response(await reporting.search_alerts(parse_alert_search(request.query)))


async def _history(request: web.Request) -> web.Response:
    reporting = request.app[REPORTING]
    history = parse_user_history(request.match_info["user_id"], request.query)
    return web.json_response(await reporting.user_history(history))


async def _top_users(request: web.Request) -> web.Response:
    reporting = request.app[REPORTING]
    return web.json_response(await reporting.top_users(parse_top_users(request.query, now_ms())))


async def _counts(request: web.Request) -> web.Response:
    reporting = request.app[REPORTING]
    return web.json_response(await reporting.counts(parse_counts(request.query, now_ms())))


async def _trades(request: web.Request) -> web.Response:
    reporting = request.app[REPORTING]
    return web.json_response(await reporting.trades(parse_trade_ids(request.query)))


async def _market(request: web.Request) -> web.Response:
    reporting = request.app[REPORTING]
    return web.json_response(await reporting.market(parse_market(request.query, now_ms())))


def create_reporting_app(settings: Settings) -> web.Application:
    """The reporting views as an aiohttp app; its Elasticsearch client lives as long as the app."""
    app = web.Application(middlewares=[_errors])

    async def client(app: web.Application) -> AsyncIterator[None]:
        es = elasticsearch_client(settings)
        app[REPORTING] = Reporting(es, Indices.from_settings(settings), settings.elasticsearch_url)
        yield
        await es.close()

    app.cleanup_ctx.append(client)
    app.router.add_get("/alerts", _alerts)
    app.router.add_get("/users/{user_id}/history", _history)
    app.router.add_get("/top-users", _top_users)
    app.router.add_get("/counts", _counts)
    app.router.add_get("/trades", _trades)
    app.router.add_get("/market", _market)
    return app
