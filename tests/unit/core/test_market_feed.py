"""What reaches the market: Kafka's partitioner, the per-partition lateness rule, the cross-account run."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from riskengine.core import DEFAULT_RULES, Trade
from riskengine.core.market import encode_market_state
from riskengine.core.market_feed import PartitionClocks, evaluate_cross_account, kafka_partition

from .builders import MINUTE, SECOND, profile, reference, trade


def test_kafka_partition_is_kafkas_default_partitioner() -> None:
    rng = random.Random(5)
    for _ in range(500):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert kafka_partition(key, 6) == (murmur2(key) & 0x7FFFFFFF) % 6


def test_a_trade_behind_its_partition_by_more_than_the_lateness_is_late() -> None:
    clocks = PartitionClocks()
    assert clocks.admit(0, 10_000, 5_000)
    assert clocks.admit(0, 5_000, 5_000), "exactly the lateness behind"
    assert not clocks.admit(0, 4_999, 5_000)
    assert clocks.admit(1, 0, 5_000), "another partition has its own clock"


def market_trades(draw: st.DrawFn) -> list[Trade]:
    count = draw(st.integers(1, 80))
    records = []
    for k in range(count):
        at = draw(st.integers(0, 20 * MINUTE))
        price = draw(st.sampled_from([40.0, 70.0, 100.0, 100.5, 131.0]))
        buyer, seller = draw(st.sampled_from([("u-a", "u-b"), ("u-b", "u-a"), ("u-c", "u-a")]))
        symbol = draw(st.sampled_from(["ADA/USDT", "SOL/USDT"]))
        quantity = draw(st.sampled_from([10.0, 10.05, 12.0]))
        records.append(
            trade(
                at,
                "BUY",
                notional=price * quantity,
                quantity=quantity,
                user=buyer,
                counterparty=seller,
                symbol=symbol,
                trade_id=f"t{k:03d}",
            )
        )
    return records


REF = reference(profile("u-a"), profile("u-b"), profile("u-c"))


@settings(max_examples=60, deadline=None)
@given(st.composite(market_trades)(), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_arrival_order(records: list[Trade], rng: random.Random) -> None:
    first = evaluate_cross_account(records, REF, DEFAULT_RULES)
    shuffled = list(records)
    rng.shuffle(shuffled)
    second = evaluate_cross_account(shuffled, REF, DEFAULT_RULES)
    assert first.alerts == second.alerts
    assert {s: encode_market_state(m) for s, m in first.markets.items()} == {
        s: encode_market_state(m) for s, m in second.markets.items()
    }


@settings(max_examples=30, deadline=None)
@given(st.composite(market_trades)())
def test_redelivered_records_change_nothing(records: list[Trade]) -> None:
    once = evaluate_cross_account(records, REF, DEFAULT_RULES)
    twice = evaluate_cross_account(records + records, REF, DEFAULT_RULES)
    assert once.alerts == twice.alerts and once.executions == twice.executions


def test_state_stays_bounded_over_a_long_stream() -> None:
    rng = random.Random(1)
    records = [
        trade(
            k * 2 * SECOND,
            "BUY",
            notional=100.0 * 5,
            quantity=5.0,
            user=f"u-{rng.randrange(50)}",
            counterparty="u-mm",
            trade_id=f"t{k:06d}",
        )
        for k in range(40_000)
    ]
    run = evaluate_cross_account(records, REF, DEFAULT_RULES)
    (market,) = run.markets.values()
    assert len(encode_market_state(market)) < 64_000
    assert len(market.bars) <= 16 * 12 + 1
