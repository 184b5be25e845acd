"""Strict trade and profile parsing, and outputs that fit the Avro contracts."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from typing import Any

import pytest

from riskengine.contracts.schema_files import validate_record
from riskengine.core import (
    InvalidProfile,
    InvalidTrade,
    Side,
    ahead_of_clock,
    native,
    parse_profile,
    parse_trade,
)
from riskengine.core.execution_record import Execution
from riskengine.core.models import (
    MAX_NOTIONAL,
    MAX_PRICE,
    MAX_QUANTITY,
    OrderEvent,
    OrderEventType,
    RiskLevel,
    Trade,
)

from .builders import SECOND, profile, reference, run, trade

RECORD: dict[str, Any] = {
    "tradeId": "3f2b1c9e-0000-4000-8000-000000000001",
    "userId": "u-1",
    "customerId": "c-1",
    "symbol": "BTC/USDT",
    "side": "BUY",
    "quantity": 0.5,
    "price": 60000.0,
    "notional": 30000.0,
    "timestamp": 1_764_000_000_000,
    "exchange": "BINANCE",
    "orderType": "MARKET",
    "riskLevel": None,
    "counterpartyUserId": None,
    "orderId": "o-1",
}


def test_parse_trade_reads_every_field():
    parsed = parse_trade(RECORD)
    assert parsed.trade_id == RECORD["tradeId"] and parsed.side is Side.BUY
    assert parsed.to_record() == RECORD


def test_optional_fields_may_be_absent():
    record = {k: v for k, v in RECORD.items() if k not in ("riskLevel", "counterpartyUserId", "orderId")}
    parsed = parse_trade(record)
    assert parsed.risk_level is None and parsed.counterparty_user_id is None and parsed.order_id is None


def test_integers_are_accepted_for_numbers_and_unknown_keys_are_ignored():
    parsed = parse_trade({**RECORD, "quantity": 2, "price": 15000, "notional": 30000, "venue": "x"})
    assert parsed.quantity == 2.0 and isinstance(parsed.quantity, float)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"tradeId": None}, "tradeId", "must be a string"),
        ({"userId": ""}, "userId", "non-empty"),
        ({"userId": " u-1"}, "userId", "surrounding spaces"),
        ({"tradeId": "x" * 129}, "tradeId", "longer than 128"),
        ({"symbol": "BTCUSDT"}, "symbol", "BASE/QUOTE"),
        ({"side": "HOLD"}, "side", "HOLD"),
        ({"side": None}, "side", "None"),
        ({"quantity": 0}, "quantity", "> 0"),
        ({"quantity": -1.0}, "quantity", "> 0"),
        ({"price": math.nan}, "price", "finite"),
        ({"price": math.inf}, "price", "finite"),
        ({"quantity": True}, "quantity", "must be a number"),
        ({"notional": "30000"}, "notional", "must be a number"),
        ({"notional": 31000.0}, "notional", "quantity x price"),
        ({"timestamp": 1.5e12}, "timestamp", "integer"),
        ({"timestamp": -1}, "timestamp", "between"),
        ({"timestamp": 10**15}, "timestamp", "between"),
        ({"riskLevel": "EXTREME"}, "riskLevel", "EXTREME"),
        ({"counterpartyUserId": 7}, "counterpartyUserId", "string"),
    ],
)
def test_bad_fields_are_named(change, field, reason):
    with pytest.raises(InvalidTrade) as info:
        parse_trade({**RECORD, **change})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "missing",
    [
        "tradeId",
        "userId",
        "customerId",
        "symbol",
        "side",
        "quantity",
        "price",
        "notional",
        "timestamp",
        "exchange",
        "orderType",
    ],
)
def test_missing_required_fields_are_named(missing):
    with pytest.raises(InvalidTrade, match=f"^{missing}: missing$"):
        parse_trade({k: v for k, v in RECORD.items() if k != missing})


def test_not_an_object():
    with pytest.raises(InvalidTrade) as info:
        parse_trade([1, 2])  # type: ignore[arg-type]
    assert info.value.field == "record"


def test_parse_profile():
    parsed = parse_profile(
        {"userId": "u-1", "customerId": "c-1", "kycTier": 2, "country": "DE", "linkedAccounts": ["u-2"]}
    )
    assert parsed.kyc_tier == 2 and parsed.linked_accounts == frozenset({"u-2"}) and not parsed.sanctioned
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kycTier": 4}, "kycTier"),
        ({"country": "Germany"}, "country"),
        ({"sanctioned": "yes"}, "sanctioned"),
        ({"linkedAccounts": [""]}, "linkedAccounts"),
    ]
    for bad, field in cases:
        with pytest.raises(InvalidProfile) as info:
            parse_profile({"userId": "u-1", "customerId": "c-1", "kycTier": 2, "country": "DE", **bad})
        assert info.value.field == field


def test_analyzed_trade_and_alert_records_fit_the_avro_contracts():
    ref = reference(profile(sanctioned=True), sanctioned_countries=frozenset({"KP"}))
    results = run(
        [
            trade(0, "BUY", 1000.0, quantity=1000.0, counterparty="u-1"),
            trade(20 * SECOND, "SELL", 950.0, quantity=950.0),
            trade(45 * SECOND, "BUY", 1050.0, quantity=1050.0),
        ],
        ref=ref,
    )
    records = [r.analyzed.to_record() for r in results]
    for record in records:
        validate_record("RiskAnalyzedTrade", record)
        assert record["processedAt"] is None
        assert record["eventTimestamp"] == record["originalTrade"]["timestamp"]
    alerts = [a.to_record() for r in results for a in r.alerts]
    assert {a["patternType"] for a in alerts} == {"SELF_TRADE", "SANCTIONS_HIT", "WASH_TRADING"}
    for alert in alerts:
        validate_record("RiskAlert", alert)
    assert set(records[-1]["scoreBreakdown"]["weights"]) == {
        "volume",
        "behavioral",
        "marketImpact",
        "compliance",
    }


# -- bounds: extreme values are clear errors, never state -------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", 10**400, "must be a finite number"),
        ("quantity", 1.0000001e15, "must be at most 1e+15"),
        ("price", 1.0000001e9, "must be at most 1e+09"),
        ("price", 5e-324, "must be at least 1e-12"),
        ("timestamp", 1_000, "must be between 1231006505000"),
        ("timestamp", 10**14 + 1, "must be between"),
    ],
)
def test_numbers_and_times_beyond_their_bounds_are_rejected_naming_the_field(field, value, message):
    record = {**RECORD, field: value}
    with pytest.raises(InvalidTrade, match=f"^{field}: {re.escape(message)}") as raised:
        parse_trade(record)
    assert len(str(raised.value)) < 200  # a 400-digit value is not echoed back whole


def test_a_notional_above_a_trillion_is_rejected_and_the_bounds_themselves_pass():
    with pytest.raises(InvalidTrade, match="notional: must be at most 1e"):
        parse_trade({**RECORD, "quantity": 2e7, "price": 60_000.0, "notional": 1.2e12})
    top = parse_trade({**RECORD, "quantity": 1e6, "price": 1e6, "notional": 1e12})
    assert top.notional == MAX_NOTIONAL and MAX_PRICE == 1e9 and MAX_QUANTITY == 1e15


def test_an_event_far_ahead_of_the_clock_is_named_with_the_rule():
    assert ahead_of_clock(1_000_300_000, 1_000_000_000, 300_000) is None
    reason = ahead_of_clock(1_000_300_001, 1_000_000_000, 300_000)
    assert reason is not None and "event.max.future.skew.seconds" in reason


#: a distinct value for every field (the compiled __init__ checks their types)
WRITTEN_OUT_INITS: dict[type, dict[str, Any]] = {
    Trade: dict(
        zip(
            [f.name for f in dataclasses.fields(Trade)],
            ["t", "u", "c", "BTC-USD", Side.SELL, 2.0, 3.0, 6.0, 4, "x", "LIMIT", RiskLevel.HIGH, "cp", "o"],
            strict=True,
        )
    ),
    OrderEvent: dict(
        zip(
            [f.name for f in dataclasses.fields(OrderEvent)],
            ["e", "o", "u", "BTC-USD", Side.SELL, OrderEventType.CANCELLED, 2.0, 3.0, 1.0, 4, "x"],
            strict=True,
        )
    ),
    Execution: {"trade": trade(SECOND), "source": 2, "promise": 3, "owner": "a", "pair": "a|b"},
}


@pytest.mark.parametrize("cls", list(WRITTEN_OUT_INITS), ids=lambda cls: cls.__name__)
def test_a_written_out_init_takes_exactly_the_fields_and_sets_each(cls: type) -> None:
    # Trade, OrderEvent and Execution write their __init__ out (so that it runs compiled): it must
    # stay the one dataclass would generate, field for field and default for default.
    fields = dataclasses.fields(cls)
    # From the source: a compiled __init__ has no signature to inspect.
    module = cls.__module__.removeprefix("riskengine.core.")
    source = ast.parse((native.PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    (init,) = (
        node
        for klass in source.body
        if isinstance(klass, ast.ClassDef) and klass.name == cls.__name__
        for node in klass.body
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    assert [arg.arg for arg in init.args.args[1:]] == [f.name for f in fields]
    defaults = [ast.literal_eval(default) for default in init.args.defaults]
    assert defaults == [f.default for f in fields if f.default is not dataclasses.MISSING]
    assert len(defaults) == sum(1 for f in fields if f.default is not dataclasses.MISSING)
    values = WRITTEN_OUT_INITS[cls]
    made = cls(**values)
    assert {name: getattr(made, name) for name in values} == values
    assert made == cls(**values)
    assert hash(made) == hash(cls(**values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, fields[0].name, None)
    last = fields[-1].name  # dataclasses.replace goes through the __init__ too
    assert getattr(dataclasses.replace(made, **{last: None}), last) is None
