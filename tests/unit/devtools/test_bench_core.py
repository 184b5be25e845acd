"""The benchmark's generator: deterministic, and realistic enough that every pattern fires."""

from __future__ import annotations

import argparse
import itertools

from riskengine.core import DEFAULT_RULES, REGISTRY
from riskengine.core.patterns import OrderFlowDetector
from riskengine_devtools.bench_core import build_stream, register, run_core


def test_the_stream_is_deterministic_and_sized():
    first = [t.trade_id for t in build_stream(200, 3_000, seed=3)]
    assert len(first) == 3_000
    assert first == [t.trade_id for t in build_stream(200, 3_000, seed=3)]
    assert first != [t.trade_id for t in build_stream(200, 3_000, seed=4)]


def test_every_pattern_fires_and_some_trades_arrive_late():
    stream = build_stream(300, 40_000, seed=7)
    trades = list(stream)
    late = sum(
        1 for previous, current in itertools.pairwise(trades) if current.timestamp < previous.timestamp
    )
    assert late > 0
    _, alerts = run_core(stream, DEFAULT_RULES)
    trade_patterns = {p.value for p, d in REGISTRY.items() if not isinstance(d, OrderFlowDetector)}
    assert set(alerts) == trade_patterns


def test_codec_mode_gives_the_same_alerts():
    stream = build_stream(50, 3_000, seed=5)
    assert run_core(stream, DEFAULT_RULES)[1] == run_core(stream, DEFAULT_RULES, codec=True)[1]


def test_command_line(capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "core", "--trades", "2000", "--users", "100", "--runs", "3"])
    assert args.handler(args, None) == 0
    out = capsys.readouterr().out
    assert "trades/s: min" in out and "median" in out and "peak memory" in out
