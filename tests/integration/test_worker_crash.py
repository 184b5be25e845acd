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
import warnings
from collections import defaultdict
from typing import Any

import aiohttp
import pytest

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import OrderEvent, Trade
from riskengine.core.market_feed import kafka_partition
from riskengine.settings import Settings
from riskengine.worker.repartition import Marker
from riskengine.worker.repartition import decode as decode_repartitioned
from riskengine_devtools.chaos.flow import (
    START as START,
)
from riskengine_devtools.chaos.flow import (
    TRADES as TRADES,
)
from riskengine_devtools.chaos.flow import (
    USERS as USERS,
)
from riskengine_devtools.chaos.flow import (
    generated_flow as generated_flow,
)
from riskengine_devtools.chaos.flow import (
    in_event_time as in_event_time,
)
from riskengine_devtools.chaos.flow import (
    one_process as one_process,
)
from riskengine_devtools.chaos.flow import (
    send_in_event_time as send_in_event_time,
)

# The flow, the one-process run and the producer are the chaos suite's (riskengine chaos); other
# tests import them from here.
from riskengine_devtools.chaos.scenarios import settled_state_checks

from .test_worker import collect
from .test_worker_web import owned_partitions
from .worker_harness import WorkerProcess, isolated, prepare, running

CHUNK = 250


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

    _, expected, cross = one_process(trades, orders, settings.topic_partitions)
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

    # The final states: the chaos verifier's check (last changelog value per key against one process).
    for check in await settled_state_checks(settings, trades, orders):
        assert check.ok, check.line()


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

    Before it froze, the second worker declared its empty partitions idle (as it should). The
    survivor's users trade too and move the markets on; the market and pair agents see the frozen
    partitions' ends grow past their idle markers and wait for them, so those trades are not late
    when the survivor reads them (once they were: README "Idle partitions").
    """
    settings, catalog, workers = crash_workers
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        owned = await owned_partitions(session, workers, settings.topic_partitions)
    frozen = {int(partition) for partition in owned[1]}

    def idle_sources(records: list[Any]) -> set[int]:
        markers = (decode_repartitioned(record.value) for record in records)
        return {m.source for m in markers if isinstance(m, Marker) and m.promise is None}

    # Frozen only once it has told the market agents its partitions are idle.
    said = await collect(
        settings, f"risk-market-events{settings.worker_topic_suffix}", lambda rs: idle_sources(rs) >= frozen
    )
    assert idle_sources(said) >= frozen
    workers[1].freeze()
    trades, orders = generated_flow(2000)
    assert any(kafka_partition(t.user_id.encode(), settings.topic_partitions) in frozen for t in trades)
    assert any(kafka_partition(t.user_id.encode(), settings.topic_partitions) not in frozen for t in trades)
    await send_in_event_time(settings, catalog, in_event_time(trades, orders))
    workers[1].kill()
    await assert_same_as_one_process(settings, catalog, trades, orders, workers)
