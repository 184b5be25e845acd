"""The commit protocol's steps and their order, on in-process fakes (no Kafka, no RocksDB)."""

from __future__ import annotations

import asyncio

import pytest

from riskengine.worker.commit import (
    Batch,
    CommitProtocol,
    DeliveryFailed,
    DeliveryProgress,
    Fence,
    Fenced,
    Record,
)
from tests.unit.worker.worker_fakes import FakeProducer, FakeStore, FakeStream, Journal, events

CHANGELOG = "user-state-changelog"
OUTPUTS = "risk-analyzed-trades"


def protocol(journal: Journal) -> tuple[CommitProtocol, FakeStore, FakeProducer]:
    """The protocol over a store holding partitions 0 and 1, and a producer acknowledging at once."""
    store = FakeStore(journal, {0, 1}, CHANGELOG)
    producer = FakeProducer(journal)
    return CommitProtocol(store, producer, CHANGELOG, DeliveryProgress(), Fence()), store, producer


def batch_of(journal: Journal, per_partition: int = 4) -> tuple[Batch, FakeStream]:
    """A batch with ``per_partition`` events on partitions 0 and 1, one user per event, outputs each."""
    stream = FakeStream(journal)
    taken = events(
        "crypto-trades", [(p, f"u{p}-{i}".encode(), b"trade") for i in range(per_partition) for p in (0, 1)]
    )
    batch = Batch(events=[(event, stream) for event in taken])
    for event in taken:
        message = event.message
        assert message.key is not None
        batch.changelog[(message.partition, message.key)] = b"state of " + message.key
        record: Record = (OUTPUTS, message.partition, message.key, b"analyzed " + message.key, None)
        batch.outputs.append(record)
    return batch, stream


async def test_the_five_steps_run_in_order_for_the_whole_batch():
    journal = Journal()
    commit, store, producer = protocol(journal)
    batch, stream = batch_of(journal)

    await commit.persist(batch)
    await commit.publish(batch)

    # 1. state written (both partitions) < 2. changelog acknowledged < 3. offsets stored
    # < 4. outputs acknowledged < 5. events acked
    assert journal.last("state") < journal.first("sent", CHANGELOG)
    assert journal.last("acked", CHANGELOG) < journal.first("offset")
    assert journal.last("offset") < journal.first("sent", OUTPUTS)
    assert journal.last("acked", OUTPUTS) < journal.first("ack")
    assert store.values[0][b"u0-3"] == b"state of u0-3"
    # Four records per partition in batches of three: offsets 0-3, the stored offset is the last.
    assert store.offsets == {0: 3, 1: 3}
    assert producer.latest_values(CHANGELOG) == batch.changelog
    assert [r[3] for r in producer.records(OUTPUTS)] == sorted(r[3] for r in batch.outputs)
    assert stream.acked == [(e.message.partition, e.message.offset) for e, _s in batch.events]
    assert (
        commit.progress.delivered("crypto-trades", 0) == 3
        and commit.progress.delivered("crypto-trades", 1) == 3
    )


async def test_a_changelog_failure_acks_nothing():
    journal = Journal()
    commit, store, producer = protocol(journal)
    producer.failing.add(CHANGELOG)
    batch, stream = batch_of(journal)

    with pytest.raises(DeliveryFailed, match="step 2, the changelog"):
        await commit.persist(batch)

    assert stream.acked == []
    assert store.offsets == {}  # step 3 never ran
    assert producer.records(OUTPUTS) == []  # step 4 never ran
    assert commit.progress.delivered("crypto-trades", 0) is None


async def test_an_output_failure_acks_nothing():
    journal = Journal()
    commit, store, producer = protocol(journal)
    producer.failing.add(OUTPUTS)
    batch, stream = batch_of(journal)

    await commit.persist(batch)
    with pytest.raises(DeliveryFailed, match="step 4, the outputs"):
        await commit.publish(batch)

    assert stream.acked == []
    assert (
        commit.progress.delivered("crypto-trades", 0) is None
    )  # pending outputs stay pending in the envelopes
    assert store.offsets == {0: 3, 1: 3}  # the changelog did get the states


async def test_a_store_failure_stops_before_anything_is_sent():
    journal = Journal()
    commit, store, producer = protocol(journal)
    store.fail_writes = True
    batch, stream = batch_of(journal)

    with pytest.raises(DeliveryFailed, match="step 1"):
        await commit.persist(batch)

    assert producer.attempted == []
    assert stream.acked == []


async def test_delayed_acknowledgements_arriving_out_of_order_complete_each_step():
    journal = Journal()
    commit, store, producer = protocol(journal)
    producer.hold = True
    batch, stream = batch_of(journal, per_partition=7)  # three record batches per partition

    persisting = asyncio.ensure_future(commit.persist(batch))
    await asyncio.sleep(0.01)
    assert not persisting.done()  # waiting for the changelog's acknowledgements
    assert store.offsets == {}
    assert producer.release("reverse") == 6  # the last batch of each partition is acknowledged first
    await persisting
    assert store.offsets == {0: 6, 1: 6}  # the highest offset, whatever order the acks came in

    publishing = asyncio.ensure_future(commit.publish(batch))
    await asyncio.sleep(0.01)
    assert not publishing.done() and stream.acked == []
    producer.release("reverse")
    await publishing
    assert len(stream.acked) == 14


async def test_a_batch_started_before_a_rebalance_writes_nothing():
    journal = Journal()
    commit, store, producer = protocol(journal)
    batch, stream = batch_of(journal)
    commit.fence.begin_rebalance()  # after the batch was started, before its first step

    with pytest.raises(Fenced, match="step 1"):
        await commit.persist(batch)

    assert store.values == {} and store.offsets == {}
    assert producer.records(CHANGELOG) == [] and producer.records(OUTPUTS) == []
    assert stream.acked == []


async def test_a_rebalance_while_the_changelog_is_in_flight_stops_the_batch_after_that_step():
    journal = Journal()
    commit, store, producer = protocol(journal)
    producer.hold = True
    batch, stream = batch_of(journal)

    persisting = asyncio.ensure_future(commit.persist(batch))
    await asyncio.sleep(0.01)
    assert set(store.values) == {0, 1}  # step 1 ran before the rebalance
    commit.fence.begin_rebalance()
    producer.release()  # the sends in flight cannot be recalled: they complete
    with pytest.raises(Fenced, match="step 3"):
        await persisting
    with pytest.raises(Fenced, match="step 4"):
        await commit.publish(batch)

    # Nothing after the step in flight: no stored offset, no outputs, no acks.
    assert store.offsets == {}
    assert producer.records(OUTPUTS) == [] and stream.acked == []
    assert journal.kinds().count("ack") == 0


async def test_a_rebalance_between_the_outputs_and_the_acks_acks_nothing():
    journal = Journal()
    commit, _store, producer = protocol(journal)
    batch, stream = batch_of(journal)
    await commit.persist(batch)
    producer.hold = True

    publishing = asyncio.ensure_future(commit.publish(batch))
    await asyncio.sleep(0.01)
    commit.fence.begin_rebalance()
    producer.release()
    with pytest.raises(Fenced, match="step 5"):
        await publishing
    assert len(producer.records(OUTPUTS)) == 8 and stream.acked == []


async def test_outputs_first_a_fenced_batch_writes_no_state_after_its_outputs():
    journal = Journal()
    store = FakeStore(journal, {0, 1}, CHANGELOG)
    producer = FakeProducer(journal)
    fence = Fence()
    commit = CommitProtocol(store, producer, CHANGELOG, DeliveryProgress(), fence, outputs_first=True)
    producer.hold = True
    batch, stream = batch_of(journal)

    persisting = asyncio.ensure_future(commit.persist(batch))
    await asyncio.sleep(0.01)
    fence.begin_rebalance()
    producer.release()
    with pytest.raises(Fenced, match="step 1"):
        await persisting
    assert store.values == {} and producer.records(CHANGELOG) == [] and stream.acked == []


async def test_a_partition_not_held_by_a_current_batch_fails_the_batch_instead_of_skipping_it():
    journal = Journal()
    commit, store, producer = protocol(journal)
    batch, stream = batch_of(journal)
    store.held.discard(1)  # no rebalance started: the store and the assignment disagree

    with pytest.raises(DeliveryFailed, match="step 1"):
        await commit.persist(batch)
    # Nothing is written for either partition, nothing is sent or acked: the worker stops and the
    # batch is processed again by whoever owns the partitions next.
    assert store.values == {} and producer.records(CHANGELOG) == [] and stream.acked == []


async def test_a_new_generation_batch_goes_through_after_the_rebalance():
    journal = Journal()
    commit, store, _producer = protocol(journal)
    commit.fence.begin_rebalance()
    commit.fence.end_rebalance()
    batch, stream = batch_of(journal)
    batch.generation = commit.fence.generation

    await commit.persist(batch)
    await commit.publish(batch)
    assert store.offsets == {0: 3, 1: 3} and len(stream.acked) == 8
