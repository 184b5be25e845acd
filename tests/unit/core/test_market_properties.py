"""Properties of the market and account-pair cores.

Determinism (across hash seeds too), states through their table encoding, arrival order and the
twin records of an execution, bounded state over long streams, re-delivery; oracles for the market
context a new minute publishes, the off-market rule, the contexts' staleness bound and the
partition clocks; the state decoders on damaged bytes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from riskengine.core import DEFAULT_RULES, PatternType, ReferenceData, RiskAlert, Side, Trade, UserProfile
from riskengine.core.account_pairs import (
    MAX_LEGS,
    MAX_TRIPS,
    PairState,
    PairStateFormatError,
    decode_pair_state,
    encode_pair_state,
    evaluate_pair_trade,
    owner_of,
    pair_key,
)
from riskengine.core.executions import buyer_and_seller, execution_key
from riskengine.core.market import (
    BAR_MS,
    BUCKET_MS,
    TOP_ACCOUNTS,
    MarketContext,
    MarketState,
    MarketStateFormatError,
    close_minute,
    decode_market_state,
    encode_market_state,
    evaluate_market_trade,
    market_context,
)
from riskengine.core.market_feed import CrossAccountRun, PartitionClocks, evaluate_cross_account, market_order
from riskengine.core.rules import HOUR_MS

from .builders import HOUR, MINUTE, SECOND, T0

RULES = DEFAULT_RULES
SYMBOLS = ("ADA/USDT", "SOL/USDT", "BTC/USDT")
ACCOUNTS = tuple(f"u-{n}" for n in range(10))
# Owners of every kind: two accounts of one customer (u-0, u-1), accounts linked both ways (u-2,
# u-3), a link to an account without a profile (u-4 -> u-9), plain profiles, no profile (u-6..u-9).
REF = ReferenceData(
    profiles={
        "u-0": UserProfile("u-0", "c-0", 3, "DE"),
        "u-1": UserProfile("u-1", "c-0", 3, "DE"),
        "u-2": UserProfile("u-2", "c-2", 3, "DE", linked_accounts=frozenset({"u-3"})),
        "u-3": UserProfile("u-3", "c-3", 3, "FR", linked_accounts=frozenset({"u-2"})),
        "u-4": UserProfile("u-4", "c-4", 2, "DE", linked_accounts=frozenset({"u-9"})),
        "u-5": UserProfile("u-5", "c-5", 1, "NL"),
    }
)
#: The bound the encoded market state of a symbol stays under.
MARKET_STATE_BYTES = 64 * 1024


# --- records -------------------------------------------------------------------------------------


def make(
    number: int,
    at: int,
    symbol: str,
    price: float,
    quantity: float,
    user: str,
    side: Side,
    counterparty: str | None,
) -> Trade:
    """One trade record; ids ``t000000`` sort in generation order."""
    return Trade(
        trade_id=f"t{number:06d}",
        user_id=user,
        customer_id=f"c-{user}",
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        notional=quantity * price,
        timestamp=at,
        exchange="X",
        order_type="LIMIT",
        counterparty_user_id=counterparty,
    )


def twin(record: Trade, trade_id: str) -> Trade:
    """The other side's record of ``record``'s execution, with its own id."""
    assert record.counterparty_user_id is not None
    return replace(
        record,
        trade_id=trade_id,
        user_id=record.counterparty_user_id,
        customer_id=f"c-{record.counterparty_user_id}",
        side=Side.SELL if record.side is Side.BUY else Side.BUY,
        counterparty_user_id=record.user_id,
    )


def twin_after(record: Trade) -> Trade:
    """A twin whose id sorts right after its original's (``t000012-twin``)."""
    return twin(record, record.trade_id + "-twin")


def twin_before(record: Trade) -> Trade:
    """A twin whose id sorts before every original's at its millisecond (``s000012``)."""
    return twin(record, "s" + record.trade_id[1:])


def one_side_per_key(records: Iterable[Trade]) -> list[Trade]:
    """Drop records that the ledger would take for the twin of an earlier one (same execution key,
    the other side): what is left are distinct executions, each reported once."""
    sides: dict[tuple[Any, ...], Side] = {}
    return [r for r in records if sides.setdefault(execution_key(r), r.side) is r.side]


@st.composite
def streams(draw: st.DrawFn, max_segments: int = 18) -> list[Trade]:
    """Distinct executions of a few symbols, one record each, in market order.

    Segments: steady trading (bursts in one millisecond, seconds, minutes apart; volume up to 30x),
    price moves, fat fingers, idle gaps of up to 30 hours, round trips between two accounts (within
    and beyond the leg window and the quantity tolerance), pumps and dumps (enough or not)."""
    clock = T0 + draw(st.integers(0, HOUR))
    prices = dict.fromkeys(SYMBOLS, 100.0)
    numbers = itertools.count()
    records: list[Trade] = []

    def add(symbol: str, price: float, quantity: float, buyer: str, seller: str | None) -> None:
        if seller is not None and draw(st.booleans()):
            records.append(make(next(numbers), clock, symbol, price, quantity, seller, Side.SELL, buyer))
        else:
            records.append(make(next(numbers), clock, symbol, price, quantity, buyer, Side.BUY, seller))

    symbol = SYMBOLS[0]
    for _segment in range(draw(st.integers(0, max_segments))):
        kind = draw(st.sampled_from(["steady", "steady", "steady", "move", "fat", "gap", "wash", "pump"]))
        # Mostly the symbol of the segment before: patterns build up over several segments.
        symbol = draw(st.sampled_from([symbol, symbol, *SYMBOLS]))
        if kind == "steady":
            size = draw(st.sampled_from([1.0, 4.0, 30.0]))
            pace = draw(st.sampled_from([1, 700, 5 * SECOND, 20 * SECOND, 61 * SECOND]))
            for _ in range(draw(st.integers(1, 12))):
                clock += draw(st.sampled_from([pace, pace, pace, 0]))
                prices[symbol] *= draw(st.sampled_from([0.99, 1.0, 1.0, 1.01]))
                quantity = size * draw(st.sampled_from([1.0, 10.0, 10.05]))
                buyer = draw(st.sampled_from(ACCOUNTS))
                seller = draw(st.sampled_from((None, *ACCOUNTS)))
                add(symbol, prices[symbol], quantity, buyer, seller)
        elif kind == "move":
            prices[symbol] *= draw(st.sampled_from([0.5, 0.8, 0.84, 1.1, 1.25, 2.0]))
        elif kind == "fat":
            clock += draw(st.sampled_from([0, 1, 5 * SECOND, 10 * SECOND]))
            price = prices[symbol] * draw(st.sampled_from([0.5, 0.65, 1.35, 1.6]))
            quantity = draw(st.sampled_from([0.1, 1.0, 10.0]))
            add(symbol, price, quantity, draw(st.sampled_from(ACCOUNTS)), draw(st.sampled_from(ACCOUNTS)))
        elif kind == "pump":
            # Light trading for half an hour or more, a climb on volume, a fall (each enough or not).
            climb = draw(st.sampled_from([1.02, 1.05]))
            fall = draw(st.sampled_from([0.97, 0.9]))
            size = draw(st.sampled_from([1.0, 30.0]))
            steps = [(5 * MINUTE, 1.0, 1.0)] * draw(st.integers(6, 14))
            steps += [(MINUTE, climb, size)] * 6 + [(2 * MINUTE, fall, size)] * 4
            for pace, move, volume in steps:
                clock += pace
                prices[symbol] *= move
                buyer, seller = draw(st.sampled_from(ACCOUNTS)), draw(st.sampled_from(ACCOUNTS))
                add(symbol, prices[symbol], 10.0 * volume, buyer, seller)
        elif kind == "gap":
            clock += draw(st.sampled_from([5 * MINUTE, 20 * MINUTE, HOUR, 5 * HOUR, 13 * HOUR, 30 * HOUR]))
        else:
            first, second = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
            quantity = draw(st.sampled_from([5.0, 100.0]))
            for _ in range(draw(st.integers(1, 4))):
                add(symbol, prices[symbol], quantity, first, second)
                clock += draw(st.sampled_from([30 * SECOND, 90 * SECOND, 2 * MINUTE + 1]))
                back = quantity * (1 + draw(st.sampled_from([0.0, 0.005, -0.009, 0.02])))
                add(symbol, prices[symbol], back, second, first)
                clock += draw(st.sampled_from([MINUTE, 10 * MINUTE, 25 * MINUTE]))
    return one_side_per_key(records)


@st.composite
def streams_with_twins(draw: st.DrawFn, placements: Sequence[str] = ("after", "before")) -> list[Trade]:
    """A stream plus the twin record of some executions (placed after or before the original)."""
    records = draw(streams())
    twins = []
    for record in records:
        if record.counterparty_user_id is None:
            continue
        placement = draw(st.sampled_from(("none", *placements)))
        if placement == "after":
            twins.append(twin_after(record))
        elif placement == "before":
            twins.append(twin_before(record))
    return sorted(records + twins, key=market_order)


# --- the cores, record by record -----------------------------------------------------------------


class Outcome(NamedTuple):
    """What one record did: applied to its market, counted there (a new execution), applied to its
    pair (None: no pair), the alerts, the market context it published."""

    market: bool
    counted: bool
    pair: bool | None
    alerts: tuple[RiskAlert, ...]
    contexts: tuple[MarketContext, ...]


@dataclass
class Cores:
    """The market and pair states, fed record by record as the worker's agents feed them."""

    markets: dict[str, MarketState] = field(default_factory=dict)
    pairs: dict[str, PairState] = field(default_factory=dict)

    def apply(self, record: Trade) -> Outcome:
        market = self.markets.get(record.symbol)
        if market is None:
            market = self.markets[record.symbol] = MarketState()
        outcome = evaluate_market_trade(market, record, RULES)
        pair = pair_key(REF, record, DEFAULT_RULES)
        if pair is None:
            return Outcome(outcome.applied, outcome.counted, None, outcome.alerts, outcome.contexts)
        state = self.pairs.get(pair)
        if state is None:
            state = self.pairs[pair] = PairState()
        buyer = owner_of(REF, buyer_and_seller(record)[0] or "")
        paired = evaluate_pair_trade(state, record, buyer, pair, RULES)
        alerts = outcome.alerts + paired.alerts
        return Outcome(outcome.applied, outcome.counted, paired.applied, alerts, outcome.contexts)

    def feed(self, records: Iterable[Trade]) -> list[tuple[RiskAlert, ...]]:
        return [self.apply(record).alerts for record in records]

    def finish(self) -> None:
        """Close each symbol's last minute, as the end of a cross-account run does."""
        for symbol, market in self.markets.items():
            close_minute(market, symbol, float("inf"), RULES)

    def encoded(self) -> dict[str, bytes]:
        return {
            **{f"market {s}": encode_market_state(m) for s, m in self.markets.items()},
            **{f"pair {p}": encode_pair_state(s) for p, s in self.pairs.items()},
        }

    def reload(self) -> None:
        """Every state through its table encoding."""
        self.markets = {s: decode_market_state(encode_market_state(m)) for s, m in self.markets.items()}
        self.pairs = {p: decode_pair_state(encode_pair_state(s)) for p, s in self.pairs.items()}


def encoded_run(run: CrossAccountRun) -> tuple[dict[str, bytes], dict[str, bytes]]:
    return (
        {s: encode_market_state(m) for s, m in run.markets.items()},
        {p: encode_pair_state(s) for p, s in run.pairs.items()},
    )


def scored_against(run: CrossAccountRun, records: Iterable[Trade]) -> list[MarketContext | None]:
    """The market context each record's trade is scored against."""
    return [run.contexts.for_trade(r.symbol, r.timestamp, RULES.market_lateness_ms) for r in records]


def flat(alerts: Iterable[tuple[RiskAlert, ...]]) -> list[RiskAlert]:
    return [alert for group in alerts for alert in group]


def alert_figures(alert: RiskAlert) -> tuple[Any, ...]:
    """An alert without the record ids (its id and evidence name the records that were counted)."""
    return (
        alert.pattern,
        alert.symbol,
        alert.user_id,
        alert.severity,
        alert.timestamp,
        len(alert.evidence),
        alert.features,
    )


def market_figures(state: MarketState, *, ids: bool) -> tuple[Any, ...]:
    """What a market state says about the market: without the record bookkeeping (last record,
    ledger, twins) and, unless ``ids``, without record ids."""
    bars = [
        (b.start, b.high, b.low, b.close, b.notional, b.base_mean, b.base_std, b.base_bars)
        + ((b.high_id, b.low_id) if ids else ())
        for b in state.bars
    ]
    pump = state.pump
    rise: tuple[Any, ...] | None = None
    if pump is not None:
        rise = (pump.low_time, pump.low, pump.peak_time, pump.peak, pump.zscore)
        rise += (pump.low_id, pump.peak_id) if ids else ()
    volume = (state.volume_mean, state.volume_var, state.volume_bars)
    return (state.last_time, state.buckets, bars, volume, state.accounts, rise, state.fired, state.executions)


def pair_figures(state: PairState, *, ids: bool) -> tuple[Any, ...]:
    """What a pair state says about the pair, without the last record and ledger (and ids)."""

    def rows(table: dict[str, list[list[Any]]], id_columns: set[int]) -> dict[str, list[list[Any]]]:
        return {
            symbol: [[v for i, v in enumerate(row) if ids or i not in id_columns] for row in kept]
            for symbol, kept in table.items()
        }

    return (state.last_time, rows(state.legs, {3}), rows(state.trips, {1, 2}), state.fired)


# --- 1. determinism ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(streams_with_twins(), st.randoms(use_true_random=False))
def test_the_same_input_gives_the_same_alerts_and_state_bytes(
    records: list[Trade], rng: random.Random
) -> None:
    # Some records out of order: the cores ignore them, the same way each time.
    arrival = list(records)
    for _ in range(len(arrival) // 10):
        i, j = rng.randrange(len(arrival)), rng.randrange(len(arrival))
        arrival[i], arrival[j] = arrival[j], arrival[i]
    first, second = Cores(), Cores()
    assert first.feed(arrival) == second.feed(arrival)
    assert first.encoded() == second.encoded()
    once = evaluate_cross_account(arrival, REF, RULES)
    again = evaluate_cross_account(arrival, REF, RULES)
    assert once.alerts == again.alerts and once.executions == again.executions
    assert encoded_run(once) == encoded_run(again)
    assert scored_against(once, arrival) == scored_against(again, arrival)
    # The cross-account run is the cores fed in market order.
    ordered = Cores()
    assert flat(ordered.feed(sorted(arrival, key=market_order))) == once.alerts
    ordered.finish()
    markets, pairs = encoded_run(once)
    assert ordered.encoded() == {
        **{f"market {s}": m for s, m in markets.items()},
        **{f"pair {p}": s for p, s in pairs.items()},
    }


_HASH_SEED_SCRIPT = """
import hashlib, sys
from tests.unit.core.test_market_properties import REF, RULES, encoded_run, long_stream
from riskengine.core.market_feed import evaluate_cross_account
run = evaluate_cross_account(long_stream(7, 1_500, 60, 20), REF, RULES)
digest = hashlib.sha256(repr(run.alerts).encode())
for states in encoded_run(run):
    for key in sorted(states):
        digest.update(key.encode() + states[key])
print(digest.hexdigest(), len(run.alerts))
"""


def test_alerts_and_states_do_not_depend_on_the_hash_seed() -> None:
    # The worker and `riskengine replay` run in different processes: set or dict-of-str iteration
    # order must not leak into alerts or states.
    root = Path(__file__).resolve().parents[3]
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _HASH_SEED_SCRIPT],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(done.stdout.strip())
    assert outputs[0] == outputs[1]
    assert int(outputs[0].split()[1]) > 0, "the stream raises alerts"


# --- 2. persistence ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(streams_with_twins(), st.sets(st.integers(0, 320), max_size=4), st.booleans())
def test_states_through_their_encoding_behave_like_the_ones_in_memory(
    records: list[Trade], cuts: set[int], every: bool
) -> None:
    kept, stored = Cores(), Cores()
    cuts = {cut % len(records) for cut in cuts} if records else set()
    first = min(cuts, default=len(records))
    for number, record in enumerate(records):
        # At each cut (and, with ``every``, before every record after the first cut) the states go
        # through the table: encoded, decoded, continued.
        if number in cuts or (every and number >= first):
            stored.reload()
        assert stored.apply(record) == kept.apply(record)
    assert stored.encoded() == kept.encoded()
    stored.reload()
    assert stored.encoded() == kept.encoded()
    for symbol, market in kept.markets.items():
        for later in (MINUTE, 5 * MINUTE, HOUR):
            at = market.last_time - market.last_time % MINUTE + later
            restored = market_context(stored.markets[symbol], symbol, at, RULES)
            assert restored == market_context(market, symbol, at, RULES)


# --- 3. arrival order and the two records of an execution -----------------------------------------


@settings(max_examples=40, deadline=None)
@given(streams_with_twins(), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_arrival_order_twins_included(
    records: list[Trade], rng: random.Random
) -> None:
    shuffled = list(records)
    rng.shuffle(shuffled)
    first = evaluate_cross_account(records, REF, RULES)
    second = evaluate_cross_account(shuffled, REF, RULES)
    assert first.alerts == second.alerts
    assert first.executions == second.executions
    assert encoded_run(first) == encoded_run(second)
    assert scored_against(first, records) == scored_against(second, records)


@settings(max_examples=30, deadline=None)
@given(streams(), st.data())
def test_an_execution_reported_by_both_sides_counts_once(records: list[Trade], data: st.DataObject) -> None:
    twins = [
        twin_after(r)
        for r in records
        if r.counterparty_user_id is not None and data.draw(st.booleans(), label="twin")
    ]
    arrival = records + twins
    data.draw(st.randoms(use_true_random=False), label="arrival").shuffle(arrival)
    alone = evaluate_cross_account(records, REF, RULES)
    both = evaluate_cross_account(arrival, REF, RULES)
    # A twin whose id sorts after its original's changes nothing but the record bookkeeping.
    assert both.alerts == alone.alerts
    assert both.executions == alone.executions == len(records)
    assert both.markets.keys() == alone.markets.keys()
    for symbol, market in both.markets.items():
        assert market.executions == sum(r.symbol == symbol for r in records)
        assert market.twins == sum(t.symbol == symbol for t in twins)
        assert market_figures(market, ids=True) == market_figures(alone.markets[symbol], ids=True)
    assert both.pairs.keys() == alone.pairs.keys()
    for pair, state in both.pairs.items():
        assert pair_figures(state, ids=True) == pair_figures(alone.pairs[pair], ids=True)


@settings(max_examples=30, deadline=None)
@given(streams(), st.data())
def test_whichever_record_of_an_execution_comes_first_counts(
    records: list[Trade], data: st.DataObject
) -> None:
    # One execution per millisecond: the twin may then sort before its original without moving
    # the execution among the others.
    records = list({r.timestamp: r for r in records[::-1]}.values())[::-1]
    twins = []
    for record in records:
        if record.counterparty_user_id is None:
            continue
        placement = data.draw(st.sampled_from(["none", "after", "before"]), label="twin")
        if placement != "none":
            twins.append(twin_after(record) if placement == "after" else twin_before(record))
    alone = evaluate_cross_account(records, REF, RULES)
    both = evaluate_cross_account(records + twins, REF, RULES)
    assert [alert_figures(a) for a in both.alerts] == [alert_figures(a) for a in alone.alerts]
    assert both.executions == alone.executions == len(records)
    for symbol, market in both.markets.items():
        assert (market.executions, market.twins) == (
            sum(r.symbol == symbol for r in records),
            sum(t.symbol == symbol for t in twins),
        )
        assert market_figures(market, ids=False) == market_figures(alone.markets[symbol], ids=False)
    for pair, state in both.pairs.items():
        assert pair_figures(state, ids=False) == pair_figures(alone.pairs[pair], ids=False)


# --- 4. bounded state ----------------------------------------------------------------------------


def long_stream(seed: int, count: int, accounts: int, hours: int) -> list[Trade]:
    """``count`` steps of trading over about ``hours`` of event time, in market order, with realistic
    ids (uuids) and twins of a third of the executions: one busy symbol and two quieter ones, bursts
    in one millisecond, price moves, fat fingers, a few idle hours; once a market maker filling one
    account 300 times within a minute (one-way legs), once a pair washing 300 round trips within
    half an hour."""
    rng = random.Random(seed)
    names = [f"acct-{n:06d}" for n in range(accounts)]
    price = dict.fromkeys(SYMBOLS, 100.0)
    clock = T0
    step = 2 * hours * HOUR // count
    records: list[Trade] = []
    twins: dict[str, Trade] = {}
    bursts = {count // 3: "maker", 2 * count // 3: "wash"}

    def add(
        symbol: str, quantity: float, buyer: str, seller: str | None, at_price: float | None = None
    ) -> None:
        side = Side.SELL if seller is not None and rng.random() < 0.5 else Side.BUY
        user, other = (seller, buyer) if side is Side.SELL else (buyer, seller)
        assert user is not None
        record = make(
            0, clock, symbol, price[symbol] if at_price is None else at_price, quantity, user, side, other
        )
        record = replace(record, trade_id=str(uuid.UUID(int=rng.getrandbits(128))))
        records.append(record)
        if other is not None and rng.random() < 0.33:
            twins[record.trade_id] = twin(record, str(uuid.UUID(int=rng.getrandbits(128))))

    for number in range(count):
        symbol = rng.choices(SYMBOLS, weights=[16, 3, 1])[0]
        burst = bursts.get(number)
        roll = rng.random()
        if burst == "maker":
            for _ in range(300):
                clock += rng.randrange(200)
                add(symbol, 10.0, names[0], "mm")
        elif burst == "wash":
            for _ in range(300):
                clock += rng.randrange(3 * SECOND)
                add(symbol, 7.0, names[1], names[2])
                clock += rng.randrange(3 * SECOND)
                add(symbol, 7.0, names[2], names[1])
        elif roll < 0.0005:
            clock += HOUR
        elif roll < 0.01:
            price[symbol] *= rng.choice([0.5, 0.8, 1.25, 1.5])
        elif roll < 0.015:
            fat = price[symbol] * rng.choice([0.5, 1.6])
            add(symbol, rng.choice([0.1, 10.0]), rng.choice(names), rng.choice(names), fat)
        else:
            clock += rng.choice([0, 1, rng.randrange(2 * step + 1), rng.randrange(2 * step + 1)])
            price[symbol] *= rng.choice([0.995, 1.0, 1.005])
            seller = None if rng.random() < 0.1 else rng.choice(names)
            add(symbol, rng.choice([1.0, 10.0, 100.0]) * rng.choice([1.0, 5.0]), rng.choice(names), seller)
    kept = one_side_per_key(records)
    return sorted(kept + [twins[r.trade_id] for r in kept if r.trade_id in twins], key=market_order)


def check_market_bounds(state: MarketState) -> None:
    """The bounds the market module docstring states, as the code keeps them."""
    now = state.last_time
    assert state.ledger.timestamp == now, "the ledger keeps the keys of the latest event time only"
    window = RULES.price_crash_window_ms
    own = now - now % BUCKET_MS
    starts = [bucket[0] for bucket in state.buckets]
    assert starts == sorted(set(starts))
    assert all(own - window <= start <= own for start in starts)
    assert len(starts) <= window // BUCKET_MS + 1
    horizon = RULES.pump_rise_ms + RULES.pump_dump_ms
    bar = now - now % BAR_MS
    bars = [b.start for b in state.bars]
    assert bars == sorted(set(bars)) and bars[-1] == bar
    assert all(bar - horizon <= start for start in bars)
    assert len(bars) <= horizon // BAR_MS + 1
    hour = now - now % HOUR_MS
    # The hours of the horizon and the one before it (a rise may start mid-hour).
    assert all(hour - horizon - HOUR_MS <= h <= hour for h in state.accounts)
    assert len(state.accounts) <= horizon // HOUR_MS + 2
    assert all(len(book) <= TOP_ACCOUNTS for books in state.accounts.values() for book in books)
    assert set(state.fired) <= {PatternType.PRICE_CRASH.value, PatternType.PUMP_AND_DUMP.value}
    assert all(at <= now for at in state.fired.values())
    if state.pump is not None:
        assert state.pump.low_time <= state.pump.peak_time <= now


def check_pair_bounds(state: PairState, record: Trade, seen: dict[str, int]) -> None:
    """After a record of a pair: the record's symbol holds legs of the leg window and trips of the
    trip window only; every symbol holds what was in its windows at its own latest record (a symbol
    the pair no longer trades keeps its last legs and trips: pruning happens per symbol)."""
    seen[record.symbol] = record.timestamp
    assert state.legs.keys() <= seen.keys() and state.trips.keys() <= seen.keys()
    for symbol, legs in state.legs.items():
        at = seen[symbol]
        times = [leg[0] for leg in legs]
        assert 0 < len(times) <= MAX_LEGS and times == sorted(times)
        assert all(at - RULES.round_trip_leg_ms <= t <= at for t in times)
    for symbol, trips in state.trips.items():
        at = seen[symbol]
        times = [trip[0] for trip in trips]
        assert 0 < len(times) <= MAX_TRIPS and times == sorted(times)
        assert all(at - RULES.round_trip_window_ms <= t <= at for t in times)
    assert all(at <= record.timestamp for at in state.fired.values())


# A seed does not shrink: report the first failing stream as it is.
@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    st.integers(0, 2**32),
    st.integers(2_000, 3_500),
    st.sampled_from([20, 300, 3_000]),
    st.integers(18, 30),
)
def test_states_stay_within_their_bounds_over_long_streams(
    seed: int, count: int, accounts: int, hours: int
) -> None:
    records = long_stream(seed, count, accounts, hours)
    cores = Cores()
    seen: dict[str, dict[str, int]] = {}
    most_bars = most_legs = most_trips = 0
    for number, record in enumerate(records):
        cores.apply(record)
        market = cores.markets[record.symbol]
        check_market_bounds(market)
        most_bars = max(most_bars, len(market.bars))
        pair = pair_key(REF, record, DEFAULT_RULES)
        if pair is not None:
            state = cores.pairs[pair]
            check_pair_bounds(state, record, seen.setdefault(pair, {}))
            most_legs = max(most_legs, len(state.legs.get(record.symbol, ())))
            most_trips = max(most_trips, len(state.trips.get(record.symbol, ())))
        if number % 97 == 0 or number == len(records) - 1:
            for symbol, kept in cores.markets.items():
                assert len(encode_market_state(kept)) < MARKET_STATE_BYTES, symbol
    # The streams reach the bounds: the checks above are not vacuous.
    assert records[-1].timestamp - records[0].timestamp > RULES.pump_rise_ms + RULES.pump_dump_ms
    assert most_bars >= (RULES.pump_rise_ms + RULES.pump_dump_ms) // BAR_MS * 3 // 4
    assert (most_legs, most_trips) == (MAX_LEGS, MAX_TRIPS)
    full = [book for m in cores.markets.values() for books in m.accounts.values() for book in books]
    assert max(map(len, full)) == TOP_ACCOUNTS


# --- 5. re-delivery ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    streams_with_twins(),
    st.lists(
        st.tuples(st.integers(0, 320), st.integers(0, 320), st.sampled_from([0, 1, 10 * SECOND, HOUR])),
        max_size=5,
    ),
)
def test_a_record_at_or_before_the_last_applied_changes_nothing(
    records: list[Trade], redeliveries: list[tuple[int, int, int]]
) -> None:
    plain, cores = Cores(), Cores()
    expected = plain.feed(records)
    alerts = []
    for number, record in enumerate(records):
        alerts.append(cores.apply(record).alerts)
        for at, start, earlier in redeliveries:
            if at % len(records) != number:
                continue
            before = cores.encoded()
            # A prefix fed again from ``start`` (records already applied), then late records:
            # earlier copies with new ids of the applied ones, at other prices and quantities.
            again = records[start % (number + 1) : number + 1]
            late = [
                replace(
                    r,
                    trade_id="a" + r.trade_id,
                    timestamp=r.timestamp - earlier,
                    price=r.price * 1.5,
                    quantity=r.quantity * 3,
                    notional=r.notional * 4.5,
                )
                for r in again
            ]
            for old in again + late:
                outcome = cores.apply(old)
                assert outcome == Outcome(False, False, None if outcome.pair is None else False, (), ())
            assert cores.encoded() == before
    assert alerts == expected
    assert cores.encoded() == plain.encoded()


@settings(max_examples=30, deadline=None)
@given(streams_with_twins(), st.integers(0, 320), st.randoms(use_true_random=False))
def test_redelivered_records_change_no_cross_account_run(
    records: list[Trade], start: int, rng: random.Random
) -> None:
    arrival = records + records[start:]
    rng.shuffle(arrival)
    once = evaluate_cross_account(records, REF, RULES)
    twice = evaluate_cross_account(arrival, REF, RULES)
    assert once.alerts == twice.alerts and once.executions == twice.executions
    assert encoded_run(once) == encoded_run(twice)
    assert scored_against(once, records) == scored_against(twice, records)


# --- oracles -------------------------------------------------------------------------------------


class Window(NamedTuple):
    quantity: float
    notional: float
    executions: int


def window_oracle(executions: Sequence[Trade], timestamp: int) -> Window:
    """The executions of the buckets in the average-price window before ``timestamp``'s bucket,
    summed bucket by bucket in time order (the core's float operations)."""
    own = timestamp - timestamp % BUCKET_MS
    buckets: dict[int, list[float]] = {}
    for e in executions:
        start = e.timestamp - e.timestamp % BUCKET_MS
        if own - RULES.price_crash_window_ms <= start < own:
            bucket = buckets.setdefault(start, [0.0, 0.0, 0])
            bucket[0] += e.quantity
            bucket[1] += e.quantity * e.price
            bucket[2] += 1
    quantity = notional = 0.0
    count = 0
    for start in sorted(buckets):
        quantity += buckets[start][0]
        notional += buckets[start][1]
        count += int(buckets[start][2])
    return Window(quantity, notional, count)


def off_market(executions: Sequence[Trade]) -> set[str]:
    """The ids of the executions far from their window's average price (module docstring)."""
    found = set()
    for number, e in enumerate(executions):
        window = window_oracle(executions[:number], e.timestamp)
        if window.executions < RULES.price_crash_min_trades or window.quantity <= 0:
            continue
        if not RULES.price_crash_low < e.price / (window.notional / window.quantity) < RULES.price_crash_high:
            found.add(e.trade_id)
    return found


@settings(max_examples=40, deadline=None)
@given(streams_with_twins())
def test_the_first_record_of_a_new_minute_publishes_the_context_of_the_executions_before_it(
    records: list[Trade],
) -> None:
    cores = Cores()
    executions: dict[str, list[Trade]] = {}
    for record in records:
        outcome = cores.apply(record)
        before = executions.setdefault(record.symbol, [])
        minute = record.timestamp - record.timestamp % MINUTE
        if not before or before[-1].timestamp >= minute:
            assert outcome.contexts == ()
        else:
            window = window_oracle(before, minute)
            recent = [e for e in before if e.timestamp - e.timestamp % BAR_MS >= minute - HOUR]
            context = outcome.contexts[-1]
            after_last = before[-1].timestamp - before[-1].timestamp % MINUTE + MINUTE
            assert [c.as_of for c in outcome.contexts[:-1]] == ([after_last] if after_last < minute else [])
            assert (context.symbol, context.as_of) == (record.symbol, minute)
            if window.quantity:
                assert context.reference_price == pytest.approx(window.notional / window.quantity, rel=1e-12)
            else:
                assert context.reference_price is None
            assert context.recent_volume == pytest.approx(
                sum(e.quantity * e.price for e in recent), rel=1e-12
            )
            bars = {e.timestamp - e.timestamp % BAR_MS for e in recent}
            assert (context.volatility is None) is (len(bars) < 3)
            assert context.volatility is None or context.volatility >= 0
        if outcome.counted:
            before.append(record)


def _a_quiet_symbol() -> list[Trade]:
    """Executions at 0:00, 1:00 (publishes the context as of 1:00) and 1:30, then one at 20:00."""
    start = T0 - T0 % MINUTE
    at = [0, MINUTE, 90 * SECOND, 20 * MINUTE]
    return [make(n, start + t, "ADA/USDT", 100.0, 10.0, "u-6", Side.BUY, "u-7") for n, t in enumerate(at)]


@settings(max_examples=40, deadline=None)
@given(streams_with_twins())
@example(_a_quiet_symbol())
def test_a_trade_is_scored_against_every_execution_older_than_the_staleness_bound(
    records: list[Trade],
) -> None:
    run = evaluate_cross_account(records, REF, RULES)
    lateness = RULES.market_lateness_ms
    for record in records:
        t = record.timestamp
        context = run.contexts.for_trade(record.symbol, t, lateness)
        # None less than L + 2 minutes older than the trade ...
        assert context is None or context.as_of <= t - lateness - 2 * MINUTE
        # ... every one more than L + 3 minutes older.
        older = [
            e.timestamp
            for e in records
            if e.symbol == record.symbol and e.timestamp < t - lateness - 3 * MINUTE
        ]
        if older:
            assert context is not None and context.as_of > max(older), (record.trade_id, context, max(older))


def _fat_finger_opening_a_bar() -> list[Trade]:
    """Five executions at 100 a minute apart, then one at 60 that opens the next 5-minute bar,
    then one at 100 in that bar."""
    start = T0 - T0 % BAR_MS
    at = [start + k * MINUTE for k in range(5)] + [start + BAR_MS, start + BAR_MS + 30 * SECOND]
    prices = [100.0] * 5 + [60.0, 100.0]
    return [
        make(n, t, "ADA/USDT", p, 10.0, "u-6", Side.BUY, "u-7")
        for n, (t, p) in enumerate(zip(at, prices, strict=True))
    ]


@settings(max_examples=60, deadline=None)
@given(streams())
@example(_fat_finger_opening_a_bar())
def test_an_off_market_execution_sets_no_bar_price_and_makes_no_pump(records: list[Trade]) -> None:
    for symbol in SYMBOLS:
        executions = [r for r in records if r.symbol == symbol]
        odd = off_market(executions)
        state = MarketState()
        for e in executions:
            for alert in evaluate_market_trade(state, e, RULES).alerts:
                if alert.pattern is PatternType.PUMP_AND_DUMP:
                    assert not odd & set(alert.evidence), alert.evidence
            for bar in state.bars:
                assert bar.high_id not in odd and bar.low_id not in odd, bar
            if state.pump is not None:
                assert {state.pump.low_id, state.pump.peak_id}.isdisjoint(odd), state.pump


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60_000)), max_size=60), st.sampled_from([0, 5_000])
)
def test_a_trade_is_late_for_the_market_when_its_partition_was_further_ahead(
    arrivals: list[tuple[int, int]], lateness: int
) -> None:
    clocks = PartitionClocks()
    latest: dict[int, int] = {}
    for partition, timestamp in arrivals:
        ahead = latest.get(partition)
        assert clocks.admit(partition, timestamp, lateness) is (
            ahead is None or timestamp >= ahead - lateness
        )
        latest[partition] = max(timestamp, latest.get(partition, timestamp))
        assert clocks.clocks == latest


# --- damaged bytes -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


def _damaged(data: bytes, position: int, value: Any) -> bytes:
    document = json.loads(data[1:])
    document[position % len(document)] = value
    return data[:1] + json.dumps(document).encode()


def _some_market_state() -> bytes:
    cores = Cores()
    cores.feed(
        sorted([*_fat_finger_opening_a_bar(), twin_after(_fat_finger_opening_a_bar()[0])], key=market_order)
    )
    return encode_market_state(cores.markets["ADA/USDT"])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 9), json_values)
@example(5, {})
def test_a_damaged_market_state_decodes_or_fails_with_a_format_error(position: int, value: Any) -> None:
    with contextlib.suppress(MarketStateFormatError):
        decode_market_state(_damaged(_some_market_state(), position, value))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 5), json_values)
@example(2, [float("inf"), []])
def test_a_damaged_pair_state_decodes_or_fails_with_a_format_error(position: int, value: Any) -> None:
    state = PairState()
    record = make(0, T0, "ADA/USDT", 1.0, 1.0, "u-6", Side.BUY, "u-7")
    evaluate_pair_trade(state, record, "user:u-6", "user:u-6|user:u-7", RULES)
    with contextlib.suppress(PairStateFormatError):
        decode_pair_state(_damaged(encode_pair_state(state), position, value))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_fail_with_a_format_error(payload: bytes) -> None:
    for decode, error in (
        (decode_market_state, MarketStateFormatError),
        (decode_pair_state, PairStateFormatError),
    ):
        with contextlib.suppress(error):
            decode(payload)
