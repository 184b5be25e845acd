"""The deterministic event stream: normal trading, order churn and injected scenarios.

``Simulator(config).events(max_trades)`` yields ``CryptoTrade`` and ``OrderEvent`` records in
event-time order. It reads no clock: time starts at ``config.start_ms`` and advances by the
simulation's own steps; the live service maps it onto the wall clock, ``riskengine generate``
writes it to files. All randomness comes from ``random.Random`` instances seeded from
``config.seed`` (one per concern, so adding a scenario does not reshuffle the population), and
nothing iterates an unordered set, so the same configuration yields the same bytes every time.

How the stream is made:

- **Steps.** A heap of timed steps: normal trade arrivals (mean gap ``rate_ms``, jittered
  uniformly by ±30%, so the trade rate over 10 s is within a few percent of the mean), order-churn
  arrivals (orders placed and cancelled unfilled, ``churn_ratio`` per trade), and the next step of
  each running scenario. Steps run in time order, so prices, the oracle and every account see one
  consistent history.
- **Normal trades.** An account is drawn by role share and activity, then a symbol, side, order
  type and heavy-tailed size within the account's KYC limits and below the large-order threshold.
  The oracle's guard rejects a candidate that would complete any labelled pattern, and another is
  drawn (up to 20 times). Each trade comes from one order: market orders are PLACED and FILLED
  at once; limit orders were PLACED up to 18 s earlier, sometimes AMENDED, and sometimes filled
  only in part with the rest CANCELLED seconds later. An account has at most one normal order
  resting at a time and never more than 100 churn orders in 10 minutes, and churn orders are at
  most twice its usual size and at most 3x the median of its last 32 orders in the symbol (the
  SPOOFING baseline), so normal flow cannot look like spoofing, layering or quote stuffing.
- **Scenarios.** Every ~``scenario_every`` normal trades (±50%) the next scenario of a seeded
  round robin over ``config.scenarios`` is set up, if accounts of the roles it needs are free (not
  in another scenario, rested 10 minutes since their last one, past that scenario's cooldown);
  otherwise it is counted as skipped. Accounts quiet for ``quiet_ms`` (5 minutes) are preferred,
  and the scenario starts once its accounts have not traded for that long, so their normal trades
  cannot combine with the scenario's into another pattern; they trade nothing else until it ends.
- **Order.** Events are released once the simulation has moved ``LEAD_MS`` past them, because a
  limit order's PLACED event is dated before the step that fills it.
"""

from __future__ import annotations

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
from .oracle import GUARD, KYC_LIMITS, SPEC, PatternOracle, TradeFacts, large_order_threshold
from .population import SANCTIONED_COUNTRIES, Population, Role, User, build_population, pick_symbol
from .scenarios import AUTO, SCENARIOS, VERIFIABLE, Auto, OrderHandle, Scenario

#: The venues the seed names.
EXCHANGES: tuple[str, ...] = ("BINANCE", "COINBASE", "KRAKEN", "FTX", "KUCOIN")
#: 2026-01-01T00:00:00Z: ``riskengine generate``'s default start, so files are reproducible.
DEFAULT_START_MS = 1_767_225_600_000
#: Orders per account and symbol whose sizes set its median order size (as the SPOOFING baseline).
ORDER_SIZE_HISTORY = 32
ORDER_SIZE_MIN_HISTORY = 5
#: How far back a step may date an event (a limit order's PLACED); release lags by this much.
LEAD_MS = 20_000
#: A scenario's accounts rest this long before another scenario may use them.
REST_MS = 10 * 60_000
#: Market-moving scenarios start after this much simulated time (a volume baseline to rise above).
MARKET_WARMUP_MS = 60 * 60_000
#: Market-moving scenarios running at once, each on its own symbol.
MAX_MARKET_MOVERS = 4
_ATTEMPTS = 20
_CHURN_WINDOW_MS = 10 * 60_000
_CHURN_MAX = 100

_TRADE, _CHURN, _SCENARIO = 0, 1, 2


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
    churn_ratio: float = 0.5
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
    """Counts of what the simulation made so far."""

    trades: int = 0
    normal_trades: int = 0
    scenario_trades: int = 0
    order_events: int = 0
    churn_orders: int = 0
    suppressed: int = 0
    started: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "trades": self.trades,
            "normalTrades": self.normal_trades,
            "scenarioTrades": self.scenario_trades,
            "orderEvents": self.order_events,
            "churnOrders": self.churn_orders,
            "suppressedArrivals": self.suppressed,
            "scenariosStarted": dict(sorted(self.started.items())),
            "scenariosCompleted": dict(sorted(self.completed.items())),
            "scenariosSkipped": dict(sorted(self.skipped.items())),
        }


@dataclass
class _Order:
    order_id: str
    user: User
    symbol: str
    sell: bool
    quantity: float
    price: float
    exchange: str


@dataclass
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


@dataclass
class _Plan:
    user: User
    symbol: str
    sell: bool
    limit: bool
    price: float
    quantity: float
    notional: float
    counterparty: str | None
    exchange: str


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
        self._scenario_rng = random.Random(f"{seed}:scenarios")
        self._steps: list[tuple[int, int, int, _Instance | None]] = []
        self._out: list[tuple[int, int, Event]] = []
        self._seq = itertools.count()
        self._trade_ids = itertools.count(1)
        self._order_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._scenario_ids = itertools.count(1)
        self._makers = self.population.by_role[Role.MARKET_MAKER]
        self._busy: set[str] = set()
        self._rested_at: dict[str, int] = {}
        self._cooldown: dict[tuple[str, str], int] = {}
        self._last_order_end: dict[str, int] = {}
        self._last_trade: dict[str, int] = {}
        self._churn: dict[str, deque[int]] = {}
        #: (userId, symbol) -> quantities of the account's last orders placed in the symbol
        self._order_sizes: dict[tuple[str, str], deque[float]] = {}
        self._running: dict[str, _Instance] = {}
        self._cycle: list[str] = []
        self._until_injection = self._injection_gap()
        self._finished: list[Label] = []
        self._schedule(config.start_ms + self._gap(config.rate_ms), _TRADE)
        if config.churn_ratio > 0:
            self._schedule(config.start_ms + self._gap(config.rate_ms / config.churn_ratio), _CHURN)

    # -- the stream ------------------------------------------------------------------------

    def events(self, max_trades: int | None = None) -> Iterator[Event]:
        """Events in time order until ``max_trades`` trades were made (forever without a limit).

        When the limit is reached, scenarios still running are labelled incomplete and every
        event already made is released.
        """
        while max_trades is None or self.stats.trades < max_trades:
            ts, _, kind, instance = heapq.heappop(self._steps)
            self.now = ts
            if kind == _TRADE:
                self._trade_arrival()
                self._schedule(ts + self._gap(self.config.rate_ms), _TRADE)
            elif kind == _CHURN:
                self._churn_arrival()
                self._schedule(ts + self._gap(self.config.rate_ms / self.config.churn_ratio), _CHURN)
            else:
                assert instance is not None
                self._advance(instance)
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

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, ts: int, kind: int, instance: _Instance | None = None) -> None:
        heapq.heappush(self._steps, (ts, next(self._seq), kind, instance))

    def _gap(self, mean_ms: float) -> int:
        return max(1, round(mean_ms * self._flow.uniform(0.7, 1.3)))

    def _injection_gap(self) -> int:
        return max(1, round(self.config.scenario_every * self._scenario_rng.uniform(0.5, 1.5)))

    # -- normal flow -----------------------------------------------------------------------

    def _trade_arrival(self) -> None:
        for _ in range(_ATTEMPTS):
            user = self.population.pick_active(self._flow)
            if user.user_id in self._busy:
                continue
            plan = self._draw(user)
            if plan is None or self.oracle.check(self._facts(plan, "candidate"), GUARD):
                continue
            self._normal_trade(plan)
            break
        else:
            self.stats.suppressed += 1
        self._until_injection -= 1
        if self._until_injection <= 0:
            self._until_injection = self._injection_gap()
            self._inject()

    def _draw(self, user: User) -> _Plan | None:
        rng = self._flow
        symbol = pick_symbol(rng, user)
        trade_limit, daily_limit = KYC_LIMITS[user.kyc_tier]
        room = min(
            0.85 * trade_limit,
            0.75 * large_order_threshold(symbol),
            0.85 * daily_limit - self.oracle.day_notional(user.user_id),
        )
        if room < 20.0:
            return None
        notional = heavy_tailed(rng, user.median_notional)
        if notional > room:
            notional = room * rng.uniform(0.3, 1.0)
        notional = max(notional, 10.0)
        sell = rng.random() < 0.5
        limit = rng.random() < user.limit_share
        mid = self.market.mid(symbol, self.now)
        # A limit order fills at or better than mid (it was resting); a market order pays spread.
        edge = rng.uniform(0.0, 0.0005) if limit else -rng.uniform(0.0001, 0.0006)
        price = self.market.round_price(symbol, mid * (1 + edge) if sell else mid * (1 - edge))
        quantity = self.market.quantity_for(symbol, notional, price)
        exchange = user.exchange if rng.random() < 0.8 else rng.choice(self.config.exchanges)
        return _Plan(
            user,
            symbol,
            sell,
            limit,
            price,
            quantity,
            notional_of(quantity, price),
            self._counterparty(user),
            exchange,
        )

    def _counterparty(self, user: User) -> str | None:
        rng = self._flow
        draw = rng.random()
        if draw < 0.15:
            return None
        for _ in range(4):
            other = rng.choice(self._makers) if draw < 0.75 else self.population.pick_active(rng)
            if not self.oracle.linked(user.user_id, other.user_id):
                return other.user_id
        return None

    def _normal_trade(self, plan: _Plan) -> None:
        rng = self._flow
        user_id = plan.user.user_id
        order_id = self._next_order_id()
        lead = 0
        if plan.limit:
            lead = min(rng.randint(200, LEAD_MS * 9 // 10), self.now - self._last_order_end.get(user_id, 0))
        partial = 0.0
        if lead >= 50:
            if rng.random() < 0.1:
                partial = self.market.round_quantity(plan.symbol, plan.quantity * rng.uniform(0.2, 1.0))
            size = plan.quantity + partial
            placed_at = self.now - lead
            if rng.random() < 0.15 and lead >= 400:
                # Placed less aggressively, then amended to the price it filled at.
                shift = rng.uniform(0.0005, 0.002)
                first = plan.price * (1 + shift) if plan.sell else plan.price * (1 - shift)
                self._order_event(
                    order_id,
                    plan,
                    "PLACED",
                    placed_at,
                    self.market.round_price(plan.symbol, first),
                    size,
                    size,
                )
                amended_at = placed_at + round(lead * rng.uniform(0.3, 0.8))
                self._order_event(order_id, plan, "AMENDED", amended_at, plan.price, size, size)
            else:
                self._order_event(order_id, plan, "PLACED", placed_at, plan.price, size, size)
        else:
            size = plan.quantity
            self._order_event(order_id, plan, "PLACED", self.now, plan.price, size, size)
        self._order_event(order_id, plan, "FILLED", self.now, plan.price, size, partial)
        self._emit_trade(plan, "LIMIT" if lead >= 50 else "MARKET", order_id)
        self._last_order_end[user_id] = self.now
        if partial:
            cancelled_at = self.now + rng.randint(500, 10_000)
            self._order_event(order_id, plan, "CANCELLED", cancelled_at, plan.price, size, partial)
            self._last_order_end[user_id] = cancelled_at
        self.stats.normal_trades += 1

    def _churn_arrival(self) -> None:
        rng = self._flow
        user = self.population.pick_active(rng, Role.MARKET_MAKER if rng.random() < 0.8 else None)
        user_id = user.user_id
        recent = self._churn.setdefault(user_id, deque())
        while recent and recent[0] < self.now - _CHURN_WINDOW_MS:
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
        plan = _Plan(
            user, symbol, sell, True, price, quantity, notional_of(quantity, price), None, user.exchange
        )
        order_id = self._next_order_id()
        placed_at = self.now - lead
        self._order_event(order_id, plan, "PLACED", placed_at, price, quantity, quantity)
        if rng.random() < 0.2:
            closer = mid * (1 + away / 2) if sell else mid * (1 - away / 2)
            at = placed_at + round(lead * rng.uniform(0.2, 0.8))
            self._order_event(
                order_id, plan, "AMENDED", at, self.market.round_price(symbol, closer), quantity, quantity
            )
        self._order_event(order_id, plan, "CANCELLED", self.now, price, quantity, quantity)
        self._last_order_end[user_id] = self.now
        recent.append(placed_at)
        self.stats.churn_orders += 1

    # -- events ----------------------------------------------------------------------------

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
        self,
        order_id: str,
        plan: _Plan,
        event_type: str,
        ts: int,
        price: float,
        quantity: float,
        remaining: float,
        instance: _Instance | None = None,
    ) -> None:
        event_id = f"E-{self.run_id}-{next(self._event_ids):09d}"
        if event_type == "PLACED":
            sizes = self._order_sizes.get((plan.user.user_id, plan.symbol))
            if sizes is None:
                sizes = self._order_sizes[(plan.user.user_id, plan.symbol)] = deque(maxlen=ORDER_SIZE_HISTORY)
            sizes.append(quantity)
        record = {
            "eventId": event_id,
            "orderId": order_id,
            "userId": plan.user.user_id,
            "symbol": plan.symbol,
            "side": _side(plan.sell),
            "eventType": event_type,
            "price": price,
            "quantity": quantity,
            "remainingQuantity": remaining,
            "timestamp": ts,
            "exchange": plan.exchange,
        }
        self._emit(
            Event(
                EventKind.ORDER,
                event_id,
                ts,
                plan.user.user_id,
                record,
                None if instance is None else instance.scenario.name,
                None if instance is None else instance.scenario_id,
            )
        )
        self.stats.order_events += 1
        if instance is not None:
            instance.order_event_ids.append(event_id)
            if order_id not in instance.order_ids:
                instance.order_ids.append(order_id)
            instance.end_ts = max(instance.end_ts, ts)

    def _facts(self, plan: _Plan, trade_id: str) -> TradeFacts:
        return TradeFacts(
            trade_id,
            plan.user.user_id,
            plan.symbol,
            plan.sell,
            plan.quantity,
            plan.notional,
            self.now,
            plan.counterparty,
        )

    def _emit_trade(
        self, plan: _Plan, order_type: str, order_id: str, instance: _Instance | None = None
    ) -> str:
        trade_id = f"T-{self.run_id}-{next(self._trade_ids):08d}"
        record = {
            "tradeId": trade_id,
            "userId": plan.user.user_id,
            "customerId": plan.user.customer_id,
            "symbol": plan.symbol,
            "side": _side(plan.sell),
            "quantity": plan.quantity,
            "price": plan.price,
            "notional": plan.notional,
            "timestamp": self.now,
            "exchange": plan.exchange,
            "orderType": order_type,
            "riskLevel": None,
            "counterpartyUserId": plan.counterparty,
            "orderId": order_id,
        }
        facts = self._facts(plan, trade_id)
        if instance is not None:
            for match in self.oracle.check(facts, SPEC):
                evidence, accounts = instance.witnessed.setdefault(match.pattern, ({}, {}))
                evidence.update(dict.fromkeys(match.evidence))
                accounts.update(
                    dict.fromkeys((plan.user.user_id, *([plan.counterparty] if plan.counterparty else [])))
                )
        self.oracle.record(facts)
        self._last_trade[plan.user.user_id] = self.now
        self._emit(
            Event(
                EventKind.TRADE,
                trade_id,
                self.now,
                plan.user.user_id,
                record,
                None if instance is None else instance.scenario.name,
                None if instance is None else instance.scenario_id,
            )
        )
        self.stats.trades += 1
        if instance is not None:
            instance.trade_ids.append(trade_id)
            instance.end_ts = max(instance.end_ts, self.now)
            self.stats.scenario_trades += 1
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

        def free(role: Role) -> list[User]:
            return [
                u
                for u in self.population.by_role[role]
                if u.user_id not in self._busy
                and self._rested_at.get(u.user_id, 0) <= self.now
                and self._cooldown.get((u.user_id, scenario.name), 0) <= self.now
            ]

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
            if not pool:
                return None
            chosen.append(rng.choice(quiet_first(pool)))
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
        if complete:
            self.stats.completed[scenario.name] += 1
        elif not instance.trade_ids and not instance.order_event_ids:
            return  # cut off before its first event: nothing to label
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
        rng = self._scenario_rng
        mid = self.market.mid(symbol, self.now)
        spread = rng.uniform(0.0001, 0.0006)
        if price is None:
            price = mid * (1 - spread) if sell else mid * (1 + spread)
        price = self.market.round_price(symbol, price)
        plan = _Plan(
            user,
            symbol,
            sell,
            False,
            price,
            quantity,
            notional_of(quantity, price),
            self._counterparty(user) if isinstance(counterparty, Auto) else counterparty,
            user.exchange,
        )
        order_id = self._next_order_id()
        self._order_event(order_id, plan, "PLACED", self.now, price, quantity, quantity, instance)
        self._order_event(order_id, plan, "FILLED", self.now, price, quantity, 0.0, instance)
        self._emit_trade(plan, "MARKET", order_id, instance)
        self._last_order_end[user.user_id] = self.now

    def _scenario_place(
        self, instance: _Instance, user: User, symbol: str, sell: bool, quantity: float, price: float
    ) -> _Order:
        order = _Order(
            self._next_order_id(),
            user,
            symbol,
            sell,
            quantity,
            self.market.round_price(symbol, price),
            user.exchange,
        )
        plan = _Plan(user, symbol, sell, True, order.price, quantity, 0.0, None, user.exchange)
        self._order_event(order.order_id, plan, "PLACED", self.now, order.price, quantity, quantity, instance)
        return order

    def _scenario_cancel(self, instance: _Instance, order: _Order) -> None:
        plan = _Plan(
            order.user, order.symbol, order.sell, True, order.price, order.quantity, 0.0, None, order.exchange
        )
        self._order_event(
            order.order_id, plan, "CANCELLED", self.now, order.price, order.quantity, order.quantity, instance
        )
        self._last_order_end[order.user.user_id] = self.now


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

    def pumpable(self) -> list[str]:
        return [s for s in self._sim.market.symbols if not self._sim.market.has_overlay(s)]

    def label_symbol(self, symbol: str) -> None:
        self._instance.symbol = symbol
