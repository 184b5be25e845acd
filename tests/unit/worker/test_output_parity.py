"""The worker's outputs on a generated run, pinned byte for byte across changes of its internals.

A simulator run (trades with their order events) goes through the per-user analysis in batches, and
the executions it republishes through the market and account-pair analyses, with the clock fixed.
What leaves the worker for its users (analyzed trades, alerts, dead letters, market contexts and
progress) must hash to :data:`PINNED`, the digest the code gave before the batch path and the
packed repartition records (issue 16; computed at commit 30174b1 with this test's
``test_the_outputs_on_a_generated_run_are_the_ones_pinned``). The repartition topics and the
changelogs are internal (their format changed on purpose) and are left out; what the market and
pair agents make of them is in. The digest is the same whether users' states are written with every
batch or between output journals (the checkpoint interval).

When an intended change of the detection moves the digest, run this test, check that the change
is the intended one, and pin the new digest with the commit that explains it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from riskengine.producer.simulator import SimulationConfig, Simulator
from riskengine.worker.agents.user_agent import UserAnalysis
from riskengine.worker.agents.watermarked_agent import MARKET, PAIRS, WatermarkedAnalysis
from riskengine.worker.commit import Batch, CommitProtocol, DeliveryProgress, Fence, Record
from riskengine.worker.tables.user_state import JOURNAL_KEY
from riskengine_devtools.bench_analysis import keyed_events, simulator_events
from tests.unit.worker.test_user_agent import Inputs, worker_context
from tests.unit.worker.worker_fakes import (
    FakeProducer,
    FakeStore,
    FakeStream,
    FakeTradeEnds,
    Journal,
)

#: sha-256 of the outputs (see the module docstring) and how many records they are
PINNED = ("6fe573687bc99e781aaf3d95255891d3662bc4956e72f4b924ee8bda1bafac5e", 1693)
PARTITIONS = 6
#: the worker's clock: after every event of the run (none is ahead of it)
NOW_S = 1_893_456_000.0
BATCH = 250
INTERNAL = ("risk-market-events", "risk-pair-events")


def _digest(records: list[Record]) -> tuple[str, int]:
    digest = hashlib.sha256()
    for topic, partition, key, value, headers in records:
        digest.update(f"{topic}|{partition}|".encode())
        for part in (key or b"", value, repr(headers or []).encode()):
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest(), len(records)


async def _user_outputs(
    events: list[Any], checkpoint_interval: float
) -> tuple[list[Record], list[Record], int]:
    """The per-user analysis over ``events`` in batches: (outputs for users, repartitioned records,
    output journals written)."""
    context = worker_context(checkpoint_interval)
    journal = Journal()
    store = FakeStore(journal, set(range(PARTITIONS)), "user-state-changelog")
    producer = FakeProducer(journal)
    progress = DeliveryProgress()
    analysis = UserAnalysis(context, store, progress, Inputs())
    commit = CommitProtocol(store, producer, "user-state-changelog", progress, Fence())
    stream = FakeStream(journal)
    outputs: list[Record] = []
    repartitioned: list[Record] = []
    journals = 0
    for start in range(0, len(events), BATCH):
        batch = Batch(events=[(event, stream) for event in events[start : start + BATCH]])
        await analysis.analyze(batch)
        assert analysis.held() == {}
        await commit.persist(batch)
        await commit.publish(batch)
        journals += sum(1 for _partition, key in batch.changelog if key == JOURNAL_KEY)
        for record in batch.outputs:
            (repartitioned if record[0] in INTERNAL else outputs).append(record)
    return outputs, repartitioned, journals


async def _keyed_outputs(core: Any, topic: str, records: list[Record]) -> list[Record]:
    """A market or pair analysis over the repartitioned ``records`` of ``topic``, then every source
    idle (which releases what is left)."""
    context = worker_context()
    store = FakeStore(Journal(), set(range(PARTITIONS)), f"{core.name}-changelog")
    analysis = WatermarkedAnalysis(core, context, store, PARTITIONS, FakeTradeEnds())
    stream = FakeStream(Journal())
    events = [(event, stream) for event in keyed_events(topic, records)]
    outputs: list[Record] = []
    for start in range(0, len(events), BATCH):
        batch = Batch(events=events[start : start + BATCH])
        await analysis.analyze(batch)
        outputs += batch.outputs
    return outputs


def _run_events(context: Any) -> list[Any]:
    simulator = Simulator(SimulationConfig(seed=11, start_ms=int(NOW_S * 1000) - 6 * 3_600_000, users=300))
    return simulator_events(context, simulator, 1_500)


@pytest.mark.parametrize("checkpoint_interval", [0.0, 1.0], ids=["every-batch", "journal"])
async def test_the_outputs_on_a_generated_run_are_the_ones_pinned(
    monkeypatch: pytest.MonkeyPatch, checkpoint_interval: float
) -> None:
    # With the clock fixed, a 1 s interval never elapses: every batch after the first writes output
    # journals instead of the users' envelopes.
    monkeypatch.setattr(time, "time", lambda: NOW_S)
    events = _run_events(worker_context())
    outputs, repartitioned, journals = await _user_outputs(events, checkpoint_interval)
    assert (journals > 0) == (checkpoint_interval > 0)
    market = await _keyed_outputs(MARKET, "risk-market-events", repartitioned)
    pairs = await _keyed_outputs(PAIRS, "risk-pair-events", repartitioned)
    found = _digest([*outputs, *market, *pairs])
    # What the run holds, so a digest of an empty run cannot pass.
    assert sum(1 for record in outputs if record[0] == "risk-analyzed-trades") == 1_500
    assert any(record[0] == "risk-alerts" for record in [*outputs, *market, *pairs])
    assert found == PINNED
