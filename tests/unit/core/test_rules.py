"""Rules as data: seed names and defaults, validation naming the parameter, the wire shape."""

from __future__ import annotations

import pytest

from riskengine.core import DEFAULT_RULES, PARAMETERS, InvalidRule, PatternType, Rules


def test_seed_parameters_and_defaults():
    values = DEFAULT_RULES.values
    assert values["volume.spike.window.minutes"] == 2.0
    assert values["volume.spike.threshold"] == 1.5
    assert values["wash.trading.window.minutes"] == 1.0
    assert values["wash.trading.quantity.tolerance"] == 0.1
    assert (values["threshold.btc"], values["threshold.eth"], values["threshold.sol"]) == (
        500_000,
        250_000,
        100_000,
    )
    assert (values["flash.crash.min.sells"], values["flash.crash.window.minutes"]) == (10, 5.0)
    assert (values["level.medium"], values["level.high"], values["level.critical"]) == (0.3, 0.6, 0.85)
    assert DEFAULT_RULES.version == 0
    assert DEFAULT_RULES.spike_window_ms == 120_000 and DEFAULT_RULES.wash_window_ms == 60_000


def test_strings_and_numbers_are_both_accepted():
    rules = Rules.from_parameters(
        7, {"volume.spike.threshold": "2", "flash.crash.min.sells": 12.0, "threshold.ada": "50000"}
    )
    assert rules.version == 7 and rules.spike_threshold == 2.0 and rules.flash_min_sells == 12
    assert rules.large_order_threshold("ADA/USDT") == 50_000
    assert rules.large_order_threshold("DOGE/USDT") == 100_000


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("volume.spike.threshold", "abc", "must be a number"),
        ("volume.spike.threshold", "0.9", "must be in [1, 1000]"),
        ("volume.spike.window.minutes", 0, "must be in (0"),
        ("wash.trading.quantity.tolerance", 1.0, "must be in [0, 1)"),
        ("flash.crash.min.sells", 9.5, "integer"),
        ("flash.crash.min.sells", 1, "integer in [2, 128]"),
        ("threshold.btc", -5, "> 0"),
        ("threshold.ada", "nan", "finite"),
        ("kyc.tier1.trade.limit", True, "must be a number"),
        ("patterns.disabled", "WASH_TRADING,NOPE", "unknown pattern 'NOPE'"),
        ("volume.spike.treshold", 2, "unknown parameter"),
        ("threshold.BTC", 2, "unknown parameter"),
    ],
)
def test_bad_values_are_rejected_naming_the_parameter(name, value, reason):
    with pytest.raises(InvalidRule) as info:
        Rules.from_parameters(1, {name: value})
    assert info.value.parameter == name
    assert name in str(info.value) and reason in str(info.value)


def test_level_cut_offs_must_increase():
    with pytest.raises(InvalidRule, match=r"level\.medium < level\.high < level\.critical"):
        Rules.from_parameters(1, {"level.high": 0.9})


@pytest.mark.parametrize("version", [-1, 1.5, "3", True])
def test_version_must_be_a_non_negative_integer(version):
    with pytest.raises(InvalidRule) as info:
        Rules.from_parameters(version, {})
    assert info.value.parameter == "version"


def test_parameters_round_trip_through_the_wire_shape():
    rules = Rules.from_parameters(
        3,
        {
            "volume.spike.threshold": 2.5,
            "patterns.disabled": "LARGE_ORDER,VOLUME_SPIKE",
            "liquidity.ada": 123,
        },
    )
    wire = rules.parameters()
    assert all(isinstance(v, str) for v in wire.values())
    assert wire["patterns.disabled"] == "VOLUME_SPIKE,LARGE_ORDER"
    again = Rules.from_parameters(3, wire)
    assert again.values == rules.values
    assert again.disabled == frozenset({PatternType.VOLUME_SPIKE, PatternType.LARGE_ORDER})
    assert again.liquidity("ADA/USDT") == 123


def test_every_parameter_is_documented():
    assert all(spec.doc for spec in PARAMETERS.values())
    assert set(DEFAULT_RULES.values) == set(PARAMETERS)
