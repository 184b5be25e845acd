"""Reference data on risk-reference, end to end: ``riskengine reference publish`` and a running worker.

One worker process on its own topics (``worker_harness``); the reference files are published with
the real command (the console script, in the worker's environment). The worker first runs with
profiles only, then:

1. a file with sanctioned and restricted countries, published with ``riskengine reference
   publish``, makes the running worker raise SANCTIONS_HIT for a trade of an account in a
   sanctioned country and flag RESTRICTED_COUNTRY for one in a restricted country, neither of
   which it did before;
2. a higher version published at runtime replaces the lists without a restart;
3. an invalid record sent straight to the topic (the command would refuse it) and a stale one are
   ignored and counted, the previous version staying active.

On a generated run, the run's reference file published with the command gives the worker the
same SANCTIONS_HIT alerts as ``riskengine replay --reference`` of that file.

Which version is active is read from the worker's ``/stats``; what it does with it, from the
analyzed trades and alerts it writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from riskengine.contracts.avro_codec import SchemaCatalog
from riskengine.contracts.reference_record import REFERENCE_KEY, reference_record
from riskengine.core import ReferenceData, parse_trade
from riskengine.settings import Settings

from .kafka_io import end_offsets
from .test_worker import collect, decoded
from .worker_harness import WorkerProcess, isolated, prepare, sample_trades, send, send_trades, worker_env

RISKENGINE = Path(sys.executable).parent / "riskengine"

PROFILES = [
    {"userId": user, "customerId": f"c-{user}", "kycTier": 3, "country": country}
    for user, country in (("kp-1", "KP"), ("kp-2", "KP"), ("ir-1", "IR"), ("ir-2", "IR"), ("ir-3", "IR"))
]


def reference_publish(
    settings: Settings, path: Path, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``riskengine reference publish`` in the test's isolation (its topic suffix)."""
    return subprocess.run(
        [str(RISKENGINE), "reference", "publish", str(path), *extra],
        env=worker_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(tmp_path: Path, name: str, document: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


class Probe:
    """Sends one trade per account and returns what the worker made of it."""

    def __init__(self, settings: Settings, catalog: SchemaCatalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.base = sample_trades()[0]
        self.sent = 0

    async def trades(self, *users: str) -> dict[str, dict[str, Any]]:
        """userId -> the analyzed trade of a new small trade of each of ``users``."""
        ids: dict[str, str] = {}
        trades = []
        for user in users:
            self.sent += 1
            trade = dataclasses.replace(
                self.base,
                trade_id=f"ref-{self.sent}",
                user_id=user,
                customer_id=f"c-{user}",
                counterparty_user_id=None,
                timestamp=self.base.timestamp + self.sent * 1000,
            )
            ids[trade.trade_id] = user
            trades.append(trade)
        await send_trades(self.settings, self.catalog, trades)
        topic = f"risk-analyzed-trades{self.settings.worker_topic_suffix}"
        records = await collect(self.settings, topic, lambda rs: len(rs) >= self.sent, wait_s=30.0)
        analyzed = {
            a["originalTrade"]["tradeId"]: a for a in decoded(self.catalog, records, "RiskAnalyzedTrade")
        }
        missing = set(ids) - set(analyzed)
        assert not missing, f"not analyzed within 30 s: {missing}"
        return {user: analyzed[trade_id] for trade_id, user in ids.items()}

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert the worker wrote so far."""
        topic = f"risk-alerts{self.settings.worker_topic_suffix}"
        return decoded(
            self.catalog, await collect(self.settings, topic, lambda rs: False, wait_s=2.0), "RiskAlert"
        )


async def stats(worker: WorkerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{worker.url}/stats", timeout=5.0)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


async def wait_for(worker: WorkerProcess, **expected: Any) -> dict[str, Any]:
    """Poll /stats until every ``expected`` figure is there (10 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        current = await stats(worker)
        if all(current.get(name) == value for name, value in expected.items()):
            return current
        if loop.time() > deadline:
            raise AssertionError(f"/stats never showed {expected}: {current}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def worker(settings, unique, tmp_path):
    """One worker on isolated topics, no reference data at all yet; always stopped."""
    own = isolated(settings, unique)
    catalog = await prepare(own)
    process = WorkerProcess(own, tmp_path / "data")
    process.start()
    try:
        await process.wait_ready()
        yield own, catalog, process
    finally:
        process.stop()


async def test_published_reference_data_reaches_the_running_worker_and_updates_at_runtime(worker, tmp_path):
    settings, catalog, process = worker
    probe = Probe(settings, catalog)
    suffix = settings.worker_topic_suffix

    # 0. Profiles only (version 1: no lists): no sanction, no restriction.
    done = reference_publish(settings, write(tmp_path, "profiles.json", {"profiles": PROFILES}))
    assert done.returncode == 0, done.stderr
    assert f"risk-reference{suffix}" in done.stdout and "version 1 (active was 0)" in done.stdout
    assert f"user-profiles{suffix}" in done.stdout and "5 profile(s)" in done.stdout
    await wait_for(process, referenceVersion=1)
    before = await probe.trades("kp-1", "ir-1")
    assert "NO_PROFILE" not in before["kp-1"]["complianceFlags"], "the profiles arrived"
    for analyzed in before.values():
        assert not {"SANCTIONED_COUNTRY", "RESTRICTED_COUNTRY"} & set(analyzed["complianceFlags"])
        assert "SANCTIONS_HIT" not in analyzed["triggeredPatterns"]
    assert not [a for a in await probe.alerts() if a["patternType"] == "SANCTIONS_HIT"]

    # 1. The lists, published with the command: the default version is the active one + 1.
    lists = {"profiles": PROFILES, "sanctionedCountries": ["KP"], "restrictedCountries": ["IR"]}
    done = reference_publish(settings, write(tmp_path, "lists.json", lists))
    assert done.returncode == 0, done.stderr
    assert "version 2 (active was 1)" in done.stdout
    assert "1 sanctioned country(ies), 1 restricted country(ies)" in done.stdout
    await wait_for(process, referenceVersion=2)
    after = await probe.trades("kp-2", "ir-2")
    assert "SANCTIONED_COUNTRY" in after["kp-2"]["complianceFlags"]
    assert "SANCTIONS_HIT" in after["kp-2"]["triggeredPatterns"]
    assert "RESTRICTED_COUNTRY" in after["ir-2"]["complianceFlags"]
    assert "SANCTIONS_HIT" not in after["ir-2"]["triggeredPatterns"]
    hits = [a for a in await probe.alerts() if a["patternType"] == "SANCTIONS_HIT"]
    assert [(a["userId"], a["evidence"]) for a in hits] == [
        ("kp-2", [after["kp-2"]["originalTrade"]["tradeId"]])
    ]

    # 2. A runtime update with an explicit higher version: IR becomes sanctioned, KP is dropped.
    update = {"sanctionedCountries": ["IR"], "sanctionedUsers": ["kp-1"]}
    done = reference_publish(settings, write(tmp_path, "update.json", update), "--version", "10")
    assert done.returncode == 0, done.stderr
    assert "version 10 (active was 2)" in done.stdout and "0 profile(s)" in done.stdout
    await wait_for(process, referenceVersion=10)
    updated = await probe.trades("ir-3", "kp-2", "kp-1")
    assert "SANCTIONED_COUNTRY" in updated["ir-3"]["complianceFlags"]
    assert "RESTRICTED_COUNTRY" not in updated["ir-3"]["complianceFlags"], "the lists are replaced as a whole"
    assert "SANCTIONED_COUNTRY" not in updated["kp-2"]["complianceFlags"]
    assert "SANCTIONED_USER" in updated["kp-1"]["complianceFlags"]
    hit_users = {a["userId"] for a in await probe.alerts() if a["patternType"] == "SANCTIONS_HIT"}
    assert hit_users == {"kp-2", "ir-3", "kp-1"}

    # A version not above the active one is refused by the command, and nothing is sent.
    ends = await end_offsets(settings, f"risk-reference{suffix}")
    done = reference_publish(settings, write(tmp_path, "old.json", lists), "--version", "10")
    assert done.returncode == 2 and "not above the active version 10" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert await end_offsets(settings, f"risk-reference{suffix}") == ends

    # 3. An invalid record and a stale one, sent past the command: ignored, counted, 10 stays.
    invalid = reference_record(ReferenceData(), 11) | {"sanctionedCountries": ["Iran"]}
    stale = reference_record(ReferenceData.from_document({"sanctionedCountries": ["KP"]}), 3)
    await send(
        settings,
        f"risk-reference{suffix}",
        [
            (REFERENCE_KEY, catalog.encode("RiskReference", invalid)),
            (REFERENCE_KEY, catalog.encode("RiskReference", stale)),
        ],
    )
    current = await wait_for(process, referenceRejected=1, referenceIgnoredStale=1)
    assert current["referenceVersion"] == 10 and "sanctionedCountries[0]" in current["referenceLastError"]
    kept = await probe.trades("ir-1", "kp-1")
    assert "SANCTIONED_COUNTRY" in kept["ir-1"]["complianceFlags"]
    assert "SANCTIONED_USER" in kept["kp-1"]["complianceFlags"]
    # The command's default version follows the highest VALID version on the topic (10, not 11).
    done = reference_publish(settings, write(tmp_path, "next.json", lists))
    assert done.returncode == 0 and "version 11 (active was 10)" in done.stdout, done.stderr
    await wait_for(process, referenceVersion=11)


async def test_an_unreachable_registry_is_one_line_and_publishes_nothing(settings, unique, tmp_path):
    own = isolated(settings, unique)
    await prepare(own)
    path = write(tmp_path, "lists.json", {"profiles": PROFILES, "sanctionedCountries": ["KP"]})
    done = reference_publish(own, path, schema_registry_url="http://127.0.0.1:9/apis/ccompat/v7")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "RISKENGINE_SCHEMA_REGISTRY_URL" in lines[0], done.stderr
    for topic in (f"risk-reference{own.worker_topic_suffix}", f"user-profiles{own.worker_topic_suffix}"):
        assert sum((await end_offsets(own, topic)).values()) == 0, topic


def command(argv: list[str]) -> None:
    """Run a command of the offline toolchain (generate, replay); fail with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _alert_ids(path: Path, pattern: str) -> set[str]:
    lines = path.read_text().splitlines()
    return {alert["alertId"] for alert in map(json.loads, lines) if alert["patternType"] == pattern}


async def test_on_a_generated_run_the_worker_raises_the_sanctions_hits_replay_raises(worker, tmp_path):
    """The generated reference file, published, gives the worker what ``replay --reference`` has.

    Half of the simulator's sanctioned accounts are sanctioned by their country, which only the
    reference lists say: with the profiles alone the worker raised fewer SANCTIONS_HIT alerts.
    """
    settings, catalog, process = worker
    run = tmp_path / "run" / "trades.jsonl"
    generate = [
        *(str(RISKENGINE), "generate", "--trades", "4000", "--out", str(run), "--seed", "3"),
        *("--scenarios", "sanctioned_user", "--scenario-every", "60", "--quiet-ms", "1000"),
    ]
    command(generate)
    reference_file = run.with_name("trades.reference.json")
    profiles_only = write(
        tmp_path, "profiles.json", {"profiles": json.loads(reference_file.read_text())["profiles"]}
    )
    expected: dict[str, set[str]] = {}
    for name, path in (("full", reference_file), ("profiles", profiles_only)):
        out = tmp_path / f"replay-{name}"
        replay = [str(RISKENGINE), "replay", str(run), "--reference", str(path), "--out", str(out)]
        command(replay)
        expected[name] = _alert_ids(out / "alerts.jsonl", "SANCTIONS_HIT")
    assert len(expected["profiles"]) < len(expected["full"]), "the lists matter in this run"

    done = reference_publish(settings, reference_file)
    assert done.returncode == 0, done.stderr
    assert "4 sanctioned country(ies)" in done.stdout
    await wait_for(process, referenceVersion=1)
    trades = [parse_trade(json.loads(line)) for line in run.read_text().splitlines()]
    await send_trades(settings, catalog, trades)
    suffix = settings.worker_topic_suffix
    await collect(settings, f"risk-analyzed-trades{suffix}", lambda rs: len(rs) >= len(trades), wait_s=120.0)
    alerts = decoded(
        catalog, await collect(settings, f"risk-alerts{suffix}", lambda rs: False, wait_s=3.0), "RiskAlert"
    )
    got = {a["alertId"] for a in alerts if a["patternType"] == "SANCTIONS_HIT"}
    assert got == expected["full"]
