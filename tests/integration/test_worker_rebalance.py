"""(c) Rebalances while batches are in flight: stale batches are fenced, nothing is lost or changed.

One worker consumes a steady flow of trades and order events; a second joins mid-stream, leaves again
(SIGTERM), and a third joins: three rebalances, each while the first worker has batches between
their steps. A batch from before a rebalance stops at its next step, unacked, and its events come
again after the seek (see "Rebalance fencing" in :mod:`riskengine.worker.commit`). Afterwards every
trade has its analyzed output, duplicates are byte-identical, and the alerts and the final states
of every user, symbol and owner pair equal the detection core run over the same input in one
process (the crash test's comparison).
"""

from __future__ import annotations

import asyncio
import warnings

import aiohttp

from .test_worker_crash import assert_same_as_one_process, generated_flow, in_event_time, send_in_event_time
from .worker_harness import WorkerProcess, isolated, prepare

TRADES = 4000
#: the flow is sent in CHUNKS parts, PACE_S apart while the membership changes, then at once
CHUNKS = 80
PACE_S = 0.4
#: chunks sent only after the last membership change (so it happens under load whatever its pace)
HELD_BACK = 10
#: chunks sent before the first membership change
WARM_UP = 5


async def fenced_batches(session: aiohttp.ClientSession, workers: list[WorkerProcess]) -> int:
    """The batches the running workers fenced so far (their /stats)."""
    total = 0
    for worker in workers:
        async with session.get(f"{worker.url}/stats") as response:
            total += (await response.json())["fencedBatches"]
    return total


async def assigned(session: aiohttp.ClientSession, workers: list[WorkerProcess], total: int) -> None:
    """Wait until ``workers`` split the ``total`` trades partitions between them (a rebalance ended)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    owned: list[set[str]] = []
    while loop.time() < deadline:
        owned = []
        for worker in workers:
            try:
                async with session.get(f"{worker.url}/stats") as response:
                    owned.append(set((await response.json())["consumerLag"]))
            except aiohttp.ClientError:
                owned.append(set())
        if all(owned) and sum(map(len, owned)) == total and len(set().union(*owned)) == total:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"the partitions were never split between the workers: {owned}")


async def test_rebalances_with_batches_in_flight_lose_nothing(settings, unique, tmp_path):
    own = isolated(settings, unique)
    catalog = await prepare(own)
    first, joining, last = (
        WorkerProcess(own, tmp_path / f"data-{n}", name=f"w{n}", worker_session_timeout="6")
        for n in (1, 2, 3)
    )
    trades, orders = generated_flow(TRADES)
    flow = in_event_time(trades, orders)
    chunk = -(-len(flow) // CHUNKS)
    warmed, changed = asyncio.Event(), asyncio.Event()

    async def load() -> None:
        for number, start in enumerate(range(0, len(flow), chunk)):
            if number == CHUNKS - HELD_BACK:
                await changed.wait()  # the load lasts until the last membership change is done
            await send_in_event_time(own, catalog, flow[start : start + chunk])
            if number == WARM_UP:
                warmed.set()
            if not changed.is_set():
                await asyncio.sleep(PACE_S)

    partitions = own.topic_partitions
    sending: asyncio.Future[None] | None = None
    try:
        first.start()
        await first.wait_ready()
        sending = asyncio.ensure_future(load())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            # Three membership changes under load, each waited for before the next.
            await asyncio.wait_for(warmed.wait(), 120)
            joining.start()
            await joining.wait_ready()
            await assigned(session, [first, joining], partitions)
            joining.stop()
            await assigned(session, [first], partitions)
            last.start()
            await last.wait_ready()
            await assigned(session, [first, last], partitions)
            changed.set()
            await sending

            await assert_same_as_one_process(own, catalog, trades, orders, [first, last])
            fenced = await fenced_batches(session, [first, last])
        # How often a rebalance meets a batch between its steps depends on timing; the states above
        # are checked either way. The count goes to the run's summary.
        warnings.warn(f"rebalance test: {fenced} batches fenced by the three rebalances", stacklevel=1)
    finally:
        if sending is not None:
            sending.cancel()
        for worker in (first, joining, last):
            worker.stop()
