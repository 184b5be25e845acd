"""``riskengine bench core``: the detection core alone, over a generated stream, in one process.

The stream is deterministic (``random.Random(seed)``) and shaped like a venue's: users with their
own trade sizes, favourite symbols and KYC tiers; prices that random-walk; counterparties; a few
linked accounts and sanctioned users; a share of trades arriving late (some beyond the allowed
lateness); and injected episodes of each seed pattern (volume spikes, wash cycles, sell bursts,
large orders) plus structuring, self trades and momentum ignition, so every trade detector does
real work and fires (the order-flow ones need order events, which this stream has none of).

Trades are generated in chunks outside the timed region; only ``evaluate_trade`` calls are timed.
States stay in memory as objects, as in a worker between changelog writes; ``--codec`` also
encodes and decodes each user's state around every trade, as a table round trip would.
Peak memory is the process's maximum resident set size.

``--run FILE`` times the core over a generated run's trades and order events instead (see
:func:`bench_run`). Both modes end with the state of one user holding 0, 100 and 1,000 resting
orders: its encoded size and the time to encode and decode it (the worker encodes a user's state
once per batch in which the user had events, and decodes it once per cache miss). ``--run`` also
times building its events from their Avro bodies: the general way against the core's readers.
"""

from __future__ import annotations

import argparse
import heapq
import io
import json
import math
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from riskengine.contracts.schema_files import expanded_schema
from riskengine.core import (
    BUILD,
    DEFAULT_RULES,
    OrderEvent,
    ReferenceData,
    Rules,
    Side,
    Trade,
    UserProfile,
    UserState,
    decode_state,
    encode_state,
    evaluate_order,
    evaluate_trade,
    parse_order_event,
    parse_profile,
    parse_trade,
    read_order_event,
    read_trade,
)
from riskengine.core.event_order import merge_in_event_time
from riskengine.settings import Settings
from riskengine_devtools.bench_analysis import add_parser as add_analysis_parser

#: (symbol, starting price, share of trades)
SYMBOLS = (
    ("BTC/USDT", 60_000.0, 0.35),
    ("ETH/USDT", 3_000.0, 0.25),
    ("SOL/USDT", 150.0, 0.15),
    ("ADA/USDT", 0.45, 0.1),
    ("XRP/USDT", 0.6, 0.1),
    ("DOGE/USDT", 0.15, 0.05),
)
COUNTRIES = ("US", "DE", "GB", "SG", "JP", "BR", "FR", "KR", "IR", "KP")
EPOCH_MS = 1_764_000_000_000


@dataclass(frozen=True, slots=True)
class Stream:
    """A generated workload: reference data and a deterministic trade iterator factory."""

    users: int
    trades: int
    seed: int
    reference: ReferenceData

    def __iter__(self) -> Iterator[Trade]:
        return _trades(self.users, self.trades, self.seed)


def build_stream(users: int, trades: int, seed: int = 7) -> Stream:
    """The reference data for ``users`` users and a stream of ``trades`` trades (see module doc)."""
    rng = random.Random(seed)
    sizes = user_sizes(users, seed)
    profiles: dict[str, UserProfile] = {}
    for number in range(users):
        user_id = _user(number)
        # Every 50th account belongs to the previous one's customer: linked accounts exist.
        owner = number - 1 if number % 50 == 1 else number
        profiles[user_id] = UserProfile(
            user_id=user_id,
            customer_id=f"c-{owner:06d}",
            kyc_tier=_tier(rng, sizes[number]),
            country=rng.choices(COUNTRIES, weights=(30, 15, 15, 10, 10, 8, 8, 3, 0.5, 0.5))[0],
            sanctioned=rng.random() < 0.001,
            linked_accounts=frozenset({_user(owner)} - {user_id}),
        )
    reference = ReferenceData(
        profiles=profiles,
        sanctioned_countries=frozenset({"KP"}),
        restricted_countries=frozenset({"IR"}),
    )
    return Stream(users, trades, seed, reference)


def user_sizes(users: int, seed: int) -> list[float]:
    """Each user's typical notional: log-normal around $2K (median), a few whales above $100K."""
    rng = random.Random(seed + 2)
    return [math.exp(rng.gauss(7.6, 1.3)) for _ in range(users)]


def _tier(rng: random.Random, size: float) -> int:
    # Mostly a tier whose per-trade limit fits the user's size, so KYC breaches stay occasional.
    if rng.random() < 0.01:
        return 0
    if size < 1_500:
        return 1
    return 2 if size < 40_000 or rng.random() < 0.05 else 3


def _user(number: int) -> str:
    return f"user-{number:06d}"


class _Generator:
    """The trade stream of :func:`build_stream` (one instance per iteration, same seed)."""

    def __init__(self, users: int, seed: int) -> None:
        self.rng = rng = random.Random(seed + 1)
        self.users = users
        self.prices = [price for _, price, _ in SYMBOLS]
        self.names = [name for name, _, _ in SYMBOLS]
        weights = [share for _, _, share in SYMBOLS]
        self.scale = user_sizes(users, seed)
        self.favourite = [rng.choices(range(len(SYMBOLS)), weights=weights)[0] for _ in range(users)]
        # Arrival order: a heap of (arrival ms, sequence, trade); event time may be earlier (late).
        self.pending: list[tuple[int, int, Trade]] = []
        self.sequence = 0

    def make(
        self,
        user: int,
        at: int,
        side: Side,
        symbol: int,
        notional: float,
        counterparty: str | None,
        move: float = 1.0,
        market: bool = False,
    ) -> Trade:
        """One trade of ``user`` at event time ``at`` (UUID-sized id), ``move`` x the symbol's price."""
        self.sequence += 1
        price = self.prices[symbol] * move
        quantity = notional / price
        return Trade(
            trade_id=f"{self.sequence:08x}-{self.rng.getrandbits(64):016x}-{user:010d}",
            user_id=_user(user),
            customer_id=f"c-{user - 1 if user % 50 == 1 else user:06d}",
            symbol=self.names[symbol],
            side=side,
            quantity=quantity,
            price=price,
            notional=quantity * price,
            timestamp=at,
            exchange="BENCH",
            order_type="MARKET" if market or self.sequence % 3 else "LIMIT",
            counterparty_user_id=counterparty,
            order_id=f"o-{self.sequence:09d}",
        )

    def push(self, trade: Trade, arrival: int) -> None:
        """Schedule ``trade`` to arrive at ``arrival``."""
        heapq.heappush(self.pending, (arrival, self.sequence, trade))

    def background(self, user: int, clock: int, symbol: int) -> None:
        """An ordinary trade; 1 % arrive late (half within the default 60 s lateness, half beyond)."""
        rng = self.rng
        counterparty = _user(rng.randrange(self.users)) if rng.random() < 0.3 else None
        if rng.random() < 0.002:  # self trade: with the linked account, or with itself
            counterparty = _user(user + 1 if user % 50 == 0 and user + 1 < self.users else user)
        chosen = self.favourite[user] if rng.random() < 0.6 else symbol
        notional = self.scale[user] * math.exp(rng.gauss(0.0, 0.6))
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        late_by = int(rng.uniform(1_000, 120_000)) if rng.random() < 0.01 else 0
        self.push(self.make(user, clock - late_by, side, chosen, notional, counterparty), clock)

    def episode(self, user: int, clock: int) -> None:
        """An injected pattern episode for ``user`` starting at ``clock``."""
        rng = self.rng
        symbol = self.favourite[user]
        scale = self.scale[user]
        kind = rng.randrange(6)
        if kind == 0:  # volume spike: each step 1.6-2.5x the previous, 20 s apart
            notional = scale
            for step in range(rng.randint(3, 5)):
                at = clock + step * 20_000
                self.push(self.make(user, at, Side.BUY, symbol, notional, None), at)
                notional *= rng.uniform(1.6, 2.5)
        elif kind == 1:  # wash cycle: BUY -> SELL -> BUY 15 s apart, quantities within 5 %
            for step, side in enumerate((Side.BUY, Side.SELL, Side.BUY)):
                at = clock + step * 15_000
                self.push(self.make(user, at, side, symbol, scale * rng.uniform(0.95, 1.05), None), at)
        elif kind == 2:  # sell burst: 10-14 sells 18 s apart
            for step in range(rng.randint(10, 14)):
                at = clock + step * 18_000
                self.push(self.make(user, at, Side.SELL, symbol, scale * rng.uniform(0.5, 1.5), None), at)
        elif kind == 3:  # large order on BTC
            self.push(self.make(user, clock, Side.BUY, 0, rng.uniform(400_000, 900_000), None), clock)
        elif kind == 4:  # structuring: 3-4 trades of 8,000-9,999 an hour apart
            for step in range(rng.randint(3, 4)):
                at = clock + step * 3_600_000
                self.push(self.make(user, at, Side.BUY, symbol, rng.uniform(8_000, 9_999), None), at)
        else:  # momentum ignition: 3-4 buys 8 s apart, each 0.6 % higher, then a sell 40 s later
            steps = rng.randint(3, 4)
            for step in range(steps):
                at = clock + step * 8_000
                self.push(self.make(user, at, Side.BUY, symbol, scale, None, 1.006**step, market=True), at)
            at = clock + (steps - 1) * 8_000 + 40_000
            self.push(self.make(user, at, Side.SELL, symbol, scale, None, 1.006**steps), at)


def _trades(users: int, count: int, seed: int) -> Iterator[Trade]:
    generator = _Generator(users, seed)
    rng = generator.rng
    pending = generator.pending
    # Each user trades about every 14.4 minutes on average: 1M trades of 10K users span a day.
    mean_gap_ms = 864_000 / users
    clock = EPOCH_MS
    emitted = 0
    while emitted < count:
        clock += max(1, round(rng.expovariate(1.0 / mean_gap_ms)))
        symbol = rng.randrange(len(SYMBOLS))
        generator.prices[symbol] *= math.exp(rng.gauss(0.0, 0.0004))
        user = rng.randrange(users)
        if rng.random() < 0.004:
            generator.episode(user, clock)
        else:
            generator.background(user, clock, symbol)
        while pending and pending[0][0] <= clock:
            yield heapq.heappop(pending)[2]
            emitted += 1
            if emitted >= count:
                return


def run_core(
    stream: Stream, rules: Rules, codec: bool = False, chunk: int = 20_000
) -> tuple[float, Counter[str]]:
    """Evaluate the stream; return (seconds spent in the core, alerts by pattern)."""
    states: dict[str, UserState] = {}
    encoded: dict[str, bytes] = {}
    alerts: Counter[str] = Counter()
    reference = stream.reference
    elapsed = 0.0
    iterator = iter(stream)
    while True:
        batch = [trade for _, trade in zip(range(chunk), iterator, strict=False)]
        if not batch:
            break
        started = time.perf_counter()
        if codec:
            for trade in batch:
                blob = encoded.get(trade.user_id)
                state = UserState() if blob is None else decode_state(blob)
                result = evaluate_trade(state, trade, reference, rules)
                encoded[trade.user_id] = encode_state(result.state)
                for alert in result.alerts:
                    alerts[alert.pattern.value] += 1
        else:
            for trade in batch:
                kept = states.get(trade.user_id)
                if kept is None:
                    kept = states[trade.user_id] = UserState()
                result = evaluate_trade(kept, trade, reference, rules)
                for alert in result.alerts:
                    alerts[alert.pattern.value] += 1
        elapsed += time.perf_counter() - started
    return elapsed, alerts


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser("bench", help="benchmarks")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    core = targets.add_parser(
        "core",
        help="the detection core over a generated stream (every pattern enabled): trades/s, peak memory",
    )
    core.add_argument("--trades", type=int, default=1_000_000, help="trades to generate (default 1,000,000)")
    core.add_argument("--users", type=int, default=10_000, help="users (default 10,000)")
    core.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    core.add_argument("--runs", type=int, default=1, help="repeat and report min/median/max (default 1)")
    core.add_argument(
        "--codec", action="store_true", help="also encode/decode the user's state around every trade"
    )
    core.add_argument(
        "--run",
        type=Path,
        metavar="RUN.jsonl",
        help="instead of the built-in stream, a run of `riskengine generate` with its order events "
        "(RUN.orders.jsonl) and profiles, interleaved as the worker does: trades/s, order events/s, "
        "state sizes",
    )
    core.set_defaults(handler=bench_core)
    add_analysis_parser(targets)


def run_flow(
    trades: list[Trade], orders: list[OrderEvent], reference: ReferenceData, rules: Rules
) -> tuple[float, float, dict[str, UserState], Counter[str]]:
    """Evaluate a run's trades and order events interleaved in event time (as the worker and replay
    do); (seconds in evaluate_trade, seconds in evaluate_order, final states, alerts by pattern)."""
    states: dict[str, UserState] = {}
    alerts: Counter[str] = Counter()
    trade_s = order_s = 0.0
    clock = time.perf_counter
    for item in merge_in_event_time(trades, orders, _trade_time, _order_time):
        state = states.get(item.user_id)
        if state is None:
            state = states[item.user_id] = UserState()
        if isinstance(item, Trade):
            started = clock()
            found = evaluate_trade(state, item, reference, rules).alerts
            trade_s += clock() - started
        else:
            started = clock()
            found = evaluate_order(state, item, reference, rules).alerts
            order_s += clock() - started
        for alert in found:
            alerts[alert.pattern.value] += 1
    return trade_s, order_s, states, alerts


def _trade_time(trade: Trade) -> int:
    return trade.timestamp


def _order_time(event: OrderEvent) -> int:
    return event.timestamp


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def bench_run(path: Path, runs: int) -> int:
    """The core over a generated run's trades and order events; print rates and state sizes."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    orders_path = path.with_name(f"{stem}.orders.jsonl")
    profiles_path = path.with_name(f"{stem}.profiles.jsonl")
    try:
        trade_records = list(_json_lines(path))
        order_records = list(_json_lines(orders_path))
        trades = [parse_trade(record) for record in trade_records]
        orders = [parse_order_event(record) for record in order_records]
        profiles = [parse_profile(record) for record in _json_lines(profiles_path)]
    except (OSError, ValueError) as exc:
        print(f"riskengine bench: cannot read the run {path}: {exc}", file=sys.stderr)
        return 2
    reference = ReferenceData(profiles={p.user_id: p for p in profiles})
    print(f"run {path}: {len(trades):,} trades, {len(orders):,} order events, {len(profiles):,} profiles")
    results = []
    states: dict[str, UserState] = {}
    alerts: Counter[str] = Counter()
    for number in range(1, runs + 1):
        trade_s, order_s, states, alerts = run_flow(trades, orders, reference, DEFAULT_RULES)
        results.append((trade_s, order_s))
        total = len(trades) + len(orders)
        rates = (len(trades) / trade_s, len(orders) / order_s, total / (trade_s + order_s))
        print(
            f"run {number}: {rates[0]:,.0f} trades/s, {rates[1]:,.0f} order events/s, "
            f"{rates[2]:,.0f} events/s of core time"
        )
    sizes = sorted(len(encode_state(state)) for state in states.values())
    print(
        f"state sizes (encoded, {len(sizes):,} users): median {sizes[len(sizes) // 2]:,} B, "
        f"p99 {sizes[int(len(sizes) * 0.99)]:,} B, max {sizes[-1]:,} B"
    )
    encode_us = sorted(_codec_times(state)[0] for state in states.values())
    print(
        f"state encode per user: median {encode_us[len(encode_us) // 2]:,.0f} us, max {encode_us[-1]:,.0f} us"
    )
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    print("alerts by pattern: " + ", ".join(f"{name}={n}" for name, n in sorted(alerts.items())))
    print_resting_orders()
    print_decoding(trade_records, order_records)
    return 0


def print_decoding(trade_records: list[dict[str, Any]], order_records: list[dict[str, Any]]) -> None:
    """Per event, the time to build the run's trades and order events from their Avro bodies: the
    general way (fastavro with the schema files, then the parser) against the core's readers
    (:mod:`riskengine.core.event_reader`), the best of three passes over each kind."""
    kinds: list[tuple[str, list[dict[str, Any]], Callable[[Any], Any], Callable[[bytes, int], Any]]] = [
        ("CryptoTrade", trade_records, parse_trade, read_trade),
        ("OrderEvent", order_records, parse_order_event, read_order_event),
    ]
    for name, records, parse, read in kinds:
        if not records:
            continue
        schema = fastavro.parse_schema(expanded_schema(name))
        bodies = []
        for record in records:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, schema, record)
            bodies.append(out.getvalue())
        general_s = reader_s = math.inf
        for _ in range(3):
            started = time.perf_counter()
            for body in bodies:
                parse(fastavro.schemaless_reader(io.BytesIO(body), schema, None))
            general_s = min(general_s, time.perf_counter() - started)
            started = time.perf_counter()
            for body in bodies:
                read(body, 0)
            reader_s = min(reader_s, time.perf_counter() - started)
        general_us, reader_us = general_s / len(bodies) * 1e6, reader_s / len(bodies) * 1e6
        print(
            f"decode {name} ({len(bodies):,}): {general_us:.1f} us per event the general way "
            f"(fastavro, then the parser), {reader_us:.1f} us with the core's reader "
            f"({general_us / reader_us:.1f} times as fast)"
        )


def _codec_times(state: UserState, repeat: int = 3) -> tuple[float, float]:
    """(encode, decode) microseconds of ``state``, the best of ``repeat``."""
    encode_s = decode_s = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        data = encode_state(state)
        encoded_at = time.perf_counter()
        decode_state(data)
        encode_s = min(encode_s, encoded_at - started)
        decode_s = min(decode_s, time.perf_counter() - encoded_at)
    return encode_s * 1e6, decode_s * 1e6


def resting_orders_state(count: int) -> UserState:
    """One user's state after placing ``count`` limit orders (none filled or cancelled), over six
    symbols and both sides, a second apart, with ids as long as the simulator's."""
    state = UserState()
    for number in range(count):
        symbol, price, _share = SYMBOLS[number % len(SYMBOLS)]
        record = {
            "eventId": f"E-000000-{number:09d}",
            "orderId": f"O-000000-{number:08d}",
            "userId": "U000001",
            "symbol": symbol,
            "side": "BUY" if number % 2 else "SELL",
            "eventType": "PLACED",
            "price": price * (1 + (number % 7) / 1_000),
            "quantity": 1.0 + number % 5,
            "remainingQuantity": 1.0 + number % 5,
            "timestamp": EPOCH_MS + number * 1_000,
            "exchange": "BINANCE",
        }
        state = evaluate_order(state, parse_order_event(record), ReferenceData(), DEFAULT_RULES).state
    return state


def print_resting_orders(counts: tuple[int, ...] = (0, 100, 1_000)) -> None:
    """The size and codec time of a user's state by resting orders placed: the first encode (every
    order new), an encode once one order changed (an order keeps its encoded row until it changes),
    and a decode."""
    print("state by resting orders (one user; the book keeps at most MAX_ORDERS orders):")
    for count in counts:
        state = resting_orders_state(count)
        started = time.perf_counter()
        encoded = encode_state(state)
        first_us = (time.perf_counter() - started) * 1e6
        encode_us, decode_us = _codec_times(state)
        print(
            f"  {count:>5,} placed: {len(state.orders.orders):>4,} kept, {len(encoded):>7,} B, "
            f"encode {first_us:,.0f} us (all new) / {encode_us:,.0f} us (rows kept), "
            f"decode {decode_us:,.0f} us"
        )


def bench_core(args: argparse.Namespace, settings: Settings) -> int:
    """Run the core benchmark and print trades/s (per run and min/median/max) and peak memory."""
    if args.trades < 1 or args.users < 1 or args.runs < 1:
        print("riskengine bench: --trades, --users and --runs must be positive", file=sys.stderr)
        return 2
    print(f"detection core: {BUILD}", flush=True)
    if args.run is not None:
        return bench_run(args.run, args.runs)
    stream = build_stream(args.users, args.trades, args.seed)
    rules = DEFAULT_RULES
    rates = []
    alerts: Counter[str] = Counter()
    for run in range(1, args.runs + 1):
        elapsed, alerts = run_core(stream, rules, codec=args.codec)
        rates.append(args.trades / elapsed)
        print(
            f"run {run}: {args.trades:,} trades in {elapsed:.2f} s of core time = {rates[-1]:,.0f} trades/s"
        )
    rates.sort()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"core: {args.trades:,} trades, {args.users:,} users, every pattern enabled"
        f"{', state codec per trade' if args.codec else ''}"
    )
    print(
        f"trades/s: min {rates[0]:,.0f}  median {rates[len(rates) // 2]:,.0f}  max {rates[-1]:,.0f}"
        f"  ({len(rates)} run{'s' if len(rates) > 1 else ''})"
    )
    print(f"peak memory (max RSS): {peak_mib:,.0f} MiB")
    print("alerts by pattern: " + ", ".join(f"{name}={n}" for name, n in sorted(alerts.items())))
    print_resting_orders()
    return 0
