"""The market and pair agents' analysis on in-process fakes: watermarks, release order, acks, re-delivery."""

from __future__ import annotations

from riskengine.core import DEFAULT_RULES, EMPTY_REFERENCE, Trade
from riskengine.core.market import (
    MarketState,
    decode_market_state,
    encode_market_state,
    evaluate_market_trade,
)
from riskengine.core.market_feed import evaluate_cross_account
from riskengine.worker.agents.watermarked_agent import MARKET, WatermarkedAnalysis
from riskengine.worker.commit import Batch
from riskengine.worker.repartition import execution_value, idle_marker_value, marker_value

from ..core.builders import MINUTE, SECOND, trade
from .test_user_agent import worker_context
from .worker_fakes import FakeEvent, FakeMessage, FakeStore, FakeStream, FakeTradeEnds, Journal

SOURCES = 3
TOPIC = "risk-market-events"


class Feed:
    """Records of one target partition (0), offsets counting up."""

    def __init__(self) -> None:
        self.offset = 0
        self.stream = FakeStream(Journal())

    def event(self, value: bytes) -> tuple[FakeEvent, FakeStream]:
        event = FakeEvent(FakeMessage(TOPIC, 0, self.offset, b"k", value))
        self.offset += 1
        return event, self.stream

    def execution(
        self, record: Trade, source: int, lateness: int = 5 * SECOND
    ) -> tuple[FakeEvent, FakeStream]:
        return self.event(execution_value(record, source, record.timestamp - lateness))

    def marker(self, source: int, promise: int | None, end: int = 0) -> tuple[FakeEvent, FakeStream]:
        """A progress marker, or an idle one (``promise`` None) with its trades partition's end."""
        if promise is None:
            return self.event(idle_marker_value(source, end))
        return self.event(marker_value(source, promise))


def analysis(ends: FakeTradeEnds | None = None) -> tuple[WatermarkedAnalysis[MarketState], FakeStore]:
    store = FakeStore(Journal(), {0}, "market-state-changelog")
    return WatermarkedAnalysis(MARKET, worker_context(), store, SOURCES, ends or FakeTradeEnds()), store


async def run(
    analyzer: WatermarkedAnalysis[MarketState], events: list[tuple[FakeEvent, FakeStream]]
) -> Batch:
    batch = Batch(events=list(events))
    await analyzer.analyze(batch)
    return batch


def acked(batch: Batch) -> list[int]:
    return [event.message.offset for event, _stream in batch.events]


async def test_nothing_is_released_before_every_source_has_spoken() -> None:
    analyzer, _store = analysis()
    feed = Feed()
    t1 = trade(0, "BUY", 100.0, quantity=1.0, user="u-a")
    t2 = trade(1 * SECOND, "BUY", 100.0, quantity=1.0, user="u-b")
    batch = await run(analyzer, [feed.execution(t1, 0), feed.execution(t2, 1)])
    assert acked(batch) == [] and analyzer.held() == 2
    # Source 2 speaks: its promise is the smallest, still before both executions.
    batch = await run(analyzer, [feed.marker(2, t1.timestamp - 10 * SECOND)])
    assert acked(batch) == [] and analyzer.held() == 2
    # Every promise passes t1 but not t2: t1 goes, and its record is acked; t2's holds the acks after it.
    batch = await run(
        analyzer,
        [
            feed.marker(2, t2.timestamp + 1),
            feed.marker(0, t2.timestamp + 1),
            feed.marker(1, t2.timestamp - 1),
        ],
    )
    assert acked(batch) == [0] and analyzer.held() == 1
    # Source 1 idle: t2 goes, and every record up to the last is acked in offset order.
    batch = await run(analyzer, [feed.marker(1, None)])
    assert acked(batch) == [1, 2, 3, 4, 5, 6] and analyzer.held() == 0
    assert batch.changelog, "the symbol's state is written"


async def test_release_order_is_event_time_whatever_the_arrival_order() -> None:
    records = [
        trade(
            k * 20 * SECOND,
            "BUY",
            100.0 * (0.6 if k == 20 else 1.0),
            quantity=1.0,
            user=f"u-{k % 3}",
            trade_id=f"t{k:03d}",
        )
        for k in range(30)
    ]
    expected = evaluate_cross_account(records, EMPTY_REFERENCE, DEFAULT_RULES)
    assert [a.pattern.value for a in expected.alerts] == ["PRICE_CRASH"]
    analyzer, _store = analysis()
    feed = Feed()
    # Each source sends its own records in order; the sources interleave arbitrarily.
    by_source = {s: [r for k, r in enumerate(records) if k % 3 == s] for s in range(SOURCES)}
    events = []
    for source in (2, 0, 1):
        events += [feed.execution(r, source) for r in by_source[source]]
    events += [feed.marker(s, None) for s in range(SOURCES)]
    batch = await run(analyzer, events)
    alerts = [value for topic, _p, _k, value, _h in batch.outputs if topic == "risk-alerts"]
    assert len(alerts) == 1
    assert acked(batch) == list(range(len(events)))
    (state_bytes,) = batch.changelog.values()
    assert decode_market_state(state_bytes).executions == 30


async def test_a_record_behind_the_released_time_is_late_and_a_redelivery_changes_nothing() -> None:
    analyzer, _store = analysis()
    feed = Feed()
    first = trade(MINUTE, "BUY", 100.0, quantity=1.0, user="u-a")
    await run(analyzer, [feed.execution(first, 0), *(feed.marker(s, None) for s in range(SOURCES))])
    assert analyzer.counters["released"] == 1
    early = trade(0, "BUY", 100.0, quantity=1.0, user="u-b")
    batch = await run(analyzer, [feed.execution(early, 1)])
    assert analyzer.counters["late"] == 1 and acked(batch) == [4]
    # After a restart (buffers and cache gone), the same execution again: the state already has it.
    analyzer.forget()
    applied = MarketState()
    evaluate_market_trade(applied, first, DEFAULT_RULES)
    analyzer.table.values = {0: {b"ADA/USDT": encode_market_state(applied)}}  # type: ignore[attr-defined]
    batch = await run(analyzer, [feed.execution(first, 0), *(feed.marker(s, None) for s in range(SOURCES))])
    assert analyzer.counters["redelivered"] == 1
    sent = [topic for topic, *_ in batch.outputs if topic != "risk-market-context"]
    assert sent == [], "outputs first: a re-delivery sends no alert again (contexts and progress only)"
    assert batch.changelog, "but its state goes to the changelog again"


async def test_an_idle_source_counts_only_while_its_trades_partition_ends_where_its_marker_said() -> None:
    """Source 2 said idle with its trades partition at offset 7; the other sources promise past an
    execution of source 0. If the partition still ends at 7, the execution goes; if a trade was
    written there since (its owner hung, or its execution is on the way) or the broker does not
    answer, the execution waits, and the trade's execution, earlier in event time, is not late."""
    later = trade(2 * MINUTE, "BUY", 100.0, quantity=1.0, user="u-a", trade_id="t-later")
    earlier = trade(MINUTE, "BUY", 100.0, quantity=1.0, user="u-b", trade_id="t-earlier")

    def first_batch(feed: Feed) -> list[tuple[FakeEvent, FakeStream]]:
        return [
            feed.marker(2, None, end=7),
            feed.execution(later, 0),
            feed.marker(0, later.timestamp + MINUTE),
            feed.marker(1, later.timestamp + MINUTE),
        ]

    still = FakeTradeEnds({2: 7})
    analyzer, _store = analysis(still)
    feed = Feed()
    batch = await run(analyzer, first_batch(feed))
    assert analyzer.counters["released"] == 1 and acked(batch) == [0, 1, 2, 3]
    assert still.asked == [[2]], "one request, for the idle source only"

    for ends in (FakeTradeEnds({2: 8}), FakeTradeEnds({2: None})):
        analyzer, _store = analysis(ends)
        feed = Feed()
        batch = await run(analyzer, first_batch(feed))
        assert analyzer.held() == 1 and acked(batch) == [0], ends
        assert analyzer.counters["idle_held"] == 1
        # The source's execution comes, then its promise moves on: both go, in event time, none late.
        batch = await run(analyzer, [feed.execution(earlier, 2), feed.marker(2, later.timestamp + 1)])
        assert acked(batch) == [1, 2, 3, 4, 5]
        assert analyzer.counters["released"] == 2 and analyzer.counters["late"] == 0
        (state_bytes,) = batch.changelog.values()
        assert decode_market_state(state_bytes).executions == 2

    # A fresh idle marker with the partition's new end: trusted again.
    moved = FakeTradeEnds({2: 8})
    analyzer, _store = analysis(moved)
    feed = Feed()
    await run(analyzer, first_batch(feed))
    batch = await run(analyzer, [feed.marker(2, None, end=8)])
    assert analyzer.held() == 0 and acked(batch) == [1, 2, 3, 4]
    # No source idle: nothing to ask.
    analyzer, _store = analysis(moved)
    await run(analyzer, [Feed().marker(source, MINUTE) for source in range(SOURCES)])
    assert len(moved.asked) == 2
