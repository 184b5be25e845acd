"""The deterministic event stream: a realistic benign market, order churn and injected scenarios.

``Simulator(config).events(max_trades)`` yields ``CryptoTrade`` and ``OrderEvent`` records in
event-time order. It reads no clock: time starts at ``config.start_ms`` and advances by the
simulation's own steps; the live service maps it onto the wall clock, ``riskengine generate``
writes it to files. All randomness comes from ``random.Random`` instances seeded from
``config.seed`` (one per concern, so adding a scenario does not reshuffle the population), and
nothing iterates an unordered set, so the same configuration yields the same bytes every time.

The benign flow is *not* filtered through the detection definitions: it is drawn from the
behaviours below, and whatever instances of a pattern it holds stay in it. The
:class:`~riskengine.producer.oracle.PatternOracle` counts them (``benignInstances`` in the stats)
and witnesses the scenarios' trades for their labels.

How the stream is made:

- **Executions, two records each.** Every execution is reported once per side: two trade records
  with opposite sides, the same price, quantity, notional and time, their own ``tradeId`` and the
  other account as ``counterpartyUserId``. Each side has its own order: the taker's (aggressor's)
  order is PLACED and FILLED (a marketable limit order's remainder is CANCELLED seconds later, a
  market order's at once); the resting side's limit order was PLACED earlier and is FILLED, in part
  (``remainingQuantity`` > 0) when the execution takes less than it rests. Benign flow always has a
  counterparty and never pairs two accounts of one customer.
- **Market makers** (``accountType`` MARKET_MAKER) quote every book (symbol and exchange) they are
  assigned (2-3 makers a book): 1-3 price levels a side (level notional around the maker's size,
  scaled by the symbol, small jitter), a half spread of a few bps (a fraction of the symbol's
  volatility) and a level step of about as much. They requote when a taker reaches the book and
  the mid has moved more than 3/4 of their half spread since they quoted (at most every 4-12 s
  unless it moved three half spreads), mostly by AMENDED, sometimes by CANCELLED and a new PLACED;
  a level filled to 0 is placed again at once. Inventory (per maker and symbol, in notional):
  both sides skew toward reducing it (half a half spread at the soft limit of 8
  levels, two half spreads from there to the hard limit), and a side that would take it
  past the hard limit (16 levels) is cancelled until it would not. Takers prefer the side the
  makers' skew makes cheaper (the chance of buying moves with the makers' net inventory in the
  symbol by up to 30 points), so inventories revert toward flat (no hedging outside the venue:
  the makers together hold what the takers' net flow leaves). A maker places fewer than 450
  orders per symbol in a 10-minute cycle (QUOTE_STUFFING needs 500).
- **Taker arrivals.** A clock with mean gap ``2.4 x rate_ms`` (jittered ±30%) brings one taker
  arrival per step (2.4 trade records on average, so about one record per ``rate_ms``; the count
  per 10 s varies more than a fixed rate since sweeps and legs come in bunches). A due action
  comes first (an arbitrage's second leg, a TWAP/VWAP child order, a retail follow-up);
  otherwise an account is drawn by :data:`~riskengine.producer.population.FLOW_SHARE` and
  activity and trades as its role does: RETAIL heavy-tailed sizes within its KYC limits and below
  the large-order threshold, now and then a burst of 2-5 same-side trades minutes apart; HFT
  small log-normal sizes (sigma 0.15) in its 1-3 symbols, the side pulled toward flattening its
  inventory; ARBITRAGE buys where the makers' best ask is lowest and sells the same quantity where
  their best bid is highest (another exchange), one leg now and the other 1.5-12 s later; WHALE
  rare large trades (below the large-order threshold, within KYC); bad actors as retail. A taker
  order sweeps the best maker quotes (best price first) until filled; what the book cannot fill
  is cancelled. When no maker quotes that side, a resting limit order of another (benign,
  unlinked, KYC-able) account placed 0.5-18 s earlier takes it.
- **Scheduled flow.** Each step may start a TWAP or VWAP parent order of a free execution account
  (200k-2M USD in BTC, ETH or SOL over 30-240 minutes, a child every 20-120 s on one side; TWAP
  equal slices ±10%, VWAP along a U-shaped intraday curve); DCA accounts buy their fixed notional
  of BTC or ETH every 15-120 minutes on their own clock.
- **Churn.** Non-maker accounts place limit orders away from the mid and cancel them unfilled
  (``churn_ratio`` per trade record, at most 100 per account in 10 minutes, sized at most 3x the
  median of the account's last 32 orders in the symbol).
- **Scenarios.** Every ~``scenario_every`` taker arrivals (±50%) the next scenario of a seeded
  round robin over ``config.scenarios`` is set up, if accounts of the roles it needs are free (not
  in another scenario, rested 10 minutes since their last one, past that scenario's cooldown, and
  no benign trade of theirs completed the scenario's pattern within that cooldown: the engine would
  merge the scenario's alert into that one); otherwise it is counted as skipped. Market movers
  leave alone a symbol pumped in the last 5 hours (the engine merges a symbol's PUMP_AND_DUMP
  matches for 4 hours), and a price crash picks a symbol with 10+ executions in 5 minutes.
  Accounts quiet for ``quiet_ms`` (5 minutes) are preferred,
  and the scenario starts once its accounts have not traded for that long; they trade nothing
  else until it ends (nobody takes them as counterparty either). A scenario trade is one
  execution: with an AUTO counterparty against the best quote of a maker that can take it
  whole (its quote AMENDED up to the size when it rests less), else against another account's
  resting order; with a named counterparty against that account's resting order. The
  counterparty's record joins the scenario (its id in the label's trade ids, the scenario header
  on it); its order events do so when the counterparty is one of the scenario's accounts. A
  pattern the record of an outside counterparty (a maker) completes only together with its own
  benign trades is counted as a benign instance, not labelled.
- **Order.** Events are released once the simulation has moved ``LEAD_MS`` past them, because a
  resting order's PLACED event may be dated before the step that fills it.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
import statistics
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from riskengine.errors import ProducerError

from .events import Event, EventKind, Label, LabelRole
from .market import DEFAULT_SYMBOLS, SYMBOL_CATALOG, Market, heavy_tailed, notional_of
from .oracle import KYC_LIMITS, SPEC, PatternOracle, TradeFacts, large_order_threshold
from .population import SANCTIONED_COUNTRIES, Population, Role, User, build_population, pick_symbol
from .scenarios import AUTO, SCENARIOS, VERIFIABLE, Auto, OrderHandle, Scenario

#: The venues the seed names.
EXCHANGES: tuple[str, ...] = ("BINANCE", "COINBASE", "KRAKEN", "FTX", "KUCOIN")
#: 2026-01-01T00:00:00Z: ``riskengine generate``'s default start, so files are reproducible.
DEFAULT_START_MS = 1_767_225_600_000
#: Orders per account and symbol whose sizes set its median order size (as the SPOOFING baseline).
ORDER_SIZE_HISTORY = 32
ORDER_SIZE_MIN_HISTORY = 5
#: How far back a step may date an event (a resting order's PLACED); release lags by this much.
LEAD_MS = 20_000
#: A scenario's accounts rest this long before another scenario may use them.
REST_MS = 10 * 60_000
#: Market-moving scenarios start after this much simulated time (a volume baseline to rise above).
MARKET_WARMUP_MS = 60 * 60_000
#: Market-moving scenarios running at once, each on its own symbol.
MAX_MARKET_MOVERS = 4
#: A maker's soft and hard inventory limits, in quote levels (notional) per symbol.
SOFT_LEVELS, HARD_LEVELS = 8.0, 16.0
#: Orders a maker places per symbol and 10-minute cycle at most (QUOTE_STUFFING's minimum is 500).
MAX_PLACEMENTS_PER_CYCLE = 450
#: A symbol is not pumped again (nor moved by another scenario) this long after a pump settled.
PUMP_MERGE_MS = 5 * 60 * 60_000
#: Chance per taker arrival that a free execution account starts a TWAP/VWAP parent order.
PARENT_START_CHANCE = 0.0006
#: Trade records a taker arrival makes on average (two per execution; sweeps, arbitrage legs, DCA
#: buys and scenario trades add some): arrivals come every ``RECORDS_PER_ARRIVAL x rate_ms``.
RECORDS_PER_ARRIVAL = 2.4
_ATTEMPTS = 20
_CYCLE_MS = 10 * 60_000
_CHURN_MAX = 100
#: Weights of the roles whose resting orders fill what no maker can.
_RESTING_WEIGHTS: tuple[tuple[Role, float], ...] = (
    (Role.RETAIL, 0.55),
    (Role.HFT, 0.1),
    (Role.ARBITRAGE, 0.05),
    (Role.EXECUTION, 0.05),
    (Role.WHALE, 0.12),
    (Role.ABUSER, 0.08),
    (Role.LINKED, 0.03),
    (Role.TIER0, 0.02),
)

_TICK, _CHURN, _SCENARIO, _DCA = 0, 1, 2, 3


class InvalidConfig(ProducerError, ValueError):
    """A simulation parameter is out of range; ``field`` names it."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines the stream: same values, same events."""

    seed: int
    start_ms: int = DEFAULT_START_MS
    rate_ms: float = 100.0
    users: int = 1000
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    exchanges: tuple[str, ...] = EXCHANGES
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    scenario_every: int = 400
    churn_ratio: float = 0.2
    quiet_ms: int = 5 * 60_000

    def __post_init__(self) -> None:
        if not math.isfinite(self.rate_ms) or not 0.1 <= self.rate_ms <= 3_600_000:
            raise InvalidConfig("rate_ms", f"must be between 0.1 and 3,600,000 ms, got {self.rate_ms!r}")
        if not 0 <= self.start_ms <= 10**14:
            raise InvalidConfig("start_ms", f"must be epoch milliseconds, got {self.start_ms!r}")
        if not 1 <= self.users <= 1_000_000:
            raise InvalidConfig("users", f"must be between 1 and 1,000,000, got {self.users!r}")
        if not self.symbols:
            raise InvalidConfig("symbols", "at least one symbol is needed")
        unknown = [s for s in self.symbols if s not in SYMBOL_CATALOG]
        if unknown:
            raise InvalidConfig(
                "symbols", f"unknown symbol {unknown[0]!r} (known: {', '.join(SYMBOL_CATALOG)})"
            )
        if len(set(self.symbols)) != len(self.symbols):
            raise InvalidConfig("symbols", "a symbol is listed twice")
        if not self.exchanges or not all(e and e.strip() == e for e in self.exchanges):
            raise InvalidConfig("exchanges", "must be non-empty names")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise InvalidConfig(
                "scenarios", f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})"
            )
        if self.scenario_every < 1:
            raise InvalidConfig("scenario_every", f"must be at least 1, got {self.scenario_every!r}")
        if not math.isfinite(self.churn_ratio) or not 0 <= self.churn_ratio <= 10:
            raise InvalidConfig("churn_ratio", f"must be between 0 and 10, got {self.churn_ratio!r}")
        if not 0 <= self.quiet_ms <= 3_600_000:
            raise InvalidConfig("quiet_ms", f"must be between 0 and 3,600,000 ms, got {self.quiet_ms!r}")


@dataclass
class SimulationStats:
    """Counts of what the simulation made so far.

    ``benign_instances``: per pattern the oracle checks, the benign trade records that complete
    its definition (reported, not removed). ``maker_positions``: per market maker and symbol, the
    |inventory| in notional at its latest fill; ``maker_peaks``: per maker, the largest |inventory|
    (notional) and share of the hard limit at any fill that grew it.
    """

    trades: int = 0
    normal_trades: int = 0
    scenario_trades: int = 0
    order_events: int = 0
    churn_orders: int = 0
    suppressed: int = 0
    started: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    benign_instances: Counter[str] = field(default_factory=Counter)
    trades_by_role: Counter[str] = field(default_factory=Counter)
    parent_orders: Counter[str] = field(default_factory=Counter)
    maker_positions: dict[str, dict[str, float]] = field(default_factory=dict)
    maker_peaks: dict[str, list[float]] = field(default_factory=dict)
    maker_hard_limits: dict[str, float] = field(default_factory=dict)

    def maker_inventory(self) -> dict[str, dict[str, float]]:
        """Per maker: the largest |inventory| in one symbol and its share of the hard limit (at the
        fills that grew it), and the final |inventory| summed over its symbols (notional, at the
        symbols' last fills)."""
        return {
            maker: {
                "maxNotional": round(peak[0], 2),
                "maxShareOfHardLimit": round(peak[1], 4),
                "finalNotional": round(sum(self.maker_positions.get(maker, {}).values()), 2),
                "hardLimitsNotional": round(self.maker_hard_limits.get(maker, 0.0), 2),
            }
            for maker, peak in sorted(self.maker_peaks.items())
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "trades": self.trades,
            "normalTrades": self.normal_trades,
            "scenarioTrades": self.scenario_trades,
            "orderEvents": self.order_events,
            "orderEventsPerTrade": round(self.order_events / self.trades, 3) if self.trades else None,
            "churnOrders": self.churn_orders,
            "suppressedArrivals": self.suppressed,
            "scenariosStarted": dict(sorted(self.started.items())),
            "scenariosCompleted": dict(sorted(self.completed.items())),
            "scenariosSkipped": dict(sorted(self.skipped.items())),
            "benignInstances": dict(sorted(self.benign_instances.items())),
            "tradesByRole": dict(sorted(self.trades_by_role.items())),
            "parentOrders": dict(sorted(self.parent_orders.items())),
            "makerInventory": self.maker_inventory(),
        }


@dataclass(eq=False, slots=True)
class _Order:
    """An order: a taker's, a resting one (a maker's quote or another account's limit order), or a
    scenario's resting order."""

    order_id: str
    user: User
    symbol: str
    sell: bool
    quantity: float
    price: float
    exchange: str
    remaining: float = 0.0
    #: The scenario whose header this order's events carry (None: benign).
    instance: _Instance | None = None


@dataclass(eq=False)
class _Quoter:
    """One market maker on one book (symbol, exchange)."""

    maker: User
    symbol: str
    exchange: str
    rank: int
    levels: int
    half_spread: float
    step: float
    level_notional: float
    soft: float
    hard: float
    min_requote_ms: int
    bids: list[_Order | None]
    asks: list[_Order | None]
    quoted_mid: float = 0.0
    quoted_at: int = 0


@dataclass(eq=False)
class _Instance:
    scenario: Scenario
    scenario_id: str
    users: tuple[User, ...]
    start_ts: int
    generator: Iterator[int] | None = None
    symbol: str | None = None
    end_ts: int = 0
    trade_ids: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    order_event_ids: list[str] = field(default_factory=list)
    # pattern -> (evidence ids in first-seen order, accounts involved)
    witnessed: dict[str, tuple[dict[str, None], dict[str, None]]] = field(default_factory=dict)

    def has(self, user: User) -> bool:
        return any(u is user for u in self.users)


@dataclass(eq=False)
class _Parent:
    """A TWAP/VWAP parent order being worked."""

    user: User
    symbol: str
    sell: bool
    children: list[tuple[int, float]]  # (due time, notional), in time order
    style: str
    next_child: int = 0


class Simulator:
    """One simulated venue; see the module docstring."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        seed = config.seed
        self.run_id = hashlib.sha256(f"{seed}:{config.start_ms}".encode()).hexdigest()[:6]
        self.population: Population = build_population(
            config.users, config.symbols, config.exchanges, random.Random(f"{seed}:population")
        )
        self.market = Market(config.symbols, config.start_ms, random.Random(f"{seed}:market"))
        self.oracle = PatternOracle(self.population.subjects.get, SANCTIONED_COUNTRIES.__contains__)
        self.stats = SimulationStats()
        self.now = config.start_ms
        self._flow = random.Random(f"{seed}:flow")
        self._quote_rng = random.Random(f"{seed}:quotes")
        self._program_rng = random.Random(f"{seed}:programs")
        self._scenario_rng = random.Random(f"{seed}:scenarios")
        self._steps: list[tuple[int, int, int, Any]] = []
        self._due: list[tuple[int, int, Callable[[], None]]] = []
        self._out: list[tuple[int, int, Event]] = []
        self._seq = itertools.count()
        self._trade_ids = itertools.count(1)
        self._order_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._scenario_ids = itertools.count(1)
        self._limit: int | None = None
        self._busy: set[str] = set()
        self._rested_at: dict[str, int] = {}
        self._cooldown: dict[tuple[str, str], int] = {}
        self._last_order_end: dict[str, int] = {}
        self._last_trade: dict[str, int] = {}
        self._churn: dict[str, deque[int]] = {}
        #: (userId, symbol) -> quantities of the account's last orders placed in the symbol
        self._order_sizes: dict[tuple[str, str], deque[float]] = {}
        #: (userId, symbol) -> position in base units (makers, HFT and arbitrage accounts)
        self._position: dict[tuple[str, str], float] = {}
        #: symbol -> the makers' summed position (base units) and summed hard limits (notional)
        self._maker_net: dict[str, float] = dict.fromkeys(config.symbols, 0.0)
        self._maker_hard: dict[str, float] = dict.fromkeys(config.symbols, 0.0)
        #: (makerId, symbol) -> [cycle start, orders placed in it]
        self._placements: dict[tuple[str, str], list[int]] = {}
        self._books: dict[tuple[str, str], list[_Quoter]] = {}
        #: (makerId, symbol) -> the maker's hard inventory limit (notional)
        self._hard_of: dict[tuple[str, str], float] = {}
        #: (userId, pattern) -> when a benign record of the account last completed the pattern
        self._benign_seen: dict[tuple[str, str], int] = {}
        #: symbol -> when its last market-moving scenario (a pump-and-dump) settled
        self._settled_at: dict[str, int] = {}
        #: symbol -> times of its executions in the last 5 minutes
        self._executions: dict[str, deque[int]] = {s: deque() for s in config.symbols}
        self._parents: dict[str, _Parent] = {}
        self._running: dict[str, _Instance] = {}
        self._cycle: list[str] = []
        self._until_injection = self._injection_gap()
        self._finished: list[Label] = []
        self._resting_roles = tuple(r for r, _ in _RESTING_WEIGHTS if self.population.by_role[r])
        self._resting_cumulative = tuple(
            itertools.accumulate(w for r, w in _RESTING_WEIGHTS if self.population.by_role[r])
        )
        self._open_books()
        self._schedule(config.start_ms + self._gap(RECORDS_PER_ARRIVAL * config.rate_ms), _TICK)
        if config.churn_ratio > 0:
            self._schedule(config.start_ms + self._gap(config.rate_ms / config.churn_ratio), _CHURN)
        for user in self.population.by_role[Role.DCA]:
            self._schedule(config.start_ms + self._program_rng.randint(1, user.interval_ms), _DCA, user)

    # -- the stream ------------------------------------------------------------------------

    def events(self, max_trades: int | None = None) -> Iterator[Event]:
        """Events in time order until ``max_trades`` trade records were made (forever without a
        limit). An execution's two records are never split, so an odd limit may give one more.

        When the limit is reached, scenarios still running are labelled incomplete and every
        event already made is released.
        """
        self._limit = max_trades
        while max_trades is None or self.stats.trades < max_trades:
            ts, _, kind, payload = heapq.heappop(self._steps)
            self.now = ts
            if kind == _TICK:
                self._tick()
                self._schedule(ts + self._gap(RECORDS_PER_ARRIVAL * self.config.rate_ms), _TICK)
            elif kind == _CHURN:
                self._churn_arrival()
                self._schedule(ts + self._gap(self.config.rate_ms / self.config.churn_ratio), _CHURN)
            elif kind == _DCA:
                self._dca(payload)
                self._schedule(ts + payload.interval_ms, _DCA, payload)
            else:
                self._advance(payload)
            while self._out and self._out[0][0] <= ts - LEAD_MS:
                yield heapq.heappop(self._out)[2]
        self.abandon()
        while self._out:
            yield heapq.heappop(self._out)[2]

    def abandon(self) -> None:
        """Label the scenarios still running as incomplete (the run ends before they do)."""
        for instance in list(self._running.values()):
            self._finish(instance, complete=False)

    def unreleased_ids(self) -> set[str]:
        """Ids of events made but not yielded yet (dated up to ``LEAD_MS`` ahead of the stream)."""
        return {event.event_id for _, _, event in self._out}

    def drain_labels(self) -> list[Label]:
        """Labels of the scenarios finished since the last call, in the order they finished."""
        labels, self._finished = self._finished, []
        return labels

    def profiles(self) -> list[dict[str, Any]]:
        """Every account's ``UserProfile`` record, dated at the start of the run."""
        return self.population.profiles(self.config.start_ms)

    def books(self) -> dict[tuple[str, str], list[str]]:
        """(symbol, exchange) -> the market makers quoting it."""
        return {key: [q.maker.user_id for q in quoters] for key, quoters in self._books.items()}

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, ts: int, kind: int, payload: Any = None) -> None:
        heapq.heappush(self._steps, (ts, next(self._seq), kind, payload))

    def _later(self, ts: int, action: Callable[[], None]) -> None:
        heapq.heappush(self._due, (ts, next(self._seq), action))

    def _gap(self, mean_ms: float) -> int:
        return max(1, round(mean_ms * self._flow.uniform(0.7, 1.3)))

    def _injection_gap(self) -> int:
        return max(1, round(self.config.scenario_every * self._scenario_rng.uniform(0.5, 1.5)))

    def _executions_left(self) -> int:
        """Executions the run may still make (each is two records)."""
        if self._limit is None:
            return 1 << 30
        return max(1, (self._limit - self.stats.trades + 1) // 2)

    # -- market makers ---------------------------------------------------------------------

    def _open_books(self) -> None:
        rng = self._quote_rng
        makers = self.population.by_role[Role.MARKET_MAKER]
        style: dict[str, tuple[int, float, float, int]] = {}
        for maker in makers:
            levels = rng.choices((1, 2, 3), (0.4, 0.3, 0.3))[0]
            style[maker.user_id] = (
                levels,
                rng.uniform(0.04, 0.1),
                rng.uniform(0.8, 1.5),
                rng.randint(4_000, 12_000),
            )
        sizes: dict[tuple[str, str], float] = {}
        rank = itertools.count()
        for symbol in self.config.symbols:
            spec = SYMBOL_CATALOG[symbol]
            coverage = min(len(makers), 3 if spec.weight >= 0.2 else 2)
            for exchange in self.config.exchanges:
                quoters = []
                for maker in sorted(rng.sample(makers, coverage), key=lambda u: u.user_id):
                    levels, spread, step, requote = style[maker.user_id]
                    key = (maker.user_id, symbol)
                    if key not in sizes:
                        sizes[key] = maker.median_notional * (1 + 10 * spec.weight) * rng.uniform(0.8, 1.2)
                        self._maker_hard[symbol] += HARD_LEVELS * sizes[key]
                        self._hard_of[key] = HARD_LEVELS * sizes[key]
                        hard_limits = self.stats.maker_hard_limits
                        hard_limits[maker.user_id] = hard_limits.get(maker.user_id, 0.0) + self._hard_of[key]
                    half_spread = spec.daily_volatility * spread
                    quoters.append(
                        _Quoter(
                            maker=maker,
                            symbol=symbol,
                            exchange=exchange,
                            rank=next(rank),
                            levels=levels,
                            half_spread=half_spread,
                            step=half_spread * step,
                            level_notional=sizes[key],
                            soft=SOFT_LEVELS * sizes[key],
                            hard=HARD_LEVELS * sizes[key],
                            min_requote_ms=requote,
                            bids=[None] * levels,
                            asks=[None] * levels,
                        )
                    )
                self._books[(symbol, exchange)] = quoters
                for quoter in quoters:
                    self._requote(quoter, force=True)

    def _targets(self, q: _Quoter, mid: float) -> tuple[list[float] | None, list[float] | None]:
        """The bid and ask prices by level (None: that side is pulled at the hard limit)."""
        inventory = self._position.get((q.maker.user_id, q.symbol), 0.0) * mid
        # A skew toward reducing the inventory from the first fill on, steeper past the soft limit.
        skew = max(-1.0, min(1.0, inventory / q.soft)) * 0.5 * q.half_spread
        over = abs(inventory) - q.soft
        if over > 0:
            skew += math.copysign(min(1.0, over / (q.hard - q.soft)) * 1.5 * q.half_spread, inventory)
        round_price = self.market.round_price
        bids = asks = None
        if inventory + q.level_notional <= q.hard:
            bids = [
                round_price(q.symbol, mid * (1 - q.half_spread - i * q.step - skew)) for i in range(q.levels)
            ]
        if inventory - q.level_notional >= -q.hard:
            asks = [
                round_price(q.symbol, mid * (1 + q.half_spread + i * q.step - skew)) for i in range(q.levels)
            ]
        return bids, asks

    def _can_place(self, q: _Quoter) -> bool:
        cycle = self.now // _CYCLE_MS * _CYCLE_MS
        entry = self._placements.setdefault((q.maker.user_id, q.symbol), [cycle, 0])
        if entry[0] != cycle:
            entry[0], entry[1] = cycle, 0
        return entry[1] < MAX_PLACEMENTS_PER_CYCLE

    def _place_quote(self, q: _Quoter, sell: bool, price: float) -> _Order | None:
        if not self._can_place(q):
            return None
        self._placements[(q.maker.user_id, q.symbol)][1] += 1
        jitter = math.exp(self._quote_rng.gauss(0.0, 0.05))
        quantity = self.market.quantity_for(q.symbol, q.level_notional * jitter, price)
        order = _Order(self._next_order_id(), q.maker, q.symbol, sell, quantity, price, q.exchange, quantity)
        self._order_event(order, "PLACED", self.now, price, quantity, quantity)
        return order

    def _requote(self, q: _Quoter, force: bool = False) -> None:
        """Bring ``q``'s quotes up to date: pull a side at the hard limit, move stale levels, refill
        filled ones."""
        rng = self._quote_rng
        now = self.now
        mid = self.market.mid(q.symbol, now)
        drift = abs(mid / q.quoted_mid - 1) if q.quoted_mid else math.inf
        stale = drift > 0.75 * q.half_spread and (
            force or now - q.quoted_at >= q.min_requote_ms or drift > 3 * q.half_spread
        )
        targets = self._targets(q, mid)
        for side, prices, sell in ((q.bids, targets[0], False), (q.asks, targets[1], True)):
            for level in range(q.levels):
                order = side[level]
                if prices is None:
                    if order is not None:
                        self._order_event(
                            order, "CANCELLED", now, order.price, order.quantity, order.remaining
                        )
                        side[level] = None
                    continue
                price = prices[level]
                if order is None:
                    side[level] = self._place_quote(q, sell, price)
                elif stale and order.price != price:
                    if rng.random() < 0.2 and self._can_place(q):
                        self._order_event(
                            order, "CANCELLED", now, order.price, order.quantity, order.remaining
                        )
                        side[level] = self._place_quote(q, sell, price)
                    else:
                        order.price = price
                        self._order_event(order, "AMENDED", now, price, order.quantity, order.remaining)
        if stale:
            q.quoted_mid, q.quoted_at = mid, now

    def _quotes(
        self, symbol: str, exchange: str, sell: bool, taker: User, force: bool
    ) -> list[tuple[_Quoter, _Order]]:
        """The makers' resting quotes a taker selling (``sell``) or buying can hit, best first."""
        found: list[tuple[float, int, int, _Quoter, _Order]] = []
        for q in self._books.get((symbol, exchange), ()):
            if q.maker is taker:
                continue
            self._requote(q, force)
            for level, order in enumerate(q.bids if sell else q.asks):
                if order is not None:
                    found.append((-order.price if sell else order.price, level, q.rank, q, order))
        found.sort(key=lambda entry: entry[:3])
        return [(q, order) for _, _, _, q, order in found]

    def _maker_room(self, q: _Quoter, sell: bool, price: float) -> float:
        """The quantity ``q``'s maker can take from a taker selling (``sell``) or buying, within its
        hard inventory limit and its KYC limits."""
        inventory = self._position.get((q.maker.user_id, q.symbol), 0.0)
        limit = q.hard / price
        room = limit - inventory if sell else limit + inventory
        trade_limit, daily_limit = KYC_LIMITS[q.maker.kyc_tier]
        daily = (0.95 * daily_limit - self.oracle.day_notional(q.maker.user_id, self.now)) / price
        return max(0.0, min(room, daily, 0.95 * trade_limit / price))

    def _after_fills(self, touched: list[_Quoter]) -> None:
        seen: list[_Quoter] = []
        for q in touched:
            if not any(q is s for s in seen):
                seen.append(q)
                for side in (q.bids, q.asks):
                    for level, order in enumerate(side):
                        if order is not None and order.remaining <= 0.0:
                            side[level] = None
                self._requote(q)

    def _note_fill(self, user: User, symbol: str, bought: float, price: float) -> None:
        """Track positions (makers, HFT, arbitrage) and the makers' inventory figures."""
        role = user.role
        if role not in (Role.MARKET_MAKER, Role.HFT, Role.ARBITRAGE):
            return
        key = (user.user_id, symbol)
        before = self._position.get(key, 0.0)
        position = before + bought
        self._position[key] = position
        if role is not Role.MARKET_MAKER:
            return
        self._maker_net[symbol] += bought
        exposure = abs(position) * price
        self.stats.maker_positions.setdefault(user.user_id, {})[symbol] = exposure
        peak = self.stats.maker_peaks.setdefault(user.user_id, [0.0, 0.0])
        if abs(position) > abs(before):
            # At the fills that grow it (later price moves revalue it, the maker does not trade it up).
            peak[0] = max(peak[0], exposure)
            peak[1] = max(peak[1], exposure / self._hard_of[key])

    def _prefers_buying(self, symbol: str) -> float:
        """The chance a price-sensitive taker buys: makers long (their quotes skewed down) pull it up."""
        hard = self._maker_hard.get(symbol, 0.0)
        if not hard:
            return 0.5
        ratio = self._maker_net[symbol] * self.market.mid(symbol, self.now) / (hard / 10)
        return 0.5 + 0.3 * max(-1.0, min(1.0, ratio))

    # -- taker flow ------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._due and self._due[0][0] <= self.now:
            heapq.heappop(self._due)[2]()
        else:
            if self._program_rng.random() < PARENT_START_CHANCE:
                self._start_parent()
            for _ in range(_ATTEMPTS):
                user = self.population.pick_active(self._flow)
                if user.user_id in self._busy:
                    continue
                if user.role is Role.HFT:
                    done = self._hft(user)
                elif user.role is Role.ARBITRAGE:
                    done = self._arbitrage(user)
                else:
                    done = self._retail(user)
                if done:
                    break
            else:
                self.stats.suppressed += 1
        self._until_injection -= 1
        if self._until_injection <= 0:
            self._until_injection = self._injection_gap()
            self._inject()

    def _room(self, user: User, symbol: str) -> float:
        """The notional ``user`` may trade now: KYC per trade and per day, below LARGE_ORDER."""
        trade_limit, daily_limit = KYC_LIMITS[user.kyc_tier]
        return min(
            0.85 * trade_limit,
            0.75 * large_order_threshold(symbol),
            0.85 * daily_limit - self.oracle.day_notional(user.user_id, self.now),
        )

    def _exchange(self, user: User) -> str:
        rng = self._flow
        return user.exchange if rng.random() < 0.8 else rng.choice(self.config.exchanges)

    def _retail(self, user: User) -> bool:
        """A retail-like taker trade (retail, whales, bad actors' camouflage); maybe a burst."""
        rng = self._flow
        symbol = pick_symbol(rng, user)
        room = self._room(user, symbol)
        if room < 20.0:
            return False
        notional = heavy_tailed(rng, user.median_notional)
        if notional > room:
            notional = room * rng.uniform(0.3, 1.0)
        notional = max(notional, 10.0)
        sell = rng.random() >= self._prefers_buying(symbol)
        exchange = self._exchange(user)
        limit = rng.random() < user.limit_share * 0.5
        if not self._take(user, symbol, exchange, sell, notional, limit):
            return False
        if user.role is Role.RETAIL and rng.random() < 0.04:
            # Scaling into a position: a few more trades the same way within minutes.
            at = self.now
            for _ in range(rng.randint(1, 4)):
                at += rng.randint(20_000, 120_000)
                self._later(
                    at, _FollowUp(self, user, symbol, exchange, sell, notional * rng.uniform(0.5, 1.5))
                )
        return True

    def follow_up(self, user: User, symbol: str, exchange: str, sell: bool, notional: float) -> None:
        """A retail account's next trade of a burst (skipped if it is in a scenario by then)."""
        if user.user_id in self._busy:
            return
        room = self._room(user, symbol)
        if room >= 20.0:
            self._take(user, symbol, exchange, sell, max(10.0, min(notional, room)), False)

    def _hft(self, user: User) -> bool:
        rng = self._flow
        symbol = pick_symbol(rng, user)
        room = self._room(user, symbol)
        if room < 20.0:
            return False
        mid = self.market.mid(symbol, self.now)
        inventory = self._position.get((user.user_id, symbol), 0.0) * mid
        lean = max(-1.0, min(1.0, inventory / (10 * user.median_notional)))
        sell = rng.random() < 0.5 + 0.35 * lean + (0.5 - self._prefers_buying(symbol))
        notional = min(room, user.median_notional * math.exp(rng.gauss(0.0, 0.15)))
        return self._take(user, symbol, user.exchange, sell, notional, rng.random() < 0.3) > 0

    def _arbitrage(self, user: User) -> bool:
        rng = self._flow
        symbol = pick_symbol(rng, user)
        room = self._room(user, symbol)
        if room < 20.0:
            return False
        # Buy where the makers' best ask is lowest, sell where their best bid is highest (skewed
        # quotes differ across exchanges: arbitrage moves inventory between the makers).
        asks: list[tuple[float, str]] = []
        bids: list[tuple[float, str]] = []
        for exchange in self.config.exchanges:
            for q in self._books.get((symbol, exchange), ()):
                if q.asks[0] is not None:
                    asks.append((q.asks[0].price, exchange))
                if q.bids[0] is not None:
                    bids.append((-q.bids[0].price, exchange))
        if not asks or not bids:
            return False
        buy_at = min(asks)[1]
        sell_at = min((b for b in bids if b[1] != buy_at), default=min(bids))[1]
        sell = rng.random() < 0.5  # which leg goes first
        first, second = (sell_at, buy_at) if sell else (buy_at, sell_at)
        notional = min(room / 2, user.median_notional * math.exp(rng.gauss(0.0, 0.3)))
        mid = self.market.mid(symbol, self.now)
        quantity = self.market.quantity_for(symbol, notional, mid)
        filled = self._take(user, symbol, first, sell, notional, False, quantity=quantity)
        if filled:
            leg = _FollowUp(self, user, symbol, second, not sell, 0.0, filled)
            self._later(self.now + rng.randint(1_500, 12_000), leg)
        return bool(filled)

    def take_leg(self, user: User, symbol: str, exchange: str, sell: bool, quantity: float) -> None:
        """An arbitrage's second leg: the same quantity the other way on the other exchange."""
        self._take(user, symbol, exchange, sell, 0.0, False, quantity=quantity)

    def _dca(self, user: User) -> None:
        if user.user_id in self._busy:
            return
        symbol = user.symbols[0]
        if self._room(user, symbol) >= user.median_notional:
            self._take(user, symbol, user.exchange, False, user.median_notional, False)

    def _start_parent(self) -> None:
        rng = self._program_rng
        free = [u for u in self.population.by_role[Role.EXECUTION] if u.user_id not in self._parents]
        if not free:
            return
        user = rng.choice(free)
        # Parents in the liquid majors (a maker book in a minor pair could not carry them).
        majors = [s for s in user.symbols if SYMBOL_CATALOG[s].weight >= 0.1]
        symbol = (
            rng.choice(majors) if majors else max(self.config.symbols, key=lambda s: SYMBOL_CATALOG[s].weight)
        )
        total = math.exp(rng.uniform(math.log(200_000.0), math.log(2_000_000.0)))
        duration = rng.randint(30, 240) * 60_000
        interval = rng.uniform(20_000, 120_000)
        style = rng.choice(("TWAP", "VWAP"))
        times = []
        at = self.now + rng.randint(1_000, 10_000)
        while at < self.now + duration:
            times.append(at)
            at += round(interval * rng.uniform(0.85, 1.15))
        if style == "TWAP":
            weights = [rng.uniform(0.9, 1.1) for _ in times]
        else:
            # A U-shaped intraday volume curve (UTC day): heavier near the day's open and close.
            weights = [1 + 2 * ((t % 86_400_000) / 43_200_000 - 1) ** 2 for t in times]
        scale = total / sum(weights)
        cap = min(0.75 * large_order_threshold(symbol), 0.85 * KYC_LIMITS[user.kyc_tier][0])
        children = [(t, min(cap, w * scale)) for t, w in zip(times, weights, strict=True)]
        parent = _Parent(user, symbol, rng.random() < 0.5, children, style)
        self._parents[user.user_id] = parent
        self.stats.parent_orders[style] += 1
        self._later(children[0][0], lambda: self._child(parent))

    def _child(self, parent: _Parent) -> None:
        _, notional = parent.children[parent.next_child]
        parent.next_child += 1
        user = parent.user
        room = self._room(user, parent.symbol)
        if room >= 20.0:
            limit = self._program_rng.random() < 0.5
            self._take(user, parent.symbol, user.exchange, parent.sell, min(notional, room), limit)
        if parent.next_child < len(parent.children):
            self._later(parent.children[parent.next_child][0], lambda: self._child(parent))
        else:
            del self._parents[user.user_id]

    def _take(
        self,
        user: User,
        symbol: str,
        exchange: str,
        sell: bool,
        notional: float,
        limit: bool,
        quantity: float | None = None,
    ) -> float:
        """A benign taker order: sweep the makers' quotes best first; what no quote fills is
        cancelled; with no quote at all, another account's resting order takes it whole.
        Returns the quantity filled (0.0: no trade)."""
        rng = self._flow
        mid = self.market.mid(symbol, self.now)
        if quantity is None:
            quantity = self.market.quantity_for(symbol, notional, mid)
        quotes = self._quotes(symbol, exchange, sell, user, force=False)
        if not quotes:
            return self._against_resting(user, symbol, exchange, sell, quantity, limit)
        best = quotes[0][1].price
        cap = best * (1 - 0.0005) if sell else best * (1 + 0.0005)
        limit_price = self.market.round_price(symbol, cap) if limit else None
        fills: list[tuple[_Quoter, _Order, float]] = []
        left = quantity
        budget = self._executions_left()
        taken: dict[str, float] = {}  # per maker, what this sweep already takes
        for q, order in quotes:
            if left <= 0.0 or len(fills) >= budget:
                break
            if limit_price is not None and (order.price < limit_price if sell else order.price > limit_price):
                break
            maker_id = q.maker.user_id
            room = self._maker_room(q, sell, order.price) - taken.get(maker_id, 0.0)
            size = self.market.floor_quantity(symbol, min(left, order.remaining, room))
            if size <= 0.0:
                continue
            taken[maker_id] = taken.get(maker_id, 0.0) + size
            fills.append((q, order, size))
            left = self.market.sub_quantity(symbol, left, size)
        if not fills:
            return self._against_resting(user, symbol, exchange, sell, quantity, limit)
        taker = _Order(
            self._next_order_id(),
            user,
            symbol,
            sell,
            quantity,
            limit_price if limit_price is not None else fills[0][1].price,
            exchange,
            quantity,
        )
        self._order_event(taker, "PLACED", self.now, taker.price, quantity, quantity)
        order_type = "LIMIT" if limit else "MARKET"
        for _, order, size in fills:
            self._execute(taker, order, size, order.price, order_type, None)
        if taker.remaining > 0.0:
            at = self.now + (rng.randint(500, 10_000) if limit else 0)
            self._order_event(taker, "CANCELLED", at, taker.price, quantity, taker.remaining)
            self._last_order_end[user.user_id] = at
        self._after_fills([q for q, _, _ in fills])
        return self.market.sub_quantity(symbol, quantity, taker.remaining)

    def _against_resting(
        self, user: User, symbol: str, exchange: str, sell: bool, quantity: float, limit: bool
    ) -> float:
        """``user`` takes a resting order of another account (no maker quotes that side)."""
        mid = self.market.mid(symbol, self.now)
        edge = self._flow.uniform(0.0001, 0.0008)
        price = self.market.round_price(symbol, mid * (1 - edge) if sell else mid * (1 + edge))
        other = self._resting_counterparty(user, quantity * price)
        if other is None:
            return 0.0
        taker = _Order(self._next_order_id(), user, symbol, sell, quantity, price, exchange, quantity)
        self._order_event(taker, "PLACED", self.now, price, quantity, quantity)
        resting = self._resting_order(other, symbol, exchange, not sell, quantity, price, None)
        self._execute(taker, resting, quantity, price, "LIMIT" if limit else "MARKET", None)
        self._close_resting(resting)
        return quantity

    def _resting_counterparty(self, user: User, notional: float) -> User | None:
        """A benign account (not a maker, not in a scenario, not linked to ``user``) whose KYC limits
        allow ``notional``, with a resting order on the other side."""
        rng = self._flow
        for _ in range(_ATTEMPTS):
            role = self._resting_roles[
                bisect.bisect(self._resting_cumulative, rng.random() * self._resting_cumulative[-1])
            ]
            other = self.population.pick_active(rng, role)
            if (
                other is user
                or other.user_id in self._busy
                or self.oracle.linked(user.user_id, other.user_id)
            ):
                continue
            trade_limit, daily_limit = KYC_LIMITS[other.kyc_tier]
            if notional > 0.85 * trade_limit:
                continue
            if self.oracle.day_notional(other.user_id, self.now) + notional > 0.85 * daily_limit:
                continue
            return other
        return None

    def _resting_order(
        self,
        user: User,
        symbol: str,
        exchange: str,
        sell: bool,
        quantity: float,
        price: float,
        instance: _Instance | None,
        earliest: int | None = None,
    ) -> _Order:
        """A limit order of ``user`` placed 0.5-18 s ago (not before ``earliest``), sometimes bigger
        than ``quantity`` (its rest is cancelled seconds after the fill)."""
        rng = self._flow
        lead = rng.randint(500, LEAD_MS * 9 // 10)
        if earliest is not None:
            lead = max(0, min(lead, self.now - earliest))
        size = quantity
        if rng.random() < 0.15:
            size = self.market.round_quantity(symbol, quantity * rng.uniform(1.2, 2.0))
        order = _Order(self._next_order_id(), user, symbol, sell, size, price, exchange, size, instance)
        self._order_event(order, "PLACED", self.now - lead, price, size, size)
        return order

    def _close_resting(self, order: _Order) -> None:
        if order.remaining > 0.0:
            at = self.now + self._flow.randint(500, 10_000)
            self._order_event(order, "CANCELLED", at, order.price, order.quantity, order.remaining)
            self._last_order_end[order.user.user_id] = max(
                self._last_order_end.get(order.user.user_id, 0), at
            )

    def _execute(
        self,
        taker: _Order,
        resting: _Order,
        quantity: float,
        price: float,
        order_type: str,
        instance: _Instance | None,
    ) -> None:
        """One execution: both orders' FILLED events and both trade records."""
        symbol = taker.symbol
        taker.remaining = self.market.sub_quantity(symbol, taker.remaining, quantity)
        self._order_event(taker, "FILLED", self.now, price, taker.quantity, taker.remaining)
        resting.remaining = self.market.sub_quantity(symbol, resting.remaining, quantity)
        self._order_event(resting, "FILLED", self.now, price, resting.quantity, resting.remaining)
        notional = notional_of(quantity, price)
        self._executions[symbol].append(self.now)
        self._emit_trade(
            taker.user,
            symbol,
            taker.sell,
            quantity,
            price,
            notional,
            taker.exchange,
            order_type,
            resting.user.user_id,
            taker.order_id,
            instance,
            outside=False,
        )
        outside = instance is not None and not instance.has(resting.user)
        self._emit_trade(
            resting.user,
            symbol,
            resting.sell,
            quantity,
            price,
            notional,
            resting.exchange,
            "LIMIT",
            taker.user.user_id,
            resting.order_id,
            instance,
            outside=outside,
        )
        self._note_fill(taker.user, symbol, -quantity if taker.sell else quantity, price)
        self._note_fill(resting.user, symbol, -quantity if resting.sell else quantity, price)
        if taker.remaining <= 0.0:
            self._last_order_end[taker.user.user_id] = self.now

    def _churn_arrival(self) -> None:
        rng = self._flow
        user = self.population.pick_active(rng)
        user_id = user.user_id
        recent = self._churn.setdefault(user_id, deque())
        while recent and recent[0] < self.now - _CYCLE_MS:
            recent.popleft()
        lead = min(rng.randint(300, 8_000), self.now - self._last_order_end.get(user_id, 0))
        if user_id in self._busy or len(recent) >= _CHURN_MAX or lead < 100:
            return
        symbol = pick_symbol(rng, user)
        sell = rng.random() < 0.5
        away = rng.uniform(0.001, 0.01)
        mid = self.market.mid(symbol, self.now)
        price = self.market.round_price(symbol, mid * (1 + away) if sell else mid * (1 - away))
        notional = min(heavy_tailed(rng, user.median_notional, sigma=0.5, tail=0.0), 2 * user.median_notional)
        quantity = self.market.quantity_for(symbol, notional, price)
        usual = self.median_order_size(user_id, symbol)
        if usual is not None:
            quantity = min(quantity, self.market.round_quantity(symbol, 3 * usual)) or quantity
        order = _Order(self._next_order_id(), user, symbol, sell, quantity, price, user.exchange, quantity)
        placed_at = self.now - lead
        self._order_event(order, "PLACED", placed_at, price, quantity, quantity)
        if rng.random() < 0.2:
            closer = self.market.round_price(symbol, mid * (1 + away / 2) if sell else mid * (1 - away / 2))
            at = placed_at + round(lead * rng.uniform(0.2, 0.8))
            self._order_event(order, "AMENDED", at, closer, quantity, quantity)
        self._order_event(order, "CANCELLED", self.now, order.price, quantity, quantity)
        self._last_order_end[user_id] = self.now
        recent.append(placed_at)
        self.stats.churn_orders += 1

    # -- events ----------------------------------------------------------------------------

    def recent_executions(self, symbol: str) -> int:
        """Executions in ``symbol`` in the last 5 minutes."""
        times = self._executions[symbol]
        while times and times[0] < self.now - 5 * 60_000:
            times.popleft()
        return len(times)

    def median_order_size(self, user_id: str, symbol: str) -> float | None:
        """The median quantity of the account's last orders placed in ``symbol`` (None: fewer than 5)."""
        sizes = self._order_sizes.get((user_id, symbol))
        if sizes is None or len(sizes) < ORDER_SIZE_MIN_HISTORY:
            return None
        return float(statistics.median(sizes))

    def _next_order_id(self) -> str:
        return f"O-{self.run_id}-{next(self._order_ids):08d}"

    def _emit(self, event: Event) -> None:
        heapq.heappush(self._out, (event.timestamp, next(self._seq), event))

    def _order_event(
        self, order: _Order, event_type: str, ts: int, price: float, quantity: float, remaining: float
    ) -> None:
        event_id = f"E-{self.run_id}-{next(self._event_ids):09d}"
        user_id = order.user.user_id
        if event_type == "PLACED":
            key = (user_id, order.symbol)
            sizes = self._order_sizes.get(key)
            if sizes is None:
                sizes = self._order_sizes[key] = deque(maxlen=ORDER_SIZE_HISTORY)
            sizes.append(quantity)
        record = {
            "eventId": event_id,
            "orderId": order.order_id,
            "userId": user_id,
            "symbol": order.symbol,
            "side": _side(order.sell),
            "eventType": event_type,
            "price": price,
            "quantity": quantity,
            "remainingQuantity": remaining,
            "timestamp": ts,
            "exchange": order.exchange,
        }
        instance = order.instance
        self._emit(
            Event(
                EventKind.ORDER,
                event_id,
                ts,
                user_id,
                record,
                None if instance is None else instance.scenario.name,
                None if instance is None else instance.scenario_id,
            )
        )
        self.stats.order_events += 1
        if instance is not None:
            instance.order_event_ids.append(event_id)
            if order.order_id not in instance.order_ids:
                instance.order_ids.append(order.order_id)
            instance.end_ts = max(instance.end_ts, ts)

    def _emit_trade(
        self,
        user: User,
        symbol: str,
        sell: bool,
        quantity: float,
        price: float,
        notional: float,
        exchange: str,
        order_type: str,
        counterparty: str | None,
        order_id: str,
        instance: _Instance | None,
        outside: bool,
    ) -> str:
        """One trade record; checked by the oracle (witnessed for ``instance``, else counted as benign).

        ``outside``: the record's account is not one of the instance's (an AUTO counterparty): a
        match relying on its own benign trades is a benign instance, not the scenario's.
        """
        trade_id = f"T-{self.run_id}-{next(self._trade_ids):08d}"
        now = self.now
        record = {
            "tradeId": trade_id,
            "userId": user.user_id,
            "customerId": user.customer_id,
            "symbol": symbol,
            "side": _side(sell),
            "quantity": quantity,
            "price": price,
            "notional": notional,
            "timestamp": now,
            "exchange": exchange,
            "orderType": order_type,
            "riskLevel": None,
            "counterpartyUserId": counterparty,
            "orderId": order_id,
        }
        facts = TradeFacts(trade_id, user.user_id, symbol, sell, quantity, notional, now, counterparty)
        matches = self.oracle.check(facts, SPEC)
        if instance is None:
            for match in matches:
                self.stats.benign_instances[match.pattern] += 1
                self._benign_seen[(user.user_id, match.pattern)] = now
        else:
            instance.trade_ids.append(trade_id)
            ids = set(instance.trade_ids) if outside and matches else set()
            for match in matches:
                if outside and not ids.issuperset(match.evidence):
                    self.stats.benign_instances[match.pattern] += 1
                    self._benign_seen[(user.user_id, match.pattern)] = now
                    continue
                evidence, accounts = instance.witnessed.setdefault(match.pattern, ({}, {}))
                evidence.update(dict.fromkeys(match.evidence))
                accounts.update(dict.fromkeys((user.user_id, *([counterparty] if counterparty else []))))
        self.oracle.record(facts)
        self._last_trade[user.user_id] = now
        self._emit(
            Event(
                EventKind.TRADE,
                trade_id,
                now,
                user.user_id,
                record,
                None if instance is None else instance.scenario.name,
                None if instance is None else instance.scenario_id,
            )
        )
        self.stats.trades += 1
        self.stats.trades_by_role[user.role.value] += 1
        if instance is not None:
            instance.end_ts = max(instance.end_ts, now)
            self.stats.scenario_trades += 1
        else:
            self.stats.normal_trades += 1
        return trade_id

    # -- scenarios -------------------------------------------------------------------------

    def _inject(self) -> None:
        if not self.config.scenarios:
            return
        if not self._cycle:
            self._cycle = list(self.config.scenarios)
            self._scenario_rng.shuffle(self._cycle)
        scenario = SCENARIOS[self._cycle.pop()]
        users = self._allocate(scenario)
        if users is None or (scenario.moves_market and not self._market_can_move()):
            self.stats.skipped[scenario.name] += 1
            return
        scenario_id = f"S-{self.run_id}-{next(self._scenario_ids):05d}"
        # The accounts stay quiet for quiet_ms before the scenario's first trade, so their own
        # normal trades cannot combine with it into another pattern (the short windows are 1-5 min).
        last = max(self._last_trade.get(u.user_id, -self.config.quiet_ms) for u in users)
        start = max(self.now, last + self.config.quiet_ms)
        instance = _Instance(scenario, scenario_id, users, start, end_ts=start)
        instance.generator = scenario.run(_Context(self, instance))
        self._running[scenario_id] = instance
        self._busy.update(u.user_id for u in users)
        self.stats.started[scenario.name] += 1
        self._schedule(start, _SCENARIO, instance)

    def _market_can_move(self) -> bool:
        """A market-moving scenario may start: the symbols have an hour of history (a volume baseline)
        and fewer than :data:`MAX_MARKET_MOVERS` such scenarios run."""
        if self.now < self.config.start_ms + MARKET_WARMUP_MS:
            return False
        return sum(i.scenario.moves_market for i in self._running.values()) < MAX_MARKET_MOVERS

    def _allocate(self, scenario: Scenario) -> tuple[User, ...] | None:
        rng = self._scenario_rng

        def available(user: User) -> bool:
            # Not an account whose benign trades completed the scenario's pattern within its
            # cooldown: the engine would merge the scenario's alert into that one.
            seen = self._benign_seen.get((user.user_id, scenario.pattern))
            return (
                user.user_id not in self._busy
                and self._rested_at.get(user.user_id, 0) <= self.now
                and self._cooldown.get((user.user_id, scenario.name), 0) <= self.now
                and (seen is None or seen < self.now - scenario.cooldown_ms)
            )

        def free(role: Role) -> list[User]:
            return [u for u in self.population.by_role[role] if available(u)]

        def quiet_first(pool: list[User]) -> list[User]:
            quiet = [u for u in pool if self._last_trade.get(u.user_id, 0) <= self.now - self.config.quiet_ms]
            return quiet or pool

        if scenario.ring is not None:
            pool = free(Role.ABUSER)
            size = rng.randint(*scenario.ring)
            if len(pool) < size:
                return None
            quiet = quiet_first(pool)
            return tuple(rng.sample(quiet if len(quiet) >= size else pool, size))
        chosen: list[User] = []
        for role in scenario.roles:
            customers = {u.customer_id for u in chosen}
            pool = [u for u in free(role) if u.customer_id not in customers]
            if scenario.with_linked:
                by_id = self.population.by_id
                pool = [u for u in pool if all(available(by_id[p]) for p in u.linked_accounts)]
            if not pool:
                return None
            chosen.append(rng.choice(quiet_first(pool)))
        if scenario.with_linked:
            chosen.extend(self.population.by_id[p] for u in list(chosen) for p in u.linked_accounts)
        return tuple(chosen)

    def _advance(self, instance: _Instance) -> None:
        assert instance.generator is not None
        try:
            delay = next(instance.generator)
        except StopIteration:
            self._finish(instance, complete=True)
            return
        self._schedule(self.now + max(0, delay), _SCENARIO, instance)

    def _finish(self, instance: _Instance, complete: bool) -> None:
        del self._running[instance.scenario_id]
        scenario = instance.scenario
        for user in instance.users:
            self._busy.discard(user.user_id)
            self._rested_at[user.user_id] = self.now + REST_MS
            self._cooldown[(user.user_id, scenario.name)] = self.now + scenario.cooldown_ms
        if not instance.trade_ids and not instance.order_event_ids:
            # Cut off before its first event, or nothing to do (no symbol free to move): no label.
            if complete:
                self.stats.skipped[scenario.name] += 1
            return
        if complete:
            self.stats.completed[scenario.name] += 1
        pattern = scenario.pattern
        verified = (pattern in instance.witnessed) if pattern in VERIFIABLE else None
        users = tuple(u.user_id for u in instance.users)
        self._finished.append(
            Label(
                instance.scenario_id,
                scenario.name,
                pattern,
                LabelRole.PRIMARY,
                users,
                instance.symbol,
                instance.start_ts,
                instance.end_ts,
                tuple(instance.trade_ids),
                tuple(instance.order_ids),
                tuple(instance.order_event_ids),
                complete,
                verified,
            )
        )
        for other, (evidence, accounts) in instance.witnessed.items():
            if other == pattern:
                continue
            self._finished.append(
                Label(
                    instance.scenario_id,
                    scenario.name,
                    other,
                    LabelRole.INCIDENTAL,
                    tuple(accounts),
                    instance.symbol,
                    instance.start_ts,
                    instance.end_ts,
                    tuple(evidence),
                    (),
                    (),
                    complete,
                    True,
                )
            )

    def _scenario_trade(
        self,
        instance: _Instance,
        user: User,
        symbol: str,
        sell: bool,
        quantity: float,
        counterparty: str | Auto | None,
        price: float | None = None,
    ) -> None:
        """One execution of a scenario account, as a market order (see the module docstring)."""
        rng = self._scenario_rng
        now = self.now
        exchange = user.exchange
        taker = _Order(self._next_order_id(), user, symbol, sell, quantity, 0.0, exchange, quantity, instance)
        resting: _Order | None = None
        other: User | None = None
        quoter: _Quoter | None = None
        if isinstance(counterparty, Auto) and price is None:
            for q, order in self._quotes(symbol, exchange, sell, user, force=True):
                if self._maker_room(q, sell, order.price) >= quantity:
                    quoter, resting = q, order
                    break
            if resting is not None and resting.remaining < quantity:
                # The maker tops its quote up to the size (it can take it within its limits).
                resting.quantity = self.market.round_quantity(
                    symbol, resting.quantity + quantity - resting.remaining
                )
                resting.remaining = quantity
                self._order_event(resting, "AMENDED", now, resting.price, resting.quantity, resting.remaining)
        if resting is None:
            if price is None:
                mid = self.market.mid(symbol, now)
                spread = rng.uniform(0.0001, 0.0006)
                price = mid * (1 - spread) if sell else mid * (1 + spread)
            price = self.market.round_price(symbol, price)
            if isinstance(counterparty, Auto):
                other = self._resting_counterparty(user, quantity * price)
            elif counterparty is not None:
                other = self.population.by_id[counterparty]
        execution_price = resting.price if resting is not None else price
        assert execution_price is not None
        taker.price = execution_price
        self._order_event(taker, "PLACED", now, execution_price, quantity, quantity)
        if resting is None and other is not None:
            inside = instance.has(other)
            resting = self._resting_order(
                other,
                symbol,
                exchange,
                not sell,
                quantity,
                execution_price,
                instance if inside else None,
                earliest=instance.start_ts,
            )
        if resting is None:
            # Nobody can take the other side: a record without a counterparty.
            taker.remaining = 0.0
            self._order_event(taker, "FILLED", now, execution_price, quantity, 0.0)
            self._emit_trade(
                user,
                symbol,
                sell,
                quantity,
                execution_price,
                notional_of(quantity, execution_price),
                exchange,
                "MARKET",
                None,
                taker.order_id,
                instance,
                outside=False,
            )
        else:
            self._execute(taker, resting, quantity, execution_price, "MARKET", instance)
            if quoter is not None:
                self._after_fills([quoter])
            else:
                self._close_resting(resting)
        self._last_order_end[user.user_id] = now

    def _scenario_place(
        self, instance: _Instance, user: User, symbol: str, sell: bool, quantity: float, price: float
    ) -> _Order:
        price = self.market.round_price(symbol, price)
        order = _Order(
            self._next_order_id(), user, symbol, sell, quantity, price, user.exchange, quantity, instance
        )
        self._order_event(order, "PLACED", self.now, price, quantity, quantity)
        return order

    def _scenario_cancel(self, instance: _Instance, order: _Order) -> None:
        self._order_event(order, "CANCELLED", self.now, order.price, order.quantity, order.remaining)
        self._last_order_end[order.user.user_id] = self.now


@dataclass(frozen=True)
class _FollowUp:
    """A due taker trade: a retail burst's next trade, or an arbitrage's second leg (``quantity``)."""

    simulator: Simulator
    user: User
    symbol: str
    exchange: str
    sell: bool
    notional: float
    quantity: float | None = None

    def __call__(self) -> None:
        if self.quantity is None:
            self.simulator.follow_up(self.user, self.symbol, self.exchange, self.sell, self.notional)
        else:
            self.simulator.take_leg(self.user, self.symbol, self.exchange, self.sell, self.quantity)


def _side(sell: bool) -> str:
    return "SELL" if sell else "BUY"


class _Context:
    """The :class:`~riskengine.producer.scenarios.Venue` a running scenario sees."""

    def __init__(self, simulator: Simulator, instance: _Instance) -> None:
        self._sim = simulator
        self._instance = instance
        self.rng = simulator._scenario_rng
        self.users: Sequence[User] = instance.users

    @property
    def now(self) -> int:
        return self._sim.now

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._sim.market.symbols

    def mid(self, symbol: str) -> float:
        return self._sim.market.mid(symbol, self._sim.now)

    def pick_symbol(self, user: User) -> str:
        return pick_symbol(self.rng, user)

    def quantity_for(self, symbol: str, notional: float, price: float) -> float:
        return self._sim.market.quantity_for(symbol, notional, price)

    def round_quantity(self, symbol: str, quantity: float) -> float:
        return self._sim.market.round_quantity(symbol, quantity)

    def median_order_size(self, user: User, symbol: str) -> float | None:
        return self._sim.median_order_size(user.user_id, symbol)

    def trade(
        self,
        user: User,
        symbol: str,
        sell: bool,
        quantity: float,
        counterparty: str | Auto | None = AUTO,
        price: float | None = None,
    ) -> None:
        self._sim._scenario_trade(self._instance, user, symbol, sell, quantity, counterparty, price)

    def place(self, user: User, symbol: str, sell: bool, quantity: float, price: float) -> _Order:
        return self._sim._scenario_place(self._instance, user, symbol, sell, quantity, price)

    def cancel(self, order: OrderHandle) -> None:
        assert isinstance(order, _Order)
        self._sim._scenario_cancel(self._instance, order)

    def set_overlay(self, symbol: str, overlay: Callable[[int], float]) -> None:
        self._sim.market.set_overlay(symbol, overlay)

    def settle_overlay(self, symbol: str) -> None:
        self._sim.market.settle_overlay(symbol, self._sim.now)
        if self._instance.scenario.moves_market:
            self._sim._settled_at[symbol] = self._sim.now

    def pumpable(self) -> list[str]:
        # Not a symbol pumped within the last 5 hours either: the engine merges a symbol's
        # PUMP_AND_DUMP matches for pump.rise.hours (4) after an alert.
        market, now = self._sim.market, self._sim.now
        settled = self._sim._settled_at
        return [
            s
            for s in market.symbols
            if not market.has_overlay(s) and settled.get(s, -PUMP_MERGE_MS) <= now - PUMP_MERGE_MS
        ]

    def executions(self, symbol: str) -> int:
        return self._sim.recent_executions(symbol)

    def label_symbol(self, symbol: str) -> None:
        self._instance.symbol = symbol
