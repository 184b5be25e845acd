"""(b) Two workers share the partitions; one dies by SIGKILL mid-stream; nothing is lost or changed.

Afterwards every input trade has an analyzed output, every duplicate output is byte-identical to
the first copy (the re-sent pending bytes), alerts likewise, and every user's state (the last
changelog value per user) equals the detection core run over the same input in one process. The
second test has the dying worker frozen before any trade arrives, so the partitions it leaves behind
have no committed offset (see :mod:`riskengine.worker.faust_compat`).
"""

from __future__ import annotations

import asyncio
import random
import warnings
from collections import defaultdict

import aiohttp
import pytest

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.core import DEFAULT_RULES, EMPTY_REFERENCE, Side, Trade, decode_state, evaluate_many
from riskengine.settings import Settings
from riskengine.worker.tables.user_state import TABLE_NAME, decode_envelope

from .test_worker import collect
from .test_worker_web import owned_partitions
from .worker_harness import WorkerProcess, isolated, prepare, running, send_trades

USERS = 40
TRADES = 3000
CHUNK = 250


def generated_trades() -> list[Trade]:
    """Deterministic trades of USERS users, in event-time order per user, with some spikes."""
    rng = random.Random(11)
    trades = []
    for n in range(TRADES):
        user = f"crash-u{rng.randrange(USERS)}"
        price = 100.0 * (1 + rng.random())
        quantity = rng.choice((1.0, 2.0, 5.0, 50.0, 500.0))
        trades.append(
            Trade(
                trade_id=f"crash-t{n}",
                user_id=user,
                customer_id=f"c-{user}",
                symbol=rng.choice(("BTC/USDT", "ETH/USDT", "SOL/USDT")),
                side=rng.choice((Side.BUY, Side.SELL)),
                quantity=quantity,
                price=price,
                notional=quantity * price,
                timestamp=1_764_000_000_000 + n * 100,
                exchange="TEST",
                order_type="LIMIT",
            )
        )
    return trades


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
    settings: Settings, catalog: SchemaCatalog, trades: list[Trade], workers: list[WorkerProcess]
) -> None:
    """Every trade analyzed; duplicates byte-identical; alerts and final states as in one process."""
    copies = await analyzed_copies(settings, catalog, trades, workers)
    assert all(len(values) == 1 for values in copies.values()), "duplicates must be byte-identical"

    states, evaluations = evaluate_many(trades, EMPTY_REFERENCE, DEFAULT_RULES)
    alerts = await collect(
        settings, f"risk-alerts{settings.worker_topic_suffix}", lambda rs: False, wait_s=3.0
    )
    alert_copies: dict[str, set[bytes]] = defaultdict(set)
    for record in alerts:
        alert_copies[catalog.decode(record.value, "RiskAlert")["alertId"]].add(record.value)
    assert set(alert_copies) == {a.alert_id for e in evaluations for a in e.alerts}
    assert all(len(values) == 1 for values in alert_copies.values())

    changelog = await collect(
        settings, f"{settings.worker_app_id}-{TABLE_NAME}-changelog", lambda rs: False, wait_s=3.0
    )
    last: dict[str, bytes] = {}
    for record in sorted(changelog, key=lambda r: (r.partition, r.offset)):
        last[record.key.decode()] = record.value
    assert set(last) == set(states)
    for user, state in states.items():
        assert decode_state(decode_envelope(last[user]).state) == state, user


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
    trades = generated_trades()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await owned_partitions(session, workers, settings.topic_partitions)
    for start in range(0, TRADES, CHUNK):
        chunk = trades[start : start + CHUNK]
        await send_trades(settings, catalog, chunk)
        if start == 4 * CHUNK:
            workers[1].kill()
        await asyncio.sleep(0.2)

    await assert_same_as_one_process(settings, catalog, trades, workers)


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
    trades = generated_trades()[:1000]
    await send_trades(settings, catalog, trades)
    workers[1].kill()
    await assert_same_as_one_process(settings, catalog, trades, workers)
