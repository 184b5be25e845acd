"""What the simulator emits: trade and order events, and the scenario labels that describe them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """The contract an event's record follows (and so the topic it goes to)."""

    TRADE = "trade"
    ORDER = "order"

    @property
    def record_name(self) -> str:
        """The Avro contract of the record."""
        return "CryptoTrade" if self is EventKind.TRADE else "OrderEvent"


@dataclass(frozen=True, slots=True)
class Event:
    """One simulated event: a ``CryptoTrade`` or an ``OrderEvent`` record, and its scenario if injected."""

    kind: EventKind
    event_id: str
    timestamp: int
    user_id: str
    record: dict[str, Any]
    scenario: str | None = None
    scenario_id: str | None = None


class LabelRole(StrEnum):
    """Why a label exists: the injected pattern, or one the injection completed as well."""

    PRIMARY = "primary"
    INCIDENTAL = "incidental"


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one pattern instance of one scenario run.

    ``complete`` is false when the run ended (``--trades`` reached) before the scenario finished;
    such labels are left out of the evaluation. ``verified`` tells whether the oracle saw the
    pattern's definition met (None for patterns it does not check: order-event and market-level
    ones).
    """

    scenario_id: str
    scenario: str
    pattern: str
    role: LabelRole
    user_ids: tuple[str, ...]
    symbol: str | None
    start_ts: int
    end_ts: int
    trade_ids: tuple[str, ...]
    order_ids: tuple[str, ...]
    order_event_ids: tuple[str, ...]
    complete: bool
    verified: bool | None

    @property
    def event_ids(self) -> frozenset[str]:
        """Every id an alert's evidence may cite for this instance: trades, orders, order events."""
        return frozenset(self.trade_ids) | frozenset(self.order_ids) | frozenset(self.order_event_ids)

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to the labels file (camelCase, like the contracts)."""
        return {
            "scenarioId": self.scenario_id,
            "scenario": self.scenario,
            "patternType": self.pattern,
            "role": self.role.value,
            "userIds": list(self.user_ids),
            "symbol": self.symbol,
            "startTs": self.start_ts,
            "endTs": self.end_ts,
            "tradeIds": list(self.trade_ids),
            "orderIds": list(self.order_ids),
            "orderEventIds": list(self.order_event_ids),
            "complete": self.complete,
            "verified": self.verified,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Label:
        """Read a label written by :meth:`to_record`; KeyError/ValueError on a malformed one."""
        return cls(
            scenario_id=str(record["scenarioId"]),
            scenario=str(record["scenario"]),
            pattern=str(record["patternType"]),
            role=LabelRole(record["role"]),
            user_ids=tuple(str(u) for u in record["userIds"]),
            symbol=None if record.get("symbol") is None else str(record["symbol"]),
            start_ts=int(record["startTs"]),
            end_ts=int(record["endTs"]),
            trade_ids=tuple(str(i) for i in record["tradeIds"]),
            order_ids=tuple(str(i) for i in record["orderIds"]),
            order_event_ids=tuple(str(i) for i in record["orderEventIds"]),
            complete=bool(record["complete"]),
            verified=None if record.get("verified") is None else bool(record["verified"]),
        )
