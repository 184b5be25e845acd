"""The simulated stream: reproducible, time-ordered, consistent, and labelled correctly.

Order-event typologies (spoofing, layering, quote stuffing) and the pump-and-dump are checked here
with small spec-literal checkers written from the typology definitions (README, "Detection core"),
independent of the producer.
"""

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from riskengine.contracts.schema_files import validate_record
from riskengine.core import parse_profile, parse_trade
from riskengine.producer.events import Event, EventKind, LabelRole
from riskengine.producer.oracle import SPEC, PatternOracle, TradeFacts
from riskengine.producer.population import SANCTIONED_COUNTRIES, Role
from riskengine.producer.scenarios import SCENARIOS
from riskengine.producer.simulator import LEAD_MS, InvalidConfig, SimulationConfig, Simulator

from .offline_doubles import small_config

TRADES = 30_000


@pytest.fixture(scope="module")
def run():
    simulator = Simulator(small_config())
    events = list(simulator.events(max_trades=TRADES))
    return simulator, events, simulator.drain_labels()


def _dump(events: Iterable[Event]) -> list[str]:
    return [json.dumps([e.kind, e.scenario, e.scenario_id, e.record]) for e in events]


def test_same_seed_and_parameters_give_the_same_events_and_labels():
    first, second = Simulator(small_config()), Simulator(small_config())
    assert _dump(first.events(max_trades=3_000)) == _dump(second.events(max_trades=3_000))
    assert first.drain_labels() == second.drain_labels()
    assert first.profiles() == second.profiles()


def test_another_seed_or_start_gives_another_stream():
    base = _dump(Simulator(small_config()).events(max_trades=500))
    assert _dump(Simulator(small_config(seed=12)).events(max_trades=500)) != base
    other_start = _dump(Simulator(small_config(start_ms=1_800_000_000_000)).events(max_trades=500))
    assert other_start != base


def test_the_run_stops_at_exactly_n_trades_in_time_order_from_the_given_start(run):
    simulator, events, _ = run
    trades = [e for e in events if e.kind is EventKind.TRADE]
    assert len(trades) == TRADES
    times = [e.timestamp for e in events]
    assert times == sorted(times)
    assert min(times) >= simulator.config.start_ms - LEAD_MS
    assert len({e.event_id for e in events}) == len(events)


def test_every_record_fits_its_contract_and_the_cores_validation(run):
    simulator, events, _ = run
    for event in events[:: max(1, len(events) // 5_000)]:
        validate_record(event.kind.record_name, event.record)
        if event.kind is EventKind.TRADE:
            trade = parse_trade(event.record)
            assert trade.notional == pytest.approx(trade.quantity * trade.price, rel=1e-6)
    for profile in simulator.profiles():
        validate_record("UserProfile", profile)
        parse_profile(profile)


def test_order_events_are_consistent_with_the_trades(run):
    _, events, _ = run
    orders = defaultdict(list)
    for event in events:
        if event.kind is EventKind.ORDER:
            orders[event.record["orderId"]].append(event.record)
    for event in events:
        if event.kind is not EventKind.TRADE:
            continue
        trade = event.record
        history = orders[trade["orderId"]]
        assert history[0]["eventType"] == "PLACED" and history[0]["timestamp"] <= trade["timestamp"]
        fills = [o for o in history if o["eventType"] == "FILLED"]
        assert len(fills) == 1 and fills[0]["timestamp"] == trade["timestamp"]
        fill = fills[0]
        assert fill["quantity"] - fill["remainingQuantity"] == pytest.approx(trade["quantity"])
        assert {o["userId"] for o in history} == {trade["userId"]}
        assert {o["symbol"] for o in history} == {trade["symbol"]}
        assert {o["side"] for o in history} == {trade["side"]}
    for history in orders.values():
        kinds = [o["eventType"] for o in history]
        assert kinds[0] == "PLACED" and kinds.count("PLACED") == 1
        assert kinds[-1] in ("FILLED", "CANCELLED")
        assert [o["timestamp"] for o in history] == sorted(o["timestamp"] for o in history)
        if kinds[-1] == "FILLED":
            assert history[-1]["remainingQuantity"] == 0.0
        else:
            assert 0 < history[-1]["remainingQuantity"] <= history[-1]["quantity"]


def test_normal_trades_keep_to_the_mean_rate_within_ten_percent_per_ten_seconds():
    simulator = Simulator(small_config(scenarios=(), rate_ms=100.0))
    times = [e.timestamp for e in simulator.events(max_trades=20_000) if e.kind is EventKind.TRADE]
    start = simulator.config.start_ms
    per_window = Counter((t - start) // 10_000 for t in times)
    counts = [per_window[w] for w in range(1, max(per_window))]
    assert len(counts) > 150
    assert all(90 <= c <= 110 for c in counts), (min(counts), max(counts))


def test_injected_events_carry_their_label_and_normal_ones_none(run):
    _, events, labels = run
    labelled: dict[str, set[str]] = defaultdict(set)
    for label in labels:
        if label.role is LabelRole.PRIMARY:
            labelled[label.scenario_id] |= set(label.trade_ids) | set(label.order_event_ids)
    headers: dict[str, set[str]] = defaultdict(set)
    scenario_of = {label.scenario_id: label.scenario for label in labels}
    for event in events:
        assert (event.scenario is None) == (event.scenario_id is None)
        if event.scenario_id is not None:
            headers[event.scenario_id].add(event.event_id)
            assert scenario_of[event.scenario_id] == event.scenario
    assert headers == labelled


def test_every_scenario_is_injected_and_its_label_verified_where_the_oracle_can(run):
    simulator, _, labels = run
    primary = [label for label in labels if label.role is LabelRole.PRIMARY and label.complete]
    assert {label.scenario for label in primary} >= set(SCENARIOS) - {"pump_and_dump"}
    for label in primary:
        assert label.pattern == SCENARIOS[label.scenario].pattern
        assert label.user_ids and label.start_ts <= label.end_ts
        assert label.verified is not False, label
        if label.verified is None:
            unchecked = (
                "SPOOFING",
                "LAYERING",
                "QUOTE_STUFFING",
                "MOMENTUM_IGNITION",
                "PUMP_AND_DUMP",
                "PRICE_CRASH",
            )
            assert label.pattern in unchecked
    for label in labels:
        if label.role is LabelRole.INCIDENTAL:
            assert label.verified is True and label.trade_ids
    assert sum(simulator.stats.completed.values()) == len(primary)


def _facts(record: dict[str, Any]) -> TradeFacts:
    return TradeFacts(
        record["tradeId"],
        record["userId"],
        record["symbol"],
        record["side"] == "SELL",
        record["quantity"],
        record["notional"],
        record["timestamp"],
        record["counterpartyUserId"],
    )


def test_labels_are_the_complete_ground_truth_of_the_trade_patterns(run):
    """Every definition met anywhere in the stream lies inside a label of that pattern."""
    simulator, events, labels = run
    oracle = PatternOracle(simulator.population.subjects.get, SANCTIONED_COUNTRIES.__contains__)
    ids_by_pattern: dict[str, set[str]] = defaultdict(set)
    for label in labels:
        ids_by_pattern[label.pattern] |= set(label.trade_ids)
    unlabelled = []
    matched: Counter[str] = Counter()
    for event in events:
        if event.kind is not EventKind.TRADE:
            continue
        facts = _facts(event.record)
        for match in oracle.check(facts, SPEC):
            matched[match.pattern] += 1
            if not set(match.evidence) & ids_by_pattern[match.pattern]:
                unlabelled.append((match.pattern, match.evidence))
        oracle.record(facts)
    assert not unlabelled
    assert set(matched) >= {"VOLUME_SPIKE", "WASH_TRADING", "LARGE_ORDER", "FLASH_CRASH", "STRUCTURING"}


def test_scenario_accounts_are_quiet_before_and_busy_during_their_scenario(run):
    simulator, events, labels = run
    quiet = simulator.config.quiet_ms
    trades = [e for e in events if e.kind is EventKind.TRADE]
    for label in labels:
        if label.role is not LabelRole.PRIMARY or not label.trade_ids:
            continue
        first_trade = next(e.timestamp for e in trades if e.event_id == label.trade_ids[0])
        for event in trades:
            if event.user_id in label.user_ids and event.scenario_id != label.scenario_id:
                in_quiet_or_run = first_trade - quiet < event.timestamp <= label.end_ts
                assert not in_quiet_or_run, (label.scenario_id, event.event_id)


def test_sanctioned_accounts_trade_only_in_their_scenario(run):
    simulator, events, _ = run
    sanctioned = {
        u.user_id for u in simulator.population.users if u.sanctioned or u.country in SANCTIONED_COUNTRIES
    }
    assert sanctioned == {u.user_id for u in simulator.population.by_role[Role.SANCTIONED]}
    for event in events:
        if event.kind is EventKind.TRADE:
            involved = {event.record["userId"], event.record["counterpartyUserId"]}
            if involved & sanctioned:
                assert event.scenario == "sanctioned_user"


# -- spec-literal checkers for the order-event typologies --------------------------------------


def _orders(events: list[Event]) -> dict[str, dict[str, Any]]:
    """orderId -> {user, symbol, side, quantity, price, placed, fills, cancelled, ids}."""
    orders: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.kind is not EventKind.ORDER:
            continue
        o = event.record
        entry = orders.setdefault(
            o["orderId"],
            {"user": o["userId"], "symbol": o["symbol"], "side": o["side"], "fills": [], "ids": set()},
        )
        entry["ids"].add(o["eventId"])
        if o["eventType"] == "PLACED":
            entry.update(placed=o["timestamp"], quantity=o["quantity"], price=o["price"])
        elif o["eventType"] == "AMENDED":
            entry["price"] = o["price"]
        elif o["eventType"] == "FILLED":
            entry["fills"].append(o["timestamp"])
        else:
            entry["cancelled"] = o["timestamp"]
    return orders


def spoofing_matches(events: list[Event]) -> list[set[str]]:
    orders = _orders(events)
    by_key = defaultdict(list)
    for order_id, o in orders.items():
        by_key[(o["user"], o["symbol"])].append((o["placed"], order_id))
    matches = []
    for entries in by_key.values():
        entries.sort()
        for position, (placed, order_id) in enumerate(entries):
            o = orders[order_id]
            earlier = [orders[i]["quantity"] for _, i in entries[:position]]
            if o["fills"] or "cancelled" not in o or not earlier:
                continue
            if o["quantity"] < 10 * statistics.median(earlier):
                continue
            for _, other_id in entries:
                other = orders[other_id]
                if other["side"] == o["side"]:
                    continue
                for fill in other["fills"]:
                    if placed <= fill <= o["cancelled"] <= fill + 30_000:
                        matches.append(o["ids"] | other["ids"])
    return matches


def layering_matches(events: list[Event]) -> list[set[str]]:
    orders = _orders(events)
    by_key = defaultdict(list)
    for o in orders.values():
        by_key[(o["user"], o["symbol"])].append(o)
    matches = []
    for entries in by_key.values():
        for filled in entries:
            for fill in filled["fills"]:
                resting = [
                    o
                    for o in entries
                    if o["side"] != filled["side"]
                    and o["placed"] <= fill
                    and not o["fills"]
                    and o.get("cancelled", float("inf")) > fill
                ]
                if len(resting) < 3 or len({o["price"] for o in resting}) < 3:
                    continue
                cancelled = [o for o in resting if o.get("cancelled", float("inf")) <= fill + 30_000]
                if len(cancelled) * 2 > len(resting):
                    matches.append(set().union(*(o["ids"] for o in resting)) | filled["ids"])
    return matches


def quote_stuffing_matches(events: list[Event]) -> list[set[str]]:
    orders = _orders(events)
    cycles = defaultdict(list)
    for o in orders.values():
        cycles[(o["user"], o["symbol"], o["placed"] // 600_000)].append(o)
    matches = []
    for entries in cycles.values():
        if len(entries) < 500:
            continue
        quick = sum(1 for o in entries if o.get("cancelled", float("inf")) - o["placed"] <= 5_000)
        unfilled = sum(1 for o in entries if not o["fills"])
        if quick / len(entries) >= 0.99 or unfilled / len(entries) >= 0.99:
            matches.append(set().union(*(o["ids"] for o in entries)))
    return matches


@pytest.mark.parametrize(
    ("pattern", "checker"),
    [
        ("SPOOFING", spoofing_matches),
        ("LAYERING", layering_matches),
        ("QUOTE_STUFFING", quote_stuffing_matches),
    ],
)
def test_order_event_scenarios_meet_their_definition_and_normal_flow_never_does(run, pattern, checker):
    _, events, labels = run
    matches = checker(events)
    instances = [label for label in labels if label.pattern == pattern and label.complete]
    assert instances
    for label in instances:
        ids = set(label.order_event_ids)
        assert any(match & ids for match in matches), f"{label.scenario_id} does not meet {pattern}"
    labelled = set().union(*(set(x.order_event_ids) for x in labels if x.pattern == pattern))
    assert all(match & labelled for match in matches), "normal order flow met the definition"


def test_pump_and_dump_rises_twenty_percent_then_falls_fifteen_on_heavy_volume():
    simulator = Simulator(small_config(rate_ms=500.0, scenarios=("pump_and_dump",), scenario_every=20))
    events = list(simulator.events(max_trades=25_000))
    labels = [label for label in simulator.drain_labels() if label.complete]
    assert labels
    label = labels[0]
    symbol, ring = label.symbol, set(label.user_ids)
    assert 3 <= len(ring) <= 5
    trades = [e.record for e in events if e.kind is EventKind.TRADE and e.record["symbol"] == symbol]
    during = [t for t in trades if label.start_ts <= t["timestamp"] <= label.end_ts]
    start_price = during[0]["price"]
    peak = max(during, key=lambda t: t["price"])
    assert peak["price"] >= 1.2 * start_price and peak["timestamp"] - label.start_ts <= 4 * 3_600_000
    after = [
        t["price"]
        for t in during
        if peak["timestamp"] <= t["timestamp"] <= peak["timestamp"] + 12 * 3_600_000
    ]
    assert min(after) <= 0.85 * peak["price"]
    ring_volume = sum(t["notional"] for t in during if t["userId"] in ring)
    other_volume = sum(t["notional"] for t in during if t["userId"] not in ring)
    assert ring_volume >= 2 * other_volume
    # The ring buys, then only sells (from about the peak on).
    sides = "".join(t["side"][0] for t in during if t["userId"] in ring)
    assert sides.startswith("B") and sides.endswith("S") and "SB" not in sides
    first_sell = next(t for t in during if t["userId"] in ring and t["side"] == "SELL")
    assert abs(first_sell["timestamp"] - peak["timestamp"]) <= 10 * 60_000


def test_a_run_without_scenarios_has_no_labels_and_no_headers():
    simulator = Simulator(small_config(scenarios=()))
    events = list(simulator.events(max_trades=2_000))
    assert all(e.scenario is None for e in events)
    assert simulator.drain_labels() == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate_ms": 0.0}, "rate_ms"),
        ({"rate_ms": float("nan")}, "rate_ms"),
        ({"users": 0}, "users"),
        ({"symbols": ("BTC/USDT", "FOO/USDT")}, "symbols"),
        ({"symbols": ()}, "symbols"),
        ({"exchanges": ("",)}, "exchanges"),
        ({"scenarios": ("wash",)}, "scenarios"),
        ({"scenario_every": 0}, "scenario_every"),
        ({"churn_ratio": -1.0}, "churn_ratio"),
        ({"quiet_ms": -1}, "quiet_ms"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_field(changes, field):
    with pytest.raises(InvalidConfig) as error:
        SimulationConfig(**({"seed": 1} | changes))
    assert error.value.field == field


def test_symbols_and_exchanges_are_configurable():
    simulator = Simulator(small_config(symbols=("BTC/USDT", "ADA/USDT"), exchanges=("KRAKEN",), scenarios=()))
    trades = [e.record for e in simulator.events(max_trades=2_000) if e.kind is EventKind.TRADE]
    assert {t["symbol"] for t in trades} == {"BTC/USDT", "ADA/USDT"}
    assert {t["exchange"] for t in trades} == {"KRAKEN"}
