"""What reaches the market and account-pair states, and in which order.

The per-user core sees one account; the market core (:mod:`riskengine.core.market`, by symbol) and
the pair core (:mod:`riskengine.core.account_pairs`, by owner pair) see every account's executions.
Both need their records in (timestamp, tradeId) order, and the worker can only promise that for
trades that are not too far behind their own input partition: a trade whose event time is more than
``market.allowed.lateness.seconds`` (5 s) behind the latest trade applied before it from the same
``crypto-trades`` partition (:class:`PartitionClocks`) is *late for the market*: it is scored for
its account as usual but changes no market or pair state. The worker's market agent then holds
every admitted trade until every input partition has passed its time (a watermark) and releases
them in order; ``riskengine replay`` emulates the partitions with Kafka's default partitioner
(:func:`kafka_partition`, murmur2 of the userId key) and sorts. Venues publish each partition in
time order, so late trades are rare; both count them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from .account_pairs import PairState, evaluate_pair_trade, owner_of, pair_key
from .executions import buyer_and_seller
from .market import MarketContext, MarketState, close_minute, context_minute, evaluate_market_trade
from .models import RiskAlert, Trade
from .reference import ReferenceData
from .rules import Rules


@lru_cache(maxsize=65_536)
def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, positive, modulo).

    Cached: the worker asks for every trade's symbol and pair, a few thousand keys, and murmur2 in
    Python costs more than the lookup by a factor of about 30.
    """
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


def _murmur2(data: bytes) -> int:
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    whole = length // 4
    for i in range(whole):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = 4 * whole
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


class PartitionClocks:
    """The latest admitted trade time per input partition, and which trades are late for the market."""

    def __init__(self) -> None:
        self.clocks: dict[int, int] = {}

    def admit(self, partition: int, timestamp: int, lateness_ms: int) -> bool:
        """Advance ``partition``'s clock; False if a trade at ``timestamp`` is late for the market
        (more than ``lateness_ms`` behind the clock)."""
        clock = self.clocks.get(partition, -1)
        if timestamp > clock:
            self.clocks[partition] = timestamp
            return True
        return timestamp >= clock - lateness_ms


def market_order(trade: Trade) -> tuple[int, str]:
    """The sort key of the market and pair inputs."""
    return (trade.timestamp, trade.trade_id)


class MarketContexts:
    """Market contexts by symbol, and the one a trade is scored against (the newest as of
    :func:`~riskengine.core.market.context_minute` of its time or earlier).

    ``limit`` bounds the versions kept per symbol (the oldest are dropped first; None: all, as
    replay keeps them).
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._times: dict[str, list[int]] = {}
        self._contexts: dict[str, list[MarketContext]] = {}

    def add(self, context: MarketContext) -> None:
        """Keep ``context`` (a version already kept is replaced by the same one)."""
        times = self._times.setdefault(context.symbol, [])
        contexts = self._contexts.setdefault(context.symbol, [])
        position = bisect_right(times, context.as_of)
        if position and times[position - 1] == context.as_of:
            contexts[position - 1] = context
            return
        times.insert(position, context.as_of)
        contexts.insert(position, context)
        if self.limit is not None and len(times) > self.limit:
            del times[0], contexts[0]

    def count(self) -> int:
        """Versions kept, over all symbols."""
        return sum(len(times) for times in self._times.values())

    def for_trade(self, symbol: str, timestamp: int, lateness_ms: int) -> MarketContext | None:
        """The context a trade of ``symbol`` at ``timestamp`` is scored against (None: none yet);
        ``lateness_ms``: ``market.allowed.lateness.seconds``."""
        times = self._times.get(symbol)
        if not times:
            return None
        position = bisect_right(times, context_minute(timestamp, lateness_ms))
        return self._contexts[symbol][position - 1] if position else None


@dataclass
class CrossAccountRun:
    """Market and pair states built by :func:`evaluate_cross_account`, and what they raised."""

    markets: dict[str, MarketState] = field(default_factory=dict)
    pairs: dict[str, PairState] = field(default_factory=dict)
    alerts: list[RiskAlert] = field(default_factory=list)
    executions: int = 0
    contexts: MarketContexts = field(default_factory=MarketContexts)


def evaluate_cross_account(
    trades: Iterable[Trade], reference: ReferenceData, rules: Rules
) -> CrossAccountRun:
    """Run the market and pair cores over admitted ``trades`` in market order (replay, tests, bench)."""
    run = CrossAccountRun()
    for trade in sorted(trades, key=market_order):
        market = run.markets.get(trade.symbol)
        if market is None:
            market = run.markets[trade.symbol] = MarketState()
        outcome = evaluate_market_trade(market, trade, rules)
        run.executions += outcome.counted
        for context in outcome.contexts:
            run.contexts.add(context)
        run.alerts.extend(outcome.alerts)
        pair = pair_key(reference, trade, rules)
        if pair is None:
            continue
        state = run.pairs.get(pair)
        if state is None:
            state = run.pairs[pair] = PairState()
        buyer = buyer_and_seller(trade)[0] or ""
        run.alerts.extend(evaluate_pair_trade(state, trade, owner_of(reference, buyer), pair, rules).alerts)
    for symbol, market in run.markets.items():
        last = close_minute(market, symbol, float("inf"), rules)
        if last is not None:
            run.contexts.add(last)
    return run
