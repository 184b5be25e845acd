"""Labelled abuse scenarios: one injector per typology, and the registry the simulator draws from.

An injector is a generator function over a :class:`Venue`: it trades, places and cancels orders
*now* (simulated time) and yields how many milliseconds to wait before its next step. Each step
makes at most one trade, so a run can stop after exactly N trades. Every event an injector makes
carries the scenario's label. Sizes stay outside the structuring band (7,500-10,100 USD) and below
the large-order thresholds unless that is the point, so one scenario does not look like another;
whatever the oracle still finds besides the intended pattern is labelled as incidental. The benign
flow around the scenarios is not cleaned of patterns (see :mod:`riskengine.producer.simulator`):
its instances are counted, and alerts on them are the engine's false positives.

Each :meth:`Venue.trade` is one execution and makes two trade records: the scenario account's and
its counterparty's (an AUTO counterparty is a market maker's quote, or another account's resting
order; a named one, such as the linked account of a self trade or the other account of a round
trip, is part of the scenario). Both records belong to the scenario's label, so no injector emits
the other side of an execution itself.

Definitions (the typology tables of the README, "Detection core") and how each injector meets them:

==================  ===================  ===============================================================
scenario            pattern              what is injected
==================  ===================  ===============================================================
wash_trading        WASH_TRADING         BUY q, SELL q(1±8%), BUY q(1±8%) in one symbol within 55 s
volume_spike        VOLUME_SPIKE         3-5 trades, each 1.7-2.6x the previous notional, within 100 s
large_order         LARGE_ORDER          one whale trade of 1.1-3x the symbol's threshold
flash_crash         FLASH_CRASH          10-14 sells of one account within 4 minutes
spoofing            SPOOFING             5-7 small trades (history), a resting order 20-40x their size
                                         (and 15-30x the account's median order size in the symbol),
                                         an opposite-side fill, the big order cancelled 1-20 s later
layering            LAYERING             3-5 resting orders at 3-5 price levels on one side, an
                                         opposite-side fill, every layer cancelled within 10 s
quote_stuffing      QUOTE_STUFFING       520-650 orders inside one aligned 10-minute cycle, each
                                         cancelled within 0.6 s, none filled, nothing else that cycle
momentum_ignition   MOMENTUM_IGNITION    3-5 same-side market orders over 12-25 s while the price moves
                                         1.5-3 % their way, then the other side 20-100 s later
self_trade          SELF_TRADE           1-3 trades whose counterparty is the account or its linked one
round_trip_wash     ROUND_TRIP_WASH      A buys from B, B buys back within 90 s (±0.4%), 3-4 times in
                                         45 minutes
structuring         STRUCTURING          3-5 trades of 8,100-9,950 USD, 2-15 minutes apart
sanctioned_user     SANCTIONS_HIT        1-4 trades of a sanctioned profile or sanctioned-country account
kyc_limit_breach    KYC_LIMIT_BREACH     an unverified (tier 0) account trades 1,500-6,000 USD
pump_and_dump       PUMP_AND_DUMP        a ring of 3-5 accounts buys for 45 min while the symbol's
                                         price rises 25-35%, holds 5 min, sells for 45 min while it
                                         falls 22-30% from the peak; ring volume several times normal
                                         (after the run's first hour, at most 4 symbols at once)
price_crash         PRICE_CRASH          1-2 trades within 40 s at 0.55-0.68x or 1.35-1.6x the mid of a
                                         symbol no scenario moves, with 10+ executions in 5 minutes
==================  ===================  ===============================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from .oracle import HOUR_MS, MINUTE_MS, large_order_threshold
from .population import Role, User


class Auto(Enum):
    """Sentinel: let the venue choose (a market maker's quote, else another unlinked account's
    resting order; none only when nobody can take the trade)."""

    AUTO = "auto"


AUTO = Auto.AUTO


class OrderHandle(Protocol):
    """A resting order placed by a scenario."""

    @property
    def order_id(self) -> str:
        """The order's id."""


class Venue(Protocol):
    """What an injector may do; the simulator implements it with labelled events."""

    rng: random.Random
    users: Sequence[User]

    @property
    def now(self) -> int:
        """Simulated time of the current step, epoch ms."""

    @property
    def symbols(self) -> tuple[str, ...]:
        """The configured symbols."""

    def mid(self, symbol: str) -> float:
        """The symbol's mid price now."""

    def pick_symbol(self, user: User) -> str:
        """One of ``user``'s usual symbols."""

    def quantity_for(self, symbol: str, notional: float, price: float) -> float:
        """Lot-rounded quantity worth about ``notional``."""

    def round_quantity(self, symbol: str, quantity: float) -> float:
        """``quantity`` on the lot size."""

    def median_order_size(self, user: User, symbol: str) -> float | None:
        """The median quantity of ``user``'s last 32 orders in ``symbol`` (None: fewer than 5)."""

    def trade(
        self,
        user: User,
        symbol: str,
        sell: bool,
        quantity: float,
        counterparty: str | Auto | None = AUTO,
        price: float | None = None,
    ) -> None:
        """A market order filled at once: PLACED, FILLED and the execution's two trade records, now
        (at ``price``, else at the best quote of a market maker that can take it whole)."""

    def place(self, user: User, symbol: str, sell: bool, quantity: float, price: float) -> OrderHandle:
        """A resting limit order (PLACED, now)."""

    def cancel(self, order: OrderHandle) -> None:
        """Cancel a resting order, unfilled (CANCELLED, now)."""

    def set_overlay(self, symbol: str, overlay: Callable[[int], float]) -> None:
        """Move ``symbol``'s price by ``overlay(now)`` for everyone until :meth:`settle_overlay`."""

    def settle_overlay(self, symbol: str) -> None:
        """Keep the overlay's current level and remove it."""

    def pumpable(self) -> list[str]:
        """Symbols no other scenario is moving (nor pumped in the last 5 hours)."""

    def executions(self, symbol: str) -> int:
        """The symbol's executions in the last 5 minutes."""

    def label_symbol(self, symbol: str) -> None:
        """Record the symbol the scenario is about."""


Injector = Callable[[Venue], Iterator[int]]


@dataclass(frozen=True)
class Scenario:
    """A registered scenario: its pattern, the accounts it needs, its cooldown and its injector.

    ``cooldown_ms`` keeps an account out of the same scenario for longer than the engine merges
    alerts of that pattern (e.g. 24 h for STRUCTURING), so each instance can raise its own alert.
    ``ring`` asks for that many ABUSER accounts instead of ``roles``; a scenario that
    ``moves_market`` runs only while no other one moves a price; ``with_linked`` takes the chosen
    accounts' linked accounts into the scenario too (they are its counterparties).
    """

    name: str
    pattern: str
    roles: tuple[Role, ...]
    cooldown_ms: int
    run: Injector
    ring: tuple[int, int] | None = None
    moves_market: bool = False
    with_linked: bool = False


def _outside_band(rng: random.Random, low: float, high: float) -> float:
    """A notional in [low, high] but not in 7,000-11,000 USD (near the structuring band)."""
    while True:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
        if not 7_000.0 <= value <= 11_000.0:
            return value


def _side(rng: random.Random) -> bool:
    return rng.random() < 0.5


def wash_trading(venue: Venue) -> Iterator[int]:
    """BUY -> SELL -> BUY of about one quantity in one symbol within a minute."""
    rng, user = venue.rng, venue.users[0]
    symbol = venue.pick_symbol(user)
    venue.label_symbol(symbol)
    first = venue.quantity_for(symbol, _outside_band(rng, 1_000.0, 40_000.0), venue.mid(symbol))
    venue.trade(user, symbol, False, first)
    yield rng.randint(5_000, 25_000)
    venue.trade(user, symbol, True, venue.round_quantity(symbol, first * (1 + rng.uniform(-0.08, 0.08))))
    yield rng.randint(5_000, 25_000)
    venue.trade(user, symbol, False, venue.round_quantity(symbol, first * (1 + rng.uniform(-0.08, 0.08))))


def volume_spike(venue: Venue) -> Iterator[int]:
    """3-5 consecutive trades, each at least 1.7x the previous notional, within 100 s."""
    rng, user = venue.rng, venue.users[0]
    count = rng.choice((3, 3, 4, 5))
    symbols = [venue.pick_symbol(user) for _ in range(count)]
    notionals = [rng.uniform(300.0, 3_000.0)]
    for _ in range(count - 1):
        notionals.append(notionals[-1] * rng.uniform(1.7, 2.6))
    cap = 0.7 * min(large_order_threshold(s) for s in symbols)
    if notionals[-1] > cap:
        notionals = [n * cap / notionals[-1] for n in notionals]
    gap = 100_000 // (count - 1)
    for position, (symbol, notional) in enumerate(zip(symbols, notionals, strict=True)):
        if position:
            yield rng.randint(3_000, gap)
        venue.trade(user, symbol, _side(rng), venue.quantity_for(symbol, notional, venue.mid(symbol)))


def large_order(venue: Venue) -> Iterator[int]:
    """One trade above the symbol's LARGE_ORDER threshold."""
    rng, user = venue.rng, venue.users[0]
    symbol = venue.pick_symbol(user)
    venue.label_symbol(symbol)
    notional = large_order_threshold(symbol) * rng.uniform(1.1, 3.0)
    venue.trade(user, symbol, _side(rng), venue.quantity_for(symbol, notional, venue.mid(symbol)))
    yield from ()


def flash_crash(venue: Venue) -> Iterator[int]:
    """10-14 sells of one account in one symbol within 4 minutes."""
    rng, user = venue.rng, venue.users[0]
    symbol = venue.pick_symbol(user)
    venue.label_symbol(symbol)
    count = rng.randint(10, 14)
    base = rng.uniform(500.0, 6_000.0)
    offsets = sorted(rng.randint(0, 240_000) for _ in range(count))
    for position, offset in enumerate(offsets):
        if position:
            yield offset - offsets[position - 1]
        notional = base * rng.uniform(0.85, 1.15)
        venue.trade(user, symbol, True, venue.quantity_for(symbol, notional, venue.mid(symbol)))


def spoofing(venue: Venue) -> Iterator[int]:
    """Order history, a large resting order, an opposite-side fill, the large order cancelled."""
    rng, user = venue.rng, venue.users[0]
    symbol = venue.pick_symbol(user)
    venue.label_symbol(symbol)
    fill_sell = _side(rng)
    size = min(user.median_notional, 6_000.0)
    # The history that sets the account's median order size in the symbol.
    for _ in range(rng.randint(5, 7)):
        venue.trade(
            user,
            symbol,
            fill_sell,
            venue.quantity_for(symbol, size * rng.uniform(0.8, 1.25), venue.mid(symbol)),
        )
        yield rng.randint(20_000, 60_000)
    mid = venue.mid(symbol)
    away = rng.uniform(0.002, 0.006)
    spoof_price = mid * (1 + away) if not fill_sell else mid * (1 - away)
    bait = venue.quantity_for(symbol, size * rng.uniform(20.0, 40.0), mid)
    # Earlier orders of the account in the symbol count in its median too: stay well above 10x it.
    usual = venue.median_order_size(user, symbol)
    if usual is not None:
        bait = max(bait, venue.round_quantity(symbol, usual * rng.uniform(15.0, 30.0)))
    spoof = venue.place(user, symbol, not fill_sell, bait, spoof_price)
    yield rng.randint(1_000, 5_000)
    venue.trade(
        user, symbol, fill_sell, venue.quantity_for(symbol, size * rng.uniform(0.8, 1.25), venue.mid(symbol))
    )
    yield rng.randint(1_000, 20_000)
    venue.cancel(spoof)


def layering(venue: Venue) -> Iterator[int]:
    """Resting orders at several levels on one side, an opposite fill, the layers cancelled."""
    rng, user = venue.rng, venue.users[0]
    symbol = venue.pick_symbol(user)
    venue.label_symbol(symbol)
    layers_sell = _side(rng)
    size = min(user.median_notional, 6_000.0)
    mid = venue.mid(symbol)
    step = rng.uniform(0.0008, 0.002)
    layers = []
    # Layers are ordinary-sized: at most 3x the account's median order size (no layer is a spoof bait).
    usual = venue.median_order_size(user, symbol)
    for level in range(1, rng.randint(3, 5) + 1):
        price = mid * (1 + level * step) if layers_sell else mid * (1 - level * step)
        quantity = venue.quantity_for(symbol, size * rng.uniform(1.0, 3.0), price)
        if usual is not None:
            quantity = min(quantity, venue.round_quantity(symbol, usual * rng.uniform(1.0, 3.0))) or quantity
        layers.append(venue.place(user, symbol, layers_sell, quantity, price))
        yield rng.randint(100, 1_500)
    yield rng.randint(500, 4_000)
    venue.trade(user, symbol, not layers_sell, venue.quantity_for(symbol, size, venue.mid(symbol)))
    for layer in layers:
        yield rng.randint(300, 2_000)
        venue.cancel(layer)


def quote_stuffing(venue: Venue) -> Iterator[int]:
    """Hundreds of orders, each cancelled within a second, inside one aligned 10-minute cycle."""
    rng, user = venue.rng, venue.users[0]
    symbol = venue.pick_symbol(user)
    venue.label_symbol(symbol)
    cycle = 10 * MINUTE_MS
    # Start just after a cycle boundary so the burst (about 5 minutes) lies inside one cycle.
    cycle_end = (venue.now // cycle + 2) * cycle
    yield cycle_end - cycle - venue.now + rng.randint(0, 30_000)
    size = min(user.median_notional, 6_000.0) / 4
    for position in range(rng.randint(520, 650)):
        if position:
            yield rng.randint(50, 250)
        sell = _side(rng)
        mid = venue.mid(symbol)
        away = rng.uniform(0.0005, 0.003)
        price = mid * (1 + away) if sell else mid * (1 - away)
        order = venue.place(user, symbol, sell, venue.quantity_for(symbol, size, price), price)
        yield rng.randint(20, 600)
        venue.cancel(order)
    # Keep the account busy to the end of the cycle: its normal trading must not dilute the ratios.
    yield cycle_end - venue.now


def momentum_ignition(venue: Venue) -> Iterator[int]:
    """A burst of same-side market orders that moves the price their way, then the other side."""
    rng, user = venue.rng, venue.users[0]
    candidates = venue.pumpable()
    if not candidates:  # every symbol is being moved: nothing to ignite (no label)
        return
    preferred = [s for s in candidates if s in user.symbols]
    symbol = rng.choice(preferred or candidates)
    venue.label_symbol(symbol)
    sell = _side(rng)
    move = rng.uniform(0.015, 0.03) * (-1 if sell else 1)
    count = rng.randint(3, 5)
    span = rng.randint(12_000, 25_000)
    start = venue.now

    def overlay(now: int) -> float:
        return 1 + move * min(1.0, (now - start) / span)

    venue.set_overlay(symbol, overlay)
    size = min(user.median_notional, 6_000.0)
    for step in range(count):
        if step:
            yield span // (count - 1)
        notional = size * rng.uniform(0.8, 1.25)
        venue.trade(user, symbol, sell, venue.quantity_for(symbol, notional, venue.mid(symbol)))
    yield rng.randint(20_000, 100_000)
    notional = size * rng.uniform(0.8, 1.25)
    venue.trade(user, symbol, not sell, venue.quantity_for(symbol, notional, venue.mid(symbol)))
    venue.settle_overlay(symbol)


def self_trade(venue: Venue) -> Iterator[int]:
    """Trades whose counterparty is the account itself or its linked account."""
    rng, user = venue.rng, venue.users[0]
    partners = (user.user_id, *user.linked_accounts)
    for position in range(rng.randint(1, 3)):
        if position:
            yield rng.randint(30_000, 120_000)
        symbol = venue.pick_symbol(user)
        notional = _outside_band(rng, 200.0, 6_000.0)
        quantity = venue.quantity_for(symbol, notional, venue.mid(symbol))
        venue.trade(user, symbol, _side(rng), quantity, counterparty=rng.choice(partners))


def round_trip_wash(venue: Venue) -> Iterator[int]:
    """A buys from B, B buys the same quantity back from A; 3-4 times within 45 minutes."""
    rng = venue.rng
    first, second = venue.users[0], venue.users[1]
    symbol = venue.pick_symbol(first)
    venue.label_symbol(symbol)
    trips = rng.randint(3, 4)
    for trip in range(trips):
        notional = _outside_band(rng, 2_000.0, 30_000.0)
        quantity = venue.quantity_for(symbol, notional, venue.mid(symbol))
        venue.trade(first, symbol, False, quantity, counterparty=second.user_id)
        yield rng.randint(20_000, 90_000)
        back = venue.round_quantity(symbol, quantity * (1 + rng.uniform(-0.004, 0.004)))
        venue.trade(second, symbol, False, back, counterparty=first.user_id)
        if trip < trips - 1:
            yield rng.randint(5 * MINUTE_MS, 12 * MINUTE_MS)


def structuring(venue: Venue) -> Iterator[int]:
    """3-5 trades each just below the 10,000 USD reporting threshold, minutes apart."""
    rng, user = venue.rng, venue.users[0]
    for position in range(rng.randint(3, 5)):
        if position:
            yield rng.randint(2 * MINUTE_MS, 15 * MINUTE_MS)
        symbol = venue.pick_symbol(user)
        mid = venue.mid(symbol)
        quantity = venue.quantity_for(symbol, rng.uniform(8_100.0, 9_950.0), mid)
        venue.trade(user, symbol, _side(rng), quantity)


def sanctioned_user(venue: Venue) -> Iterator[int]:
    """A few ordinary-looking trades by a sanctioned account (flagged profile or country)."""
    rng, user = venue.rng, venue.users[0]
    for position in range(rng.randint(1, 4)):
        if position:
            yield rng.randint(30_000, 300_000)
        symbol = venue.pick_symbol(user)
        notional = _outside_band(rng, 50.0, 5_000.0)
        venue.trade(user, symbol, _side(rng), venue.quantity_for(symbol, notional, venue.mid(symbol)))


def kyc_limit_breach(venue: Venue) -> Iterator[int]:
    """An unverified account trades above its per-trade limit, once or twice."""
    rng, user = venue.rng, venue.users[0]
    for position in range(rng.choice((1, 2))):
        if position:
            yield rng.randint(MINUTE_MS, 5 * MINUTE_MS)
        symbol = venue.pick_symbol(user)
        notional = rng.uniform(1_500.0, 6_000.0)
        venue.trade(user, symbol, _side(rng), venue.quantity_for(symbol, notional, venue.mid(symbol)))


def price_crash(venue: Venue) -> Iterator[int]:
    """A trade far from the market (a fat finger, or a sale that knocks the price down), once or twice."""
    rng, user = venue.rng, venue.users[0]
    candidates = venue.pumpable() or list(venue.symbols)
    # A symbol trading enough for an average price (PRICE_CRASH needs 5 executions in 5 minutes).
    active = [s for s in candidates if venue.executions(s) >= 10]
    symbol = rng.choice(active or candidates)
    venue.label_symbol(symbol)
    low = rng.random() < 0.5
    factor = rng.uniform(0.55, 0.68) if low else rng.uniform(1.35, 1.6)
    for position in range(rng.choice((1, 2))):
        if position:
            yield rng.randint(5_000, 40_000)
        price = venue.mid(symbol) * factor
        quantity = venue.quantity_for(symbol, _outside_band(rng, 300.0, 6_000.0), price)
        venue.trade(user, symbol, low, quantity, price=price)


def pump_and_dump(venue: Venue) -> Iterator[int]:
    """A ring buys while the symbol's price climbs, then sells into the fall."""
    rng, ring = venue.rng, venue.users
    candidates = venue.pumpable()
    if not candidates:  # every symbol moved or pumped lately: nothing to pump (no label)
        return
    minor = [s for s in candidates if s.partition("/")[0] not in ("BTC", "ETH")]
    symbol = rng.choice(minor or candidates)
    venue.label_symbol(symbol)
    rise, hold, dump = 45 * MINUTE_MS, 5 * MINUTE_MS, 45 * MINUTE_MS
    peak = math.log(rng.uniform(1.25, 1.35))
    trough = peak + math.log(rng.uniform(0.70, 0.78))
    start = venue.now

    def overlay(now: int) -> float:
        elapsed = now - start
        if elapsed <= rise:
            return math.exp(peak * elapsed / rise)
        if elapsed <= rise + hold:
            return math.exp(peak)
        fall = min(1.0, (elapsed - rise - hold) / dump)
        return math.exp(peak + (trough - peak) * fall)

    venue.set_overlay(symbol, overlay)
    # Members take turns, so each trades at most every 45 s: no member reaches 10 sells in 5 min.
    base = [rng.uniform(30_000.0, 60_000.0) for _ in ring]
    turn = 0
    for sell, until in ((False, start + rise), (True, start + rise + hold + dump)):
        if sell:
            yield hold
        while venue.now < until:
            member = turn % len(ring)
            turn += 1
            notional = base[member] * rng.uniform(0.85, 1.15)
            venue.trade(ring[member], symbol, sell, venue.quantity_for(symbol, notional, venue.mid(symbol)))
            yield rng.randint(15_000, 25_000)
    venue.settle_overlay(symbol)


_SHORT = 30 * MINUTE_MS
_DAY_PLUS = 25 * HOUR_MS

#: Every scenario by name, in the order of the typology tables.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("volume_spike", "VOLUME_SPIKE", (Role.ABUSER,), _SHORT, volume_spike),
        Scenario("wash_trading", "WASH_TRADING", (Role.ABUSER,), _SHORT, wash_trading),
        Scenario("large_order", "LARGE_ORDER", (Role.WHALE,), _SHORT, large_order),
        Scenario("flash_crash", "FLASH_CRASH", (Role.ABUSER,), _SHORT, flash_crash),
        Scenario("self_trade", "SELF_TRADE", (Role.LINKED,), _SHORT, self_trade, with_linked=True),
        Scenario(
            "round_trip_wash", "ROUND_TRIP_WASH", (Role.ABUSER, Role.ABUSER), 2 * HOUR_MS, round_trip_wash
        ),
        Scenario("spoofing", "SPOOFING", (Role.ABUSER,), _SHORT, spoofing),
        Scenario("layering", "LAYERING", (Role.ABUSER,), _SHORT, layering),
        Scenario("quote_stuffing", "QUOTE_STUFFING", (Role.ABUSER,), _SHORT, quote_stuffing),
        # Moves only the price of its own symbol, one no other scenario is moving.
        Scenario("momentum_ignition", "MOMENTUM_IGNITION", (Role.ABUSER,), _SHORT, momentum_ignition),
        Scenario(
            "pump_and_dump", "PUMP_AND_DUMP", (), 12 * HOUR_MS, pump_and_dump, ring=(3, 5), moves_market=True
        ),
        Scenario("price_crash", "PRICE_CRASH", (Role.ABUSER,), _SHORT, price_crash),
        Scenario("structuring", "STRUCTURING", (Role.ABUSER,), _DAY_PLUS, structuring),
        Scenario("sanctioned_user", "SANCTIONS_HIT", (Role.SANCTIONED,), 2 * HOUR_MS, sanctioned_user),
        Scenario("kyc_limit_breach", "KYC_LIMIT_BREACH", (Role.TIER0,), _DAY_PLUS, kyc_limit_breach),
    )
}

#: Patterns whose definitions the oracle checks, so their labels can be verified.
VERIFIABLE = frozenset(
    {
        "VOLUME_SPIKE",
        "WASH_TRADING",
        "LARGE_ORDER",
        "FLASH_CRASH",
        "SELF_TRADE",
        "ROUND_TRIP_WASH",
        "STRUCTURING",
        "SANCTIONS_HIT",
        "KYC_LIMIT_BREACH",
    }
)


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``all``, ``none`` (or empty) or comma-separated names -> names; ValueError names an unknown one."""
    value = text.strip().lower()
    if value == "all":
        return tuple(SCENARIOS)
    if value in ("none", ""):
        return ()
    names = [part.strip() for part in value.split(",") if part.strip()]
    for name in names:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)}, all, none)")
    return tuple(dict.fromkeys(names))
