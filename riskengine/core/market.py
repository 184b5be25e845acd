"""The market of one symbol: its executions, recent prices and volume, and the market patterns.

:func:`evaluate_market_trade` applies one trade record of a symbol to that symbol's
:class:`MarketState` and runs PRICE_CRASH and PUMP_AND_DUMP. Like the per-user core it is pure and
deterministic; unlike it, it needs its input in order: the records of a symbol must arrive in
(timestamp, tradeId) order. The worker's market agent releases them in that order behind a
watermark, ``riskengine replay`` sorts them (see :mod:`riskengine.core.market_feed` for which
trades reach the market at all). A record at or before the last one applied is a re-delivery
and changes nothing.

Executions are counted once (:mod:`riskengine.core.executions`): the twin record of an execution
changes no price, volume or account figure and raises nothing.

What the state keeps, and its bounds:

- ``buckets``: traded quantity and notional per :data:`BUCKET_MS` (10 s) within the last
  ``price.crash.window.minutes``: the *average price* (VWAP) of the window before a trade's bucket.
- ``bars``: :data:`BAR_MS` (5 min) bars (high, low, close, notional, the ids of the high and low
  trades) within ``pump.rise.hours + pump.dump.hours``, each with the volume baseline (EWMA mean
  and standard deviation of the bar notional, :data:`VOLUME_ALPHA`) as it stood when the bar opened.
- ``accounts``: per UTC hour within the same horizon, the :data:`TOP_ACCOUNTS` accounts that bought
  and that sold the most notional (the accounts most active on each side).
- ``pump``: the rise that qualifies as a pump, if one is under way (its low, its peak, its volume
  z-score), until it is dumped or ``pump.dump.hours`` pass after its peak.
- ``fired``: the timestamp of each pattern's last alert, for merging.
- ``context_as_of``: the minute of the last market context published.

Market context (:class:`MarketContext`): when the first execution at or after a new minute B
arrives, the state holds exactly the executions before B; the evaluation then returns the
symbol's context *as of B*: its reference price (the VWAP of the executions in the
``price.crash.window.minutes`` before B), its recent volume (the notional of the last hour's
bars) and its volatility (the standard deviation of the log returns between the last hour's bar
closes). After a pause in the symbol's trading it also returns the context as of the minute after
its last execution, so that every execution is in a context of the minute after it. A trade at
time t is scored against the newest context as of ``floor_minute(t - L - 1 minute) - 1 minute``
or earlier (:func:`context_minute`; L is ``market.allowed.lateness.seconds``): it holds every
execution of the symbol more than L + 3 minutes older than the trade and none less than L + 2
minutes older, whichever process runs it (the staleness bound). That choice is final once the
symbol's market has applied every execution before ``floor_minute(t - L - 1 minute)``
(:func:`context_final_after`), which the worker can wait for without waiting on itself (no input
partition promises less than its next trade's time minus L) and, in steady flow, never waits for
(:data:`CONTEXT_SLACK_MS` ahead of it).

Patterns (keyed by symbol; alerts have no userId):

- PRICE_CRASH: a new execution at a price ``<= price.crash.low.ratio`` (0.7) or ``>=
  price.crash.high.ratio`` (1.3) times the VWAP of the symbol's executions in the
  ``price.crash.window.minutes`` (5) before the trade's 10 s bucket, when that window holds at least
  ``price.crash.min.trades`` (5) executions. Matches within the window after an alert merge into it.
  Such an *off-market* execution adds its notional to the bars but sets no bar price and neither
  makes nor dumps a pump: one fat finger is not a market move.
- PUMP_AND_DUMP: a price at least ``1 + pump.rise.ratio`` (1.2) times the lowest price of the bars
  of the last ``pump.rise.hours`` (4) that have a volume baseline (the latest bar holding it is the
  low), on a volume z-score of at least ``pump.volume.zscore`` (3):
  the z-score of the rise's mean bar notional (the n bars from the low's bar to now) against the
  baseline at the low's bar, ``(mean - baseline mean) / (baseline std / sqrt(n))`` (the std at
  least :data:`STD_FLOOR_RATIO` of the mean; a baseline of fewer than :data:`MIN_BASELINE_BARS` bars
  is no baseline); then, within ``pump.dump.hours`` (12) of the
  peak, a price at most ``1 - pump.dump.ratio`` (0.85) times the peak. The alert names the top
  buyers of the rise's hours and the top sellers of the fall's hours (features ``boughtIntoRise:<userId>``
  and ``soldIntoFall:<userId>``, notional). Matches within ``pump.rise.hours`` after an alert merge.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from riskengine.errors import CoreError

from .executions import ExecutionLedger, buyer_and_seller
from .models import Feature, PatternType, RiskAlert, Severity, Trade, alert_id
from .priority import alert_priority
from .rules import HOUR_MS, MINUTE_MS, Rules

#: Width of a bucket of the average-price window.
BUCKET_MS = 10_000
#: Width of a bar of the pump-and-dump windows.
BAR_MS = 5 * MINUTE_MS
#: Weight of one bar's notional in the volume baseline (about an hour's memory).
VOLUME_ALPHA = 0.1
#: Bars of history a volume baseline needs.
MIN_BASELINE_BARS = 12
#: The baseline's standard deviation is at least this share of its mean (steady volume is no pump).
STD_FLOOR_RATIO = 0.25
#: Accounts kept per side and hour.
TOP_ACCOUNTS = 8
#: Accounts named per side in a pump-and-dump alert.
NAMED_ACCOUNTS = 5
#: Empty bars folded into the baseline at most (a symbol idle for days).
MAX_EMPTY_BARS = 288
#: Current encoding version of a market state.
FORMAT_VERSION = 1
#: How much older than the lateness allows the context a trade uses is: a live market is that far
#: ahead of what trades wait for.
CONTEXT_SLACK_MS = MINUTE_MS


class MarketStateFormatError(CoreError):
    """Bytes that are not a market state this version can read."""


@dataclass(slots=True)
class Bar:
    """One :data:`BAR_MS` bar of a symbol."""

    start: int
    high: float
    low: float
    close: float
    notional: float
    high_id: str
    low_id: str
    #: volume baseline (EWMA mean, standard deviation, bars in it) when the bar opened
    base_mean: float
    base_std: float
    base_bars: int


@dataclass(slots=True)
class Pump:
    """A qualifying rise: its low, its peak, its volume z-score."""

    low_time: int
    low: float
    low_id: str
    peak_time: int
    peak: float
    peak_id: str
    zscore: float


@dataclass(slots=True)
class MarketState:
    """One symbol's market; see the module docstring for what it keeps."""

    last_time: int = -1
    last_id: str = ""
    ledger: ExecutionLedger = field(default_factory=ExecutionLedger)
    #: [bucket start, quantity, notional, executions]
    buckets: list[list[Any]] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    volume_mean: float = 0.0
    volume_var: float = 0.0
    volume_bars: int = 0
    #: hour start -> ({buyer: notional}, {seller: notional})
    accounts: dict[int, tuple[dict[str, float], dict[str, float]]] = field(default_factory=dict)
    pump: Pump | None = None
    fired: dict[str, int] = field(default_factory=dict)
    executions: int = 0
    twins: int = 0
    context_as_of: int = -1


class MarketContext(NamedTuple):
    """A symbol's market as of a minute: what market-impact scoring compares a trade with."""

    symbol: str
    #: every execution of the symbol before this time (a minute boundary, epoch ms), none after
    as_of: int
    #: VWAP of the executions in the price.crash.window.minutes before as_of (None: none)
    reference_price: float | None
    #: notional of the last hour's bars
    recent_volume: float
    #: standard deviation of the log returns between the last hour's bar closes (None: < 3 bars)
    volatility: float | None


class MarketEvaluation(NamedTuple):
    """What one trade record did to its symbol's market: counted (a new execution), alerts, and the
    contexts it completed (as of the minute after the last execution, after a pause, and as of the
    minute it opened, if it is the first record of a new minute)."""

    state: MarketState
    applied: bool
    counted: bool
    alerts: tuple[RiskAlert, ...]
    contexts: tuple[MarketContext, ...] = ()


def context_final_after(timestamp: int, lateness_ms: int) -> int:
    """The market time after which the context of a trade at ``timestamp`` is final (see the
    module docstring): once every execution before it is applied."""
    shifted = timestamp - lateness_ms - CONTEXT_SLACK_MS
    return shifted - shifted % MINUTE_MS


def context_minute(timestamp: int, lateness_ms: int) -> int:
    """The as-of time of the market context a trade at ``timestamp`` is scored against, at the latest."""
    return context_final_after(timestamp, lateness_ms) - MINUTE_MS


PRICE_CRASH_TEXT = (
    Severity.HIGH,
    "A trade executed far from the symbol's recent average price (possible price manipulation or fat finger)",
    "Review the trade and the accounts on both sides; consider a trade bust",
)
PUMP_AND_DUMP_TEXT = (
    Severity.CRITICAL,
    "The symbol's price was pumped on abnormal volume and then dumped",
    "Investigate the accounts that bought into the rise and sold into the fall; report to compliance",
)


def evaluate_market_trade(state: MarketState, trade: Trade, rules: Rules) -> MarketEvaluation:
    """Apply ``trade`` (a record of ``state``'s symbol, in order) and run the market patterns."""
    if (trade.timestamp, trade.trade_id) <= (state.last_time, state.last_id):
        return MarketEvaluation(state, False, False, ())
    contexts: tuple[MarketContext, ...] = ()
    minute = trade.timestamp - trade.timestamp % MINUTE_MS
    if minute > state.context_as_of:
        if state.executions:
            after_last = state.last_time - state.last_time % MINUTE_MS + MINUTE_MS
            if state.context_as_of < after_last < minute:
                contexts = (market_context(state, trade.symbol, after_last, rules),)
            contexts += (market_context(state, trade.symbol, minute, rules),)
        state.context_as_of = minute
    state.last_time, state.last_id = trade.timestamp, trade.trade_id
    if not state.ledger.add(trade):
        state.twins += 1
        return MarketEvaluation(state, True, False, (), contexts)
    state.executions += 1
    alerts: list[RiskAlert] = []
    off_market, crash = _price_crash(state, trade, rules)
    if crash is not None:
        alerts.append(crash)
    _add_to_buckets(state, trade, rules)
    _add_to_bars(state, trade, rules, off_market)
    _add_to_accounts(state, trade, rules)
    if not off_market:
        dumped = _pump_and_dump(state, trade, rules)
        if dumped is not None:
            alerts.append(dumped)
    return MarketEvaluation(state, True, True, tuple(alerts), contexts)


def close_minute(state: MarketState, symbol: str, until: float, rules: Rules) -> MarketContext | None:
    """The context as of the minute after the symbol's last execution, once ``until`` (a time before
    which every execution is applied) has passed it and no execution of a later minute gave it yet.

    The worker's market agent calls it as its watermark moves, so that this version exists as soon
    as it is final, not only when the symbol trades again; ``riskengine replay`` at the end of the
    input. Either way the set of versions is the same: one as of each minute opened by an execution,
    and one as of the minute after each minute with executions.
    """
    if not state.executions:
        return None
    after_last = state.last_time - state.last_time % MINUTE_MS + MINUTE_MS
    if after_last > until or after_last <= state.context_as_of:
        return None
    state.context_as_of = after_last
    return market_context(state, symbol, after_last, rules)


def market_context(state: MarketState, symbol: str, as_of: int, rules: Rules) -> MarketContext:
    """``symbol``'s context from ``state`` as of ``as_of`` (see the module docstring); the state must
    hold no execution at or after ``as_of``."""
    quantity, notional, _count = _window(state, as_of, rules)
    recent = [bar for bar in state.bars if bar.start >= as_of - HOUR_MS]
    closes = [bar.close for bar in recent if bar.close > 0]
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    volatility = None
    if len(returns) >= 2:
        mean = sum(returns) / len(returns)
        volatility = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    reference_price = notional / quantity if quantity else None
    return MarketContext(symbol, as_of, reference_price, sum(bar.notional for bar in recent), volatility)


def _window(state: MarketState, timestamp: int, rules: Rules) -> tuple[float, float, int]:
    """Quantity, notional and executions of the buckets in the window before ``timestamp``'s bucket."""
    own = timestamp - timestamp % BUCKET_MS
    since = own - rules.price_crash_window_ms
    quantity = notional = 0.0
    count = 0
    for start, bucket_quantity, bucket_notional, executions in state.buckets:
        if since <= start < own:
            quantity += bucket_quantity
            notional += bucket_notional
            count += executions
    return quantity, notional, count


def _price_crash(state: MarketState, trade: Trade, rules: Rules) -> tuple[bool, RiskAlert | None]:
    """(the trade is off the market, its PRICE_CRASH alert unless merged)."""
    quantity, notional, count = _window(state, trade.timestamp, rules)
    if count < rules.price_crash_min_trades or quantity <= 0:
        return False, None
    average = notional / quantity
    ratio = trade.price / average
    if rules.price_crash_low < ratio < rules.price_crash_high:
        return False, None
    if not _fire(state, PatternType.PRICE_CRASH, trade.timestamp, rules.price_crash_window_ms):
        return True, None
    low = ratio <= rules.price_crash_low
    buyer, seller = buyer_and_seller(trade)
    features = [
        Feature(
            "priceToAverage",
            ratio,
            rules.price_crash_low if low else rules.price_crash_high,
            "<=" if low else ">=",
        ),
        Feature("averagePrice", average),
        Feature("price", trade.price),
        Feature("windowExecutions", count, rules.price_crash_min_trades, ">="),
        Feature("notional", trade.notional),
    ]
    features += [
        Feature(f"{role}:{account}", trade.notional)
        for role, account in (("buyer", buyer), ("seller", seller))
        if account
    ]
    alert = _market_alert(
        PatternType.PRICE_CRASH, PRICE_CRASH_TEXT, trade, (trade.trade_id,), features, rules
    )
    return True, alert


def _add_to_buckets(state: MarketState, trade: Trade, rules: Rules) -> None:
    start = trade.timestamp - trade.timestamp % BUCKET_MS
    buckets = state.buckets
    if buckets and buckets[-1][0] == start:
        bucket = buckets[-1]
        bucket[1] += trade.quantity
        bucket[2] += trade.quantity * trade.price
        bucket[3] += 1
    else:
        buckets.append([start, trade.quantity, trade.quantity * trade.price, 1])
    since = start - rules.price_crash_window_ms
    while buckets and buckets[0][0] < since:
        del buckets[0]


def _add_to_bars(state: MarketState, trade: Trade, rules: Rules, off_market: bool) -> None:
    """Add the trade's notional to its bar; its price too unless it is off the market."""
    start = trade.timestamp - trade.timestamp % BAR_MS
    bars = state.bars
    price, notional = trade.price, trade.quantity * trade.price
    if bars and bars[-1].start == start:
        bar = bars[-1]
        if off_market:
            bar.notional += notional
            return
        if price > bar.high:
            bar.high, bar.high_id = price, trade.trade_id
        if price < bar.low:
            bar.low, bar.low_id = price, trade.trade_id
        bar.close = price
        bar.notional += notional
        return
    if bars:
        previous = bars[-1]
        _fold_volume(state, previous.notional)
        for _empty in range(min(MAX_EMPTY_BARS, (start - previous.start) // BAR_MS - 1)):
            _fold_volume(state, 0.0)
    std = math.sqrt(state.volume_var)
    if off_market:
        # A bar opened by an off-market execution has no price until a market one comes (high 0,
        # low infinite: no pump starts or peaks there); its close carries the previous one's.
        close = bars[-1].close if bars else 0.0
        bars.append(
            Bar(start, 0.0, math.inf, close, notional, "", "", state.volume_mean, std, state.volume_bars)
        )
    else:
        bars.append(
            Bar(
                start,
                price,
                price,
                price,
                notional,
                trade.trade_id,
                trade.trade_id,
                state.volume_mean,
                std,
                state.volume_bars,
            )
        )
    since = start - rules.pump_rise_ms - rules.pump_dump_ms
    while bars and bars[0].start < since:
        del bars[0]


def _fold_volume(state: MarketState, notional: float) -> None:
    """One closed bar into the volume baseline (EWMA mean and variance)."""
    if state.volume_bars == 0:
        state.volume_mean, state.volume_var = notional, 0.0
    else:
        delta = notional - state.volume_mean
        state.volume_mean += VOLUME_ALPHA * delta
        state.volume_var = (1 - VOLUME_ALPHA) * (state.volume_var + VOLUME_ALPHA * delta * delta)
    state.volume_bars += 1


def _add_to_accounts(state: MarketState, trade: Trade, rules: Rules) -> None:
    hour = trade.timestamp - trade.timestamp % HOUR_MS
    slot = state.accounts.get(hour)
    if slot is None:
        slot = state.accounts[hour] = ({}, {})
        since = hour - rules.pump_rise_ms - rules.pump_dump_ms - HOUR_MS
        for old in [h for h in state.accounts if h < since]:
            del state.accounts[old]
    notional = trade.quantity * trade.price
    for book, account in zip(slot, buyer_and_seller(trade), strict=True):
        if account is None:
            continue
        book[account] = book.get(account, 0.0) + notional
        if len(book) > TOP_ACCOUNTS:
            smallest = min(book.items(), key=lambda item: (item[1], item[0]))[0]
            del book[smallest]


def _pump_and_dump(state: MarketState, trade: Trade, rules: Rules) -> RiskAlert | None:
    timestamp, price = trade.timestamp, trade.price
    pump = state.pump
    if pump is not None and timestamp - pump.peak_time > rules.pump_dump_ms:
        pump = state.pump = None
    rise = _rise(state, trade, rules)
    if rise is not None and (pump is None or price > pump.peak):
        pump = state.pump = rise
    if pump is None or price > pump.peak * (1 - rules.pump_dump_ratio):
        return None
    state.pump = None
    if not _fire(state, PatternType.PUMP_AND_DUMP, timestamp, rules.pump_rise_ms):
        return None
    buyers = _top(state, pump.low_time, pump.peak_time, 0)
    sellers = _top(state, pump.peak_time, timestamp, 1)
    features = [
        Feature("priceRise", pump.peak / pump.low - 1, rules.pump_rise_ratio, ">="),
        Feature(
            "riseMinutes", (pump.peak_time - pump.low_time) / MINUTE_MS, rules.pump_rise_ms / MINUTE_MS, "<="
        ),
        Feature("volumeZScore", pump.zscore, rules.pump_zscore, ">="),
        Feature("priceFall", 1 - price / pump.peak, rules.pump_dump_ratio, ">="),
        Feature(
            "fallMinutes", (timestamp - pump.peak_time) / MINUTE_MS, rules.pump_dump_ms / MINUTE_MS, "<="
        ),
        Feature("lowPrice", pump.low),
        Feature("peakPrice", pump.peak),
        Feature("price", price),
    ]
    features += [Feature(f"boughtIntoRise:{account}", notional) for account, notional in buyers]
    features += [Feature(f"soldIntoFall:{account}", notional) for account, notional in sellers]
    evidence = tuple(dict.fromkeys((pump.low_id, pump.peak_id, trade.trade_id)))
    return _market_alert(PatternType.PUMP_AND_DUMP, PUMP_AND_DUMP_TEXT, trade, evidence, features, rules)


def _rise(state: MarketState, trade: Trade, rules: Rules) -> Pump | None:
    """The pump this trade's price makes: a qualifying rise from the window's low, on volume."""
    bars = state.bars
    current = bars[-1]
    since = current.start - rules.pump_rise_ms
    low: Bar | None = None
    for bar in bars:
        if bar.start >= since and bar.base_bars >= MIN_BASELINE_BARS and (low is None or bar.low <= low.low):
            low = bar
    if low is None or trade.price < low.low * (1 + rules.pump_rise_ratio):
        return None
    slots = (current.start - low.start) // BAR_MS + 1
    volume = sum(bar.notional for bar in bars if bar.start >= low.start) / slots
    spread = max(low.base_std, STD_FLOOR_RATIO * low.base_mean) / math.sqrt(slots)
    if spread <= 0:
        return None
    zscore = (volume - low.base_mean) / spread
    if zscore < rules.pump_zscore:
        return None
    return Pump(low.start, low.low, low.low_id, trade.timestamp, trade.price, trade.trade_id, zscore)


def _top(state: MarketState, since: int, until: int, side: int) -> list[tuple[str, float]]:
    """The accounts with the most notional on ``side`` (0 buyers, 1 sellers) in the hours of the span."""
    totals: dict[str, float] = {}
    for hour, books in state.accounts.items():
        if hour + HOUR_MS > since and hour <= until:
            for account, notional in books[side].items():
                totals[account] = totals.get(account, 0.0) + notional
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:NAMED_ACCOUNTS]


def _fire(state: MarketState, pattern: PatternType, timestamp: int, merge_ms: int) -> bool:
    """Record an alert of ``pattern`` at ``timestamp`` unless it merges into the last one."""
    last = state.fired.get(pattern.value)
    if last is not None and timestamp <= last + merge_ms:
        return False
    state.fired[pattern.value] = timestamp
    return True


def _market_alert(
    pattern: PatternType,
    text: tuple[Severity, str, str],
    trade: Trade,
    evidence: tuple[str, ...],
    features: list[Feature],
    rules: Rules,
) -> RiskAlert:
    severity, description, action = text
    return RiskAlert(
        alert_id=alert_id(pattern, trade.symbol, evidence),
        pattern=pattern,
        user_id=None,
        symbol=trade.symbol,
        severity=severity,
        description=description,
        recommended_action=action,
        timestamp=trade.timestamp,
        evidence=evidence,
        features=tuple(features),
        rule_version=rules.version,
        priority=alert_priority(
            severity, features, trade.notional, weight=rules.priority_weights.get(pattern, 1.0)
        ),
    )


def encode_market_state(state: MarketState) -> bytes:
    """The state as a table value: a version byte, then compact JSON (lossless for floats)."""
    pump = state.pump
    document = [
        state.last_time,
        state.last_id,
        state.ledger.to_json(),
        state.buckets,
        [
            [
                b.start,
                b.high,
                b.low,
                b.close,
                b.notional,
                b.high_id,
                b.low_id,
                b.base_mean,
                b.base_std,
                b.base_bars,
            ]
            for b in state.bars
        ],
        [state.volume_mean, state.volume_var, state.volume_bars],
        [[hour, buyers, sellers] for hour, (buyers, sellers) in state.accounts.items()],
        None
        if pump is None
        else [pump.low_time, pump.low, pump.low_id, pump.peak_time, pump.peak, pump.peak_id, pump.zscore],
        state.fired,
        [state.executions, state.twins, state.context_as_of],
    ]
    return bytes([FORMAT_VERSION]) + json.dumps(document, separators=(",", ":")).encode()


def decode_market_state(data: bytes) -> MarketState:
    """Read :func:`encode_market_state`'s bytes; :class:`MarketStateFormatError` for anything else."""
    if not data or data[0] != FORMAT_VERSION:
        raise MarketStateFormatError(f"unknown market state version {data[:1]!r}")
    try:
        (last_time, last_id, ledger, buckets, bars, volume, accounts, pump, fired, counts) = json.loads(
            data[1:]
        )
        return MarketState(
            last_time=last_time,
            last_id=last_id,
            ledger=ExecutionLedger.from_json(ledger),
            buckets=buckets,
            bars=[Bar(*row) for row in bars],
            volume_mean=volume[0],
            volume_var=volume[1],
            volume_bars=volume[2],
            accounts={hour: (buyers, sellers) for hour, buyers, sellers in accounts},
            pump=None if pump is None else Pump(*pump),
            fired=fired,
            executions=counts[0],
            twins=counts[1],
            context_as_of=counts[2],
        )
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError) as exc:
        raise MarketStateFormatError(f"market state does not decode: {exc!r}") from exc
