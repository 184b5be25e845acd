"""(b) Two workers share the partitions; one dies by SIGKILL mid-stream; nothing is lost or changed.

The input is trades and order events (each trade's order placed and filled, resting orders that are
cancelled, spoofing episodes, executions between two accounts, now and then a price far off the
market), produced in event time as a venue publishes them. Afterwards every input trade has an
analyzed output, every duplicate output is byte-identical to the first copy (the re-sent pending
bytes), alerts likewise, every user's state (the last changelog value per user, order book
included) equals the detection core run over the same input in one process, and so does every
symbol's market state and every owner pair's state (the last values of their changelogs): no order
event without its effect on its account, no trade without its effect on the market. The second test
has the dying worker frozen before any event arrives, so the partitions it leaves behind have no
committed offset (see
:mod:`riskengine.worker.faust_compat`).
"""

from __future__ import annotations

import asyncio
import random
import warnings
from collections import defaultdict

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import (
    DEFAULT_RULES,
    EMPTY_REFERENCE,
    OrderEvent,
    OrderEventType,
    RiskAlert,
    Side,
    Trade,
    UserState,
    decode_state,
    evaluate_order,
    evaluate_trade,
)
from riskengine.core.account_pairs import encode_pair_state
from riskengine.core.event_order import merge_in_event_time
from riskengine.core.market import encode_market_state
from riskengine.core.market_feed import (
    CrossAccountRun,
    PartitionClocks,
    evaluate_cross_account,
    kafka_partition,
)
from riskengine.settings import Settings
from riskengine.worker.repartition import CLOCK_KEY
from riskengine.worker.tables.user_state import (
    MARKET_TABLE_NAME,
    PAIR_TABLE_NAME,
    TABLE_NAME,
    decode_envelope,
)

from .test_worker import collect
from .test_worker_web import owned_partitions
from .worker_harness import WorkerProcess, isolated, prepare, running

USERS = 40
TRADES = 3000
CHUNK = 250
START = 1_764_000_000_000


def generated_flow(trade_count: int = TRADES) -> tuple[list[Trade], list[OrderEvent]]:
    """Trades and order events of USERS users in event-time order: each trade's order placed and
    filled, resting orders cancelled, and now and then a spoofing episode (a bait of 30x the usual
    size cancelled a few seconds after an opposite fill)."""
    rng = random.Random(11)
    trades: list[Trade] = []
    orders: list[OrderEvent] = []
    events = 0

    def event(
        at: int,
        kind: OrderEventType,
        order_id: str,
        user: str,
        symbol: str,
        side: Side,
        quantity: float,
        remaining: float,
        price: float,
    ) -> None:
        nonlocal events
        events += 1
        orders.append(
            OrderEvent(
                f"crash-e{events}", order_id, user, symbol, side, kind, price, quantity, remaining, at, "TEST"
            )
        )

    baits: list[tuple[int, str, str, str, Side, float, float]] = []
    for n in range(trade_count):
        at = START + n * 100
        while baits and baits[0][0] <= at:
            cancel_at, order_id, user, symbol, side, quantity, price = baits.pop(0)
            event(
                cancel_at, OrderEventType.CANCELLED, order_id, user, symbol, side, quantity, quantity, price
            )
        user = f"crash-u{rng.randrange(USERS)}"
        price = 100.0 * (1 + 0.02 * rng.random()) * (0.6 if rng.random() < 0.003 else 1.0)
        counterparty = f"crash-u{rng.randrange(USERS)}" if rng.random() < 0.4 else None
        if counterparty == user:
            counterparty = None
        quantity = rng.choice((1.0, 2.0, 5.0, 50.0, 500.0))
        symbol = rng.choice(("BTC/USDT", "ETH/USDT", "SOL/USDT"))
        side = rng.choice((Side.BUY, Side.SELL))
        if rng.random() < 0.3:  # a resting order, cancelled later
            other = Side.SELL if side is Side.BUY else Side.BUY
            baits.append((at + rng.randint(500, 9_000), f"crash-r{n}", user, symbol, other, quantity, price))
            event(at, OrderEventType.PLACED, f"crash-r{n}", user, symbol, other, quantity, quantity, price)
        elif rng.random() < 0.02:  # a spoofing bait: 30x, cancelled soon after this trade fills
            other = Side.SELL if side is Side.BUY else Side.BUY
            bait = quantity * 30
            event(at - 50, OrderEventType.PLACED, f"crash-b{n}", user, symbol, other, bait, bait, price)
            baits.append((at + 2_000, f"crash-b{n}", user, symbol, other, bait, price))
        event(at, OrderEventType.PLACED, f"crash-o{n}", user, symbol, side, quantity, quantity, price)
        event(at, OrderEventType.FILLED, f"crash-o{n}", user, symbol, side, quantity, 0.0, price)
        trades.append(
            Trade(
                trade_id=f"crash-t{n}",
                user_id=user,
                customer_id=f"c-{user}",
                symbol=symbol,
                side=side,
                quantity=quantity,
                price=price,
                notional=quantity * price,
                timestamp=at,
                exchange="TEST",
                order_type="LIMIT",
                order_id=f"crash-o{n}",
                counterparty_user_id=counterparty,
            )
        )
        baits.sort()
    for cancel_at, order_id, user, symbol, side, quantity, price in baits:
        event(cancel_at, OrderEventType.CANCELLED, order_id, user, symbol, side, quantity, quantity, price)
    orders.sort(key=lambda e: e.timestamp)
    return trades, orders


def one_process(
    trades: list[Trade], orders: list[OrderEvent], partitions: int
) -> tuple[dict[str, UserState], list[RiskAlert], CrossAccountRun]:
    """The core over the input in one process, the two inputs interleaved as replay does, then the
    market and pair cores over the trades admitted to the market (as replay does)."""
    states: dict[str, UserState] = {}
    alerts: list[RiskAlert] = []
    clocks = PartitionClocks()
    admitted: list[Trade] = []
    lateness = DEFAULT_RULES.market_lateness_ms
    for item in merge_in_event_time(trades, orders, lambda t: t.timestamp, lambda o: o.timestamp):
        state = states.setdefault(item.user_id, UserState())
        if isinstance(item, Trade):
            alerts.extend(evaluate_trade(state, item, EMPTY_REFERENCE, DEFAULT_RULES).alerts)
            if clocks.admit(kafka_partition(item.user_id.encode(), partitions), item.timestamp, lateness):
                admitted.append(item)
        else:
            alerts.extend(evaluate_order(state, item, EMPTY_REFERENCE, DEFAULT_RULES).alerts)
    cross = evaluate_cross_account(admitted, EMPTY_REFERENCE, DEFAULT_RULES)
    return states, alerts + cross.alerts, cross


async def send_in_event_time(
    settings: Settings, catalog: SchemaCatalog, items: list[Trade | OrderEvent]
) -> None:
    """Produce trades and order events as a venue's matching engine publishes them: in event time,
    every event on the broker before a later one of the other topic is sent (the acks are awaited
    at each switch of topic). The worker can only interleave the two inputs as the one-process run
    does with what is on the broker: an event sent after a later one of the other topic was read
    is late for it (and for any engine)."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        waiting: list[asyncio.Future[object]] = []
        last = ""
        for item in items:
            if isinstance(item, Trade):
                topic, value = "crypto-trades", catalog.encode("CryptoTrade", item.to_record())
            else:
                topic, value = "crypto-orders", catalog.encode("OrderEvent", item.to_record())
            if topic != last and waiting:
                await asyncio.gather(*waiting)
                waiting = []
            last = topic
            waiting.append(
                await producer.send(topic + settings.worker_topic_suffix, value, key=item.user_id.encode())
            )
        await asyncio.gather(*waiting)
    finally:
        await producer.stop()


def in_event_time(trades: list[Trade], orders: list[OrderEvent]) -> list[Trade | OrderEvent]:
    """The two inputs merged as replay and the one-process run merge them."""
    return list(merge_in_event_time(trades, orders, lambda t: t.timestamp, lambda o: o.timestamp))


async def analyzed_copies(
    settings: Settings, catalog: SchemaCatalog, trades: list[Trade], workers: list[WorkerProcess]
) -> dict[str, set[bytes]]:
    """tradeId -> the distinct analyzed-trade values; fails naming the trades without one."""
    records = await collect(
        settings,
        f"risk-analyzed-trades{settings.worker_topic_suffix}",
        lambda rs: (
            len({catalog.decode(r.value, "RiskAnalyzedTrade")["originalTrade"]["tradeId"] for r in rs})
            >= len(trades)
        ),
        wait_s=120.0,
    )
    copies: dict[str, set[bytes]] = defaultdict(set)
    for record in records:
        copies[catalog.decode(record.value, "RiskAnalyzedTrade")["originalTrade"]["tradeId"]].add(
            record.value
        )
    missing = {t.trade_id for t in trades} - set(copies)
    if missing:
        # A warning reaches the run's summary, unlike captured output. The survivor's /stats tell a
        # stalled consumer (tradesIn flat) from stalled outputs.
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{workers[0].url}/stats") as response,
        ):
            stats = await response.text()
        tails = "".join(f"\n---- {w.log_path} ----\n{w.log()[-6000:]}" for w in workers)
        warnings.warn(
            f"crash test: {len(missing)} trades without output; survivor /stats {stats}; logs:{tails}",
            stacklevel=1,
        )
    assert not missing, f"{len(missing)} trades without output, e.g. {sorted(missing)[:5]}"
    return copies


async def assert_same_as_one_process(
    settings: Settings,
    catalog: SchemaCatalog,
    trades: list[Trade],
    orders: list[OrderEvent],
    workers: list[WorkerProcess],
) -> None:
    """Every trade analyzed; duplicates byte-identical; alerts and final states as in one process."""
    copies = await analyzed_copies(settings, catalog, trades, workers)
    assert all(len(values) == 1 for values in copies.values()), "duplicates must be byte-identical"

    states, expected, cross = one_process(trades, orders, settings.topic_partitions)
    assert {a.pattern.value for a in expected} >= {"SPOOFING", "PRICE_CRASH"}
    assert cross.pairs, "executions between owners reach the pair agent"
    expected_ids = {a.alert_id for a in expected}
    # The market agent releases the last executions once the trades partitions are idle (2 s).
    alerts = await collect(
        settings,
        f"risk-alerts{settings.worker_topic_suffix}",
        lambda rs: {catalog.decode(r.value, "RiskAlert")["alertId"] for r in rs} >= expected_ids,
        wait_s=30.0,
    )
    alert_copies: dict[str, set[bytes]] = defaultdict(set)
    for record in alerts:
        alert_copies[catalog.decode(record.value, "RiskAlert")["alertId"]].add(record.value)
    if set(alert_copies) != expected_ids:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{workers[0].url}/stats") as response,
        ):
            stats = await response.text()
        missing = [
            (a.pattern.value, a.symbol, a.timestamp, a.evidence[:3])
            for a in expected
            if a.alert_id not in alert_copies
        ]
        warnings.warn(f"crash test: alerts missing {missing}; survivor /stats {stats}", stacklevel=1)
    assert set(alert_copies) == expected_ids
    assert all(len(values) == 1 for values in alert_copies.values())

    changelog = await collect(
        settings, f"{settings.worker_app_id}-{TABLE_NAME}-changelog", lambda rs: False, wait_s=3.0
    )
    last: dict[str, bytes] = {}
    for record in sorted(changelog, key=lambda r: (r.partition, r.offset)):
        if record.key != CLOCK_KEY:
            last[record.key.decode()] = record.value
    assert set(last) == set(states)
    for user, state in states.items():
        assert decode_state(decode_envelope(last[user]).state) == state, user

    for table, expected_states in (
        (MARKET_TABLE_NAME, {k: encode_market_state(v) for k, v in cross.markets.items()}),
        (PAIR_TABLE_NAME, {k: encode_pair_state(v) for k, v in cross.pairs.items()}),
    ):
        records = await collect(
            settings, f"{settings.worker_app_id}-{table}-changelog", lambda rs: False, wait_s=3.0
        )
        latest = {r.key.decode(): r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))}
        assert latest == expected_states, table


@pytest.fixture
async def crash_workers(settings, unique, tmp_path):
    own = isolated(settings, unique)
    catalog = await prepare(own)
    workers = [
        WorkerProcess(own, tmp_path / f"data-{n}", name=f"w{n}", worker_session_timeout="6") for n in (1, 2)
    ]
    async with running(workers):
        yield own, catalog, workers


async def test_sigkill_mid_stream_loses_nothing(crash_workers):
    settings, catalog, workers = crash_workers
    trades, orders = generated_flow()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await owned_partitions(session, workers, settings.topic_partitions)
    flow = in_event_time(trades, orders)
    chunk = len(flow) * CHUNK // TRADES
    for number, start in enumerate(range(0, len(flow), chunk)):
        await send_in_event_time(settings, catalog, flow[start : start + chunk])
        if number == 4:
            workers[1].kill()
        await asyncio.sleep(0.2)

    await assert_same_as_one_process(settings, catalog, trades, orders, workers)


async def test_takeover_of_partitions_never_committed(crash_workers):
    """The survivor analyzes the trades of partitions on which the dead worker never committed.

    The second worker is frozen (SIGSTOP) before any trade exists, so none of its partitions gets a
    committed offset, then killed. When the survivor takes them over, trades are waiting in them.
    Faust drops records fetched while a rebalance is under way and relies on seeking back to the
    committed offsets; these partitions have none, so the trades used to be skipped for good.
    """
    settings, catalog, workers = crash_workers
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await owned_partitions(session, workers, settings.topic_partitions)
    workers[1].freeze()
    trades, orders = generated_flow(1000)
    await send_in_event_time(settings, catalog, in_event_time(trades, orders))
    workers[1].kill()
    await assert_same_as_one_process(settings, catalog, trades, orders, workers)
