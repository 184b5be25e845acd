"""The producer service's configuration: from the one settings object, overridable per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from riskengine.contracts.topics import TOPICS, Topics, topic_names
from riskengine.errors import SettingsError
from riskengine.settings import Secret, Settings

from .market import DEFAULT_SYMBOLS
from .scenarios import parse_scenarios
from .simulator import EXCHANGES, InvalidConfig, SimulationConfig

#: The simulator's own defaults: the service's start defaults are these, not a second copy.
_SIMULATION = SimulationConfig(seed=0)


@dataclass(frozen=True)
class SimulationDefaults:
    """What ``POST /api/admin/mock-trading/start`` uses for parameters the request leaves out.

    ``seed`` 0 means a fresh random seed per start (reported in the response and in the stats,
    so the run can be reproduced).
    """

    rate_ms: float = _SIMULATION.rate_ms
    users: int = _SIMULATION.users
    symbols: tuple[str, ...] = _SIMULATION.symbols
    exchanges: tuple[str, ...] = _SIMULATION.exchanges
    scenarios: tuple[str, ...] = _SIMULATION.scenarios
    scenario_every: int = _SIMULATION.scenario_every
    seed: int = 0
    quiet_ms: int = _SIMULATION.quiet_ms

    def simulation(self, seed: int, start_ms: int) -> SimulationConfig:
        """A full simulation configuration with these defaults; InvalidConfig names a bad field."""
        return SimulationConfig(
            seed=seed,
            start_ms=start_ms,
            rate_ms=self.rate_ms,
            users=self.users,
            symbols=self.symbols,
            exchanges=self.exchanges,
            scenarios=self.scenarios,
            scenario_every=self.scenario_every,
            quiet_ms=self.quiet_ms,
        )


@dataclass(frozen=True)
class ProducerConfig:
    """Everything the producer service needs besides the Kafka and registry settings."""

    host: str = "127.0.0.1"
    port: int = 8090
    admin_token: Secret = field(default_factory=lambda: Secret(""))
    audit_db: Path = Path("var/producer-audit.sqlite3")
    topics: Topics = TOPICS
    defaults: SimulationDefaults = SimulationDefaults()
    #: How long ``POST /api/trades/produce`` waits for the broker's ack before answering 202.
    ack_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ProducerConfig:
        """Read the ``RISKENGINE_PRODUCER_*`` settings; SettingsError names a bad one."""
        symbols = _names(settings.producer_symbols) or DEFAULT_SYMBOLS
        exchanges = _names(settings.producer_exchanges) or EXCHANGES
        try:
            scenarios = parse_scenarios(settings.producer_scenarios)
        except ValueError as exc:
            raise SettingsError(f"RISKENGINE_PRODUCER_SCENARIOS: {exc}") from None
        defaults = SimulationDefaults(
            rate_ms=settings.producer_rate_ms,
            users=settings.producer_users,
            symbols=symbols,
            exchanges=exchanges,
            scenarios=scenarios,
            scenario_every=settings.producer_scenario_every,
            seed=settings.producer_seed,
        )
        try:
            defaults.simulation(seed=1, start_ms=0)
        except InvalidConfig as exc:
            raise SettingsError(f"RISKENGINE_PRODUCER_{exc.field.upper()}: {exc.reason}") from None
        return cls(
            host=settings.producer_host,
            port=settings.producer_port,
            admin_token=settings.producer_admin_token,
            audit_db=settings.producer_audit_db,
            topics=topic_names(settings),
            defaults=defaults,
        )


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
