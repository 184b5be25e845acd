"""The chaos suite's input: a generated flow of trades and order events, the one-process reference run
over it, and producing it as a venue does (in event time).

The flow (:func:`generated_flow`): trades and order events of :data:`USERS` users in event-time order,
each trade's order placed and filled, resting orders that are cancelled, spoofing episodes,
executions between two accounts, now and then a price far off the market. :func:`one_process` is
the detection core over the same input in one process: what every distributed run must end up
with. Shared by the crash tests (``tests/integration/test_worker_crash.py``) and ``riskengine chaos``.
"""

from __future__ import annotations

import asyncio
import random

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

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
    evaluate_order,
    evaluate_trade,
)
from riskengine.core.event_order import merge_in_event_time
from riskengine.core.market_feed import (
    CrossAccountRun,
    PartitionClocks,
    evaluate_cross_account,
    kafka_partition,
)
from riskengine.settings import Settings

USERS = 40
TRADES = 3000
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


#: (topic, key, value) of one message to produce.
Message = tuple[str, bytes, bytes]


def encoded(settings: Settings, catalog: SchemaCatalog, item: Trade | OrderEvent) -> Message:
    """``item`` as the venue publishes it: Avro on its (suffixed) input topic, keyed by its user."""
    if isinstance(item, Trade):
        topic, value = "crypto-trades", catalog.encode("CryptoTrade", item.to_record())
    else:
        topic, value = "crypto-orders", catalog.encode("OrderEvent", item.to_record())
    return topic + settings.worker_topic_suffix, item.user_id.encode(), value


async def send_in_order(producer: AIOKafkaProducer, messages: list[Message]) -> list[RecordMetadata]:
    """Produce ``messages`` in order, every one acknowledged before a later one of another topic is
    sent (the acks are awaited at each switch of topic); returns their metadata, in order."""
    acked: list[RecordMetadata] = []
    waiting: list[asyncio.Future[RecordMetadata]] = []
    last = ""
    for topic, key, value in messages:
        if topic != last and waiting:
            acked.extend(await asyncio.gather(*waiting))
            waiting = []
        last = topic
        waiting.append(await producer.send(topic, value, key=key))
    acked.extend(await asyncio.gather(*waiting))
    return acked


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
        await send_in_order(producer, [encoded(settings, catalog, item) for item in items])
    finally:
        await producer.stop()


def in_event_time(trades: list[Trade], orders: list[OrderEvent]) -> list[Trade | OrderEvent]:
    """The two inputs merged as replay and the one-process run merge them."""
    return list(merge_in_event_time(trades, orders, lambda t: t.timestamp, lambda o: o.timestamp))
