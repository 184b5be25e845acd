"""The producer settings (``RISKENGINE_PRODUCER_*``) as a ProducerConfig, or an error naming one."""

from pathlib import Path

import pytest

from riskengine.errors import SettingsError
from riskengine.producer.config import ProducerConfig
from riskengine.producer.market import DEFAULT_SYMBOLS
from riskengine.producer.scenarios import SCENARIOS
from riskengine.producer.simulator import EXCHANGES
from riskengine.settings import Settings


def test_defaults():
    config = ProducerConfig.from_settings(Settings.from_env({}))
    assert (config.host, config.port, config.audit_db) == (
        "127.0.0.1",
        8090,
        Path("var/producer-audit.sqlite3"),
    )
    assert not config.admin_token
    defaults = config.defaults
    assert (defaults.rate_ms, defaults.users, defaults.scenario_every, defaults.seed) == (100.0, 1000, 400, 0)
    assert (defaults.symbols, defaults.exchanges, defaults.scenarios) == (
        DEFAULT_SYMBOLS,
        EXCHANGES,
        tuple(SCENARIOS),
    )


def test_values_are_read_and_the_token_stays_secret():
    settings = Settings.from_env(
        {
            "RISKENGINE_PRODUCER_PORT": "9999",
            "RISKENGINE_PRODUCER_ADMIN_TOKEN": "t0k3n",
            "RISKENGINE_PRODUCER_RATE_MS": "20",
            "RISKENGINE_PRODUCER_SYMBOLS": "BTC/USDT, ETH/USDT",
            "RISKENGINE_PRODUCER_EXCHANGES": "KRAKEN",
            "RISKENGINE_PRODUCER_SCENARIOS": "wash_trading,spoofing",
            "RISKENGINE_PRODUCER_SEED": "42",
        }
    )
    config = ProducerConfig.from_settings(settings)
    assert config.port == 9999 and config.admin_token.get() == "t0k3n"
    assert "t0k3n" not in str(settings.describe())
    defaults = config.defaults
    assert (defaults.rate_ms, defaults.symbols, defaults.exchanges) == (
        20.0,
        ("BTC/USDT", "ETH/USDT"),
        ("KRAKEN",),
    )
    assert (defaults.scenarios, defaults.seed) == (("wash_trading", "spoofing"), 42)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RISKENGINE_PRODUCER_SCENARIOS", "wash", "RISKENGINE_PRODUCER_SCENARIOS: unknown scenario"),
        ("RISKENGINE_PRODUCER_SYMBOLS", "BTC/EUR", "RISKENGINE_PRODUCER_SYMBOLS: unknown symbol"),
        ("RISKENGINE_PRODUCER_USERS", "0", "RISKENGINE_PRODUCER_USERS"),
        ("RISKENGINE_PRODUCER_RATE_MS", "-1", "RISKENGINE_PRODUCER_RATE_MS"),
    ],
)
def test_a_bad_value_names_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message):
        ProducerConfig.from_settings(Settings.from_env({name: value}))
