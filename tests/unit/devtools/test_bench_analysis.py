"""``riskengine bench analysis``: the worker's analyses over a simulator run, without Kafka."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from riskengine.producer.simulator import SimulationConfig, Simulator
from riskengine.settings import Settings
from riskengine_devtools import bench_analysis
from riskengine_devtools.bench_core import register


def bench(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "analysis", *arguments])


def test_it_analyzes_every_trade_of_the_run_and_prints_the_cpu_per_trade(capsys):
    args = bench("--trades", "300", "--users", "60", "--batch", "100", "--passes", "2")
    assert args.handler(args, Settings.from_env({})) == 0
    out = capsys.readouterr().out
    passes = re.findall(
        r"pass \d: ([\d,]+) events, [\d.]+ us per trade \(([\d,]+) analyzed trades, [\d,]+ alerts, "
        r"([\d,]+) executions republished, ([\d,]+) applied\)",
        out,
    )
    # Both passes did the same work: every trade analyzed, with its order events, and every
    # execution republished applied by the market or pair agent.
    assert len(passes) == 2 and passes[0] == passes[1]
    events, analyzed, executions, applied = (int(text.replace(",", "")) for text in passes[0])
    assert analyzed == 300 and events > 300
    assert executions > analyzed // 2 and applied == executions
    for name in ("user", "market", "pair", "total"):
        assert re.search(rf"^  {name} +[\d.]+ +\( +[\d.]+ per event\)$", out, re.MULTILINE), name


def test_too_few_users_for_the_simulators_roles_are_refused_clearly():
    args = bench("--trades", "10", "--users", "5")
    with pytest.raises(SystemExit, match=r"--users: at least \d+ users are needed"):
        args.handler(args, Settings.from_env({}))


@pytest.mark.parametrize("option", ["--trades", "--rate"])
def test_a_non_positive_size_or_rate_is_refused(option):
    args = bench(option, "0")
    with pytest.raises(SystemExit, match="must be >= 1"):
        args.handler(args, Settings.from_env({}))


def test_at_a_rate_the_events_are_stamped_as_the_latency_phase_stamps_them():
    """Trade n at the simulator's start + n / rate, an order event at the time of the trade after it;
    the same events, in the same order, as with the simulator's own time."""
    settings = Settings.from_env({})

    def run(rate: int | None) -> list[tuple[bool, dict[str, Any]]]:
        """(is a trade, the decoded record) of each event."""
        simulator = Simulator(SimulationConfig(seed=3, start_ms=1_700_000_000_000, users=60))
        context = bench_analysis.worker_context(settings, simulator.profiles())
        events = bench_analysis.simulator_events(context, simulator, 400, rate)
        decoded = []
        for event in events:
            is_trade = event.message.topic == context.names.trades
            record = context.catalog.decode(event.message.value, "CryptoTrade" if is_trade else "OrderEvent")
            decoded.append((is_trade, record))
        return decoded

    own, stamped = run(None), run(2_000)
    assert [(is_trade, {**record, "timestamp": 0}) for is_trade, record in own] == [
        (is_trade, {**record, "timestamp": 0}) for is_trade, record in stamped
    ]
    trade_times = [record["timestamp"] for is_trade, record in stamped if is_trade]
    assert trade_times == [1_700_000_000_000 + n * 1000 // 2_000 for n in range(400)]
    # Order events the run has after its last trade go at the next step.
    steps = [*trade_times, trade_times[0] + 400 * 1000 // 2_000]
    following = 0  # the trade after each order event
    for is_trade, record in stamped:
        assert record["timestamp"] == steps[following]
        following += is_trade
    assert own[0][1]["timestamp"] < 1_700_000_000_000 + 3_600_000, "the simulator's own time kept"
