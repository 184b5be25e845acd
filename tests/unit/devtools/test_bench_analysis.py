"""``riskengine bench analysis``: the worker's analyses over a simulator run, without Kafka."""

from __future__ import annotations

import argparse
import re

import pytest

from riskengine.settings import Settings
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


def test_a_non_positive_size_is_refused():
    args = bench("--trades", "0")
    with pytest.raises(SystemExit, match="must be >= 1"):
        args.handler(args, Settings.from_env({}))


def test_too_few_users_for_the_simulators_roles_are_refused_clearly():
    args = bench("--trades", "10", "--users", "5")
    with pytest.raises(SystemExit, match=r"--users: at least \d+ users are needed"):
        args.handler(args, Settings.from_env({}))
