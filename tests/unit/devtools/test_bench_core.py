"""The benchmark's generator: deterministic, and realistic enough that every pattern fires."""

from __future__ import annotations

import argparse
import itertools
import re

from riskengine.core import DEFAULT_RULES, REGISTRY
from riskengine.core.patterns import OrderFlowDetector
from riskengine_devtools.bench_core import build_stream, register, resting_orders_state, run_core


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
    assert re.search(
        r"1,000 placed: +512 kept, +[\d,]+ B, encode [\d,]+ us \(all new\) / [\d,]+ us \(rows kept\), "
        r"decode [\d,]+ us",
        out,
    )


def test_a_generated_run_with_order_events(tmp_path, capsys):
    from riskengine.producer.files import write_run
    from riskengine.producer.simulator import SimulationConfig

    write_run(SimulationConfig(seed=3, users=100, scenario_every=40), 3_000, tmp_path / "run.jsonl")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "core", "--run", str(tmp_path / "run.jsonl")])
    assert args.handler(args, None) == 0
    out = capsys.readouterr().out
    assert "order events/s" in out and "state sizes" in out and "state encode per user: median" in out
    assert "SPOOFING=" in out or "LAYERING=" in out or "QUOTE_STUFFING=" in out
    assert "decode CryptoTrade (" in out and "decode OrderEvent (" in out and "with the core's reader" in out


def test_a_missing_run_is_reported(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "core", "--run", str(tmp_path / "nothing.jsonl")])
    assert args.handler(args, None) == 2
    assert "cannot read the run" in capsys.readouterr().err


def test_the_resting_orders_state_holds_them_up_to_the_books_bound():
    from riskengine.core import decode_state, encode_state
    from riskengine.core.order_book import MAX_ORDERS

    for count, kept in ((0, 0), (100, 100), (MAX_ORDERS + 100, MAX_ORDERS)):
        state = resting_orders_state(count)
        assert len(state.orders.open_orders()) == kept
        assert decode_state(encode_state(state)) == state
