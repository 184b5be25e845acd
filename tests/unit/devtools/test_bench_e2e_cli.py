"""``riskengine bench-e2e``'s command line, run as a real process (no services: it stops at validation)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from riskengine.worker.metrics import Metrics, exposition
from riskengine_devtools import bench_e2e
from tests.unit.worker.test_metrics import stats_of

RISKENGINE = Path(sys.executable).parent / "riskengine"


@pytest.mark.parametrize("event_loop", ["aio", "uvloop", "both"])
def test_every_event_loop_choice_reaches_the_argument_checks(event_loop: str) -> None:
    # Importing faust reads --loop from sys.argv and installs that loop; "both" used to crash it.
    done = subprocess.run(
        [str(RISKENGINE), "bench-e2e", "--event-loop", event_loop, "--trades", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "riskengine bench-e2e: --trades >= 2" in done.stderr


def test_an_order_flow_row_of_one_trade_is_refused() -> None:
    done = subprocess.run(
        [str(RISKENGINE), "bench-e2e", "--order-flow-trades", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--order-flow-trades must be 0 or at least 2" in done.stderr


@pytest.mark.parametrize("rates", ["0", "1000,x", "", "1000,100001"])
def test_latency_rates_outside_the_range_are_refused(rates: str) -> None:
    done = subprocess.run(
        [str(RISKENGINE), "bench-e2e", "--rates", rates], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--rates" in done.stderr, done.stderr


def test_the_worker_memory_is_read_from_proc_status() -> None:
    status = "Name:\tfaust\nVmHWM:\t  250000 kB\nVmRSS:\t  200000 kB\nThreads:\t5\n"
    assert bench_e2e.read_memory(status) == bench_e2e.Memory(200_000, 250_000)
    assert bench_e2e.read_memory("Name:\tzombie\n") is None  # an exited process has no VmRSS
    # This process's own status parses, and the peak is at least the current size.
    own = bench_e2e.read_memory(Path("/proc/self/status").read_text())
    assert own is not None and own.peak_kib >= own.rss_kib > 0


def _run(rate: int, totals: list[float], sent: int | None = None) -> bench_e2e.LatencyRun:
    latencies = [bench_e2e.Latency(total, total / 2) for total in totals]
    return bench_e2e.LatencyRun(rate, len(totals) if sent is None else sent, latencies)


def test_the_verdict_counts_only_complete_runs_within_the_rates_target() -> None:
    fast = [10.0] * 99 + [40.0]
    slow = [10.0] * 90 + [80.0] * 10
    assert bench_e2e.latency_target_ms(1_000) == 50.0 and bench_e2e.latency_target_ms(5_000) == 100.0
    runs = [_run(1_000, fast), _run(1_000, slow), _run(1_000, fast, sent=101)]
    # The second run's p99 is 80 ms; the third lost an output, whatever its percentiles.
    assert bench_e2e._verdict(runs) == "p99 <= 50 ms in 1 of 3 runs"
    assert bench_e2e._verdict([_run(5_000, slow)]) == "p99 <= 100 ms in 1 of 1 runs"
    assert bench_e2e._verdict([_run(5_000, [])]) == "p99 <= 100 ms in 0 of 1 runs"


def test_a_stage_is_ready_once_its_faust_worker_says_so(tmp_path: Path) -> None:
    def child(says: str) -> bench_e2e.Child:
        one = bench_e2e.Child(["sh", "-c", f"echo '{says}'"], {}, tmp_path / f"{len(says)}.log", None)
        one.process.wait(10)
        return one

    assert child("[2026-12-03 07:05:46,993] [32030] [INFO] [^Worker]: Ready ").ready()
    assert not child("[2026-12-03 07:05:46,993] [32030] [INFO] [^Worker]: Starting... ").ready()


def test_a_stage_names_the_detection_core_its_worker_logged(tmp_path: Path) -> None:
    said = (
        "[2026-12-05 00:34:22,629] [15719] [INFO] detection core: compiled (mypyc 2.4.1, opt_level 3); "
        "riskengine from /tmp/base/riskengine"
    )
    one = bench_e2e.Child(
        ["sh", "-c", f"echo 'starting'; echo '{said}'; echo '[^Worker]: Ready'"], {}, tmp_path / "w.log", None
    )
    one.process.wait(10)
    assert one.detection_core() == "compiled (mypyc 2.4.1, opt_level 3); riskengine from /tmp/base/riskengine"
    quiet = bench_e2e.Child(["sh", "-c", "echo '[^Worker]: Ready'"], {}, tmp_path / "p.log", None)
    quiet.process.wait(10)
    assert quiet.detection_core() is None


def test_state_bytes_per_event_is_the_difference_of_two_readings() -> None:
    assert bench_e2e.per_event((1_000.0, 10.0), (41_000.0, 30.0)) == 2_000.0
    # Unknown when a reading is missing or no event was batched in between.
    assert bench_e2e.per_event(None, (1.0, 1.0)) is None
    assert bench_e2e.per_event((1.0, 5.0), (9.0, 5.0)) is None
    row = bench_e2e._latency_row(replace(_run(1_000, [10.0] * 100), state_bytes_per_event=1_234.4))
    assert row.endswith("     1,234         -"), row
    assert bench_e2e._latency_row(_run(1_000, [10.0] * 100)).endswith("         -         -")


def test_the_workers_cpu_per_event_is_its_cpu_time_over_the_events_it_batched() -> None:
    # 0.5 CPU seconds over 2,000 events batched between the readings: 250 us per event.
    assert bench_e2e.cpu_per_event_us(10.0, 10.5, (0.0, 1_000.0), (9.0, 3_000.0)) == 250.0
    # Unknown when a reading is missing or no event was batched in between.
    assert bench_e2e.cpu_per_event_us(None, 10.5, (0.0, 1_000.0), (9.0, 3_000.0)) is None
    assert bench_e2e.cpu_per_event_us(10.0, None, (0.0, 1_000.0), (9.0, 3_000.0)) is None
    assert bench_e2e.cpu_per_event_us(10.0, 10.5, None, (9.0, 3_000.0)) is None
    assert bench_e2e.cpu_per_event_us(10.0, 10.5, (0.0, 3_000.0), (9.0, 3_000.0)) is None
    row = bench_e2e._latency_row(replace(_run(1_000, [10.0] * 100), cpu_us_per_event=1_287.6))
    assert row.endswith("         -     1,288"), row


def test_cpu_seconds_are_read_from_proc_stat() -> None:
    # utime 250 and stime 50 ticks at 100 a second; the name holds spaces and parentheses.
    fields = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0", "250", "50", "7", "8"]
    stat = "4242 (faust (worker) 1) " + " ".join(fields)
    assert bench_e2e.read_cpu_seconds(stat, 100) == 3.0
    assert bench_e2e.read_cpu_seconds("4242 (faust) S 1", 100) is None  # too few fields
    assert bench_e2e.read_cpu_seconds("no stat line here", 100) is None
    assert bench_e2e.read_cpu_seconds("1 (x) " + " ".join([*fields[:11], "u", "s"]), 100) is None
    # This process's own counter parses and grows while it works.
    ticks = os.sysconf("SC_CLK_TCK")
    started = bench_e2e.read_cpu_seconds(Path("/proc/self/stat").read_text(), ticks)
    assert started is not None and started > 0
    deadline = time.monotonic() + 10
    now = started
    while now <= started and time.monotonic() < deadline:
        sum(range(100_000))
        now = bench_e2e.read_cpu_seconds(Path("/proc/self/stat").read_text(), ticks) or 0.0
    assert now > started


def test_a_stages_cpu_seconds_are_unknown_once_it_has_exited(tmp_path: Path) -> None:
    child = bench_e2e.Child(["sleep", "30"], {}, tmp_path / "sleep.log", None)
    other = bench_e2e.Child(["sleep", "30"], {}, tmp_path / "other.log", None)
    try:
        assert child.cpu_seconds() is not None
        assert bench_e2e._cpu_seconds([child, other]) is not None
    finally:
        child.stop()
    assert child.cpu_seconds() is None
    # A stage with one process gone has no CPU figure, rather than a partial one.
    assert bench_e2e._cpu_seconds([child, other]) is None
    other.stop()


def test_the_cpu_ratio_is_records_per_core_against_the_passthrough_agent() -> None:
    # The passthrough agent spends 200 us per record, the engine 80: 2.5 times the records per core.
    assert bench_e2e.cpu_ratio(200.0, 80.0) == "250%"
    assert bench_e2e.cpu_ratio(200.0, 400.0) == "50%"
    assert bench_e2e.cpu_ratio(None, 80.0) == "-"
    assert bench_e2e.cpu_ratio(200.0, None) == "-"
    assert bench_e2e.cpu_ratio(200.0, 0.0) == "-"


async def test_state_written_reads_the_user_agents_sums_from_a_workers_metrics() -> None:
    metrics = Metrics()
    metrics.histograms.changelog_bytes.labels("user").observe(30_000)
    metrics.histograms.changelog_bytes.labels("market").observe(999)
    metrics.histograms.batch_size.labels("user").observe(12)
    pages = {"/metrics": exposition(lambda: stats_of(metrics), metrics.histograms), "/bad": "not { metrics"}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.path]) if request.path in pages else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        assert await bench_e2e.state_written(f"http://127.0.0.1:{port}") == (30_000.0, 12.0)
        # Not a worker, or not parseable: unknown, never a crash of the benchmark.
        assert await bench_e2e.state_written(f"http://127.0.0.1:{port}/none") is None
        assert await bench_e2e.state_written(f"http://127.0.0.1:{port}/bad") is None
    finally:
        await runner.cleanup()
    assert await bench_e2e.state_written(f"http://127.0.0.1:{port}") is None  # nothing listening
