"""The core's value types: enums, the input trade and profile, and the analysis outputs.

Inputs (:class:`Trade`, :class:`UserProfile`) are slotted frozen dataclasses, built once per
message by :func:`parse_trade` / :func:`parse_profile`, which check every field and raise
:class:`InvalidTrade` / :class:`InvalidProfile` naming the field at fault; the Kafka decoder and
``riskengine replay`` both go through them. Unknown extra keys are ignored (a newer writer may
add optional fields); every known field is checked strictly. :class:`Trade` and
:class:`OrderEvent`, built for every event (and a trade again by the market and pair agents), write
their ``__init__`` out (``init=False``): mypyc compiles that one, while the one ``dataclass``
generates for a frozen class stays interpreted (about 1.4 us for a trade instead of 0.1, measured
compiled; ``tests/unit/core/test_models.py`` pins the signatures to the fields).

Outputs (:class:`RiskAnalyzedTrade`, its analyses, :class:`RiskAlert`, :class:`Feature`) are
``NamedTuple`` s: just as immutable, and about four times cheaper to build than frozen dataclasses,
which matters when several are built for every trade. Their ``to_record()`` returns the Avro
contract's dict (camelCase field names) that :func:`riskengine.contracts.validate_record` accepts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from riskengine.errors import CoreError


class Side(StrEnum):
    """Trade side (``riskengine.Side``)."""

    BUY = "BUY"
    SELL = "SELL"


class OrderEventType(StrEnum):
    """Life-cycle step of an order (``riskengine.OrderEventType``)."""

    PLACED = "PLACED"
    AMENDED = "AMENDED"
    CANCELLED = "CANCELLED"
    FILLED = "FILLED"


class RiskLevel(StrEnum):
    """Per-trade risk level (``riskengine.RiskLevel``), ordered LOW < MEDIUM < HIGH < CRITICAL."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class AccountType(StrEnum):
    """The venue's designation of an account (``riskengine.AccountType``).

    UNKNOWN is what an engine reads for a designation added to the contract after it was built:
    it is treated like no designation.
    """

    UNKNOWN = "UNKNOWN"
    RETAIL = "RETAIL"
    PROFESSIONAL = "PROFESSIONAL"
    MARKET_MAKER = "MARKET_MAKER"
    INSTITUTIONAL = "INSTITUTIONAL"


class Severity(StrEnum):
    """Alert severity (``riskengine.Severity``)."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class PatternType(StrEnum):
    """Detection typologies (``riskengine.PatternType``), in the contract's symbol order."""

    UNKNOWN = "UNKNOWN"
    VOLUME_SPIKE = "VOLUME_SPIKE"
    WASH_TRADING = "WASH_TRADING"
    LARGE_ORDER = "LARGE_ORDER"
    FLASH_CRASH = "FLASH_CRASH"
    SELF_TRADE = "SELF_TRADE"
    ROUND_TRIP_WASH = "ROUND_TRIP_WASH"
    SPOOFING = "SPOOFING"
    LAYERING = "LAYERING"
    QUOTE_STUFFING = "QUOTE_STUFFING"
    MOMENTUM_IGNITION = "MOMENTUM_IGNITION"
    PUMP_AND_DUMP = "PUMP_AND_DUMP"
    PRICE_CRASH = "PRICE_CRASH"
    STRUCTURING = "STRUCTURING"
    SANCTIONS_HIT = "SANCTIONS_HIT"
    KYC_LIMIT_BREACH = "KYC_LIMIT_BREACH"


#: Position of each pattern in the contract's enum: the evaluation and output order.
PATTERN_ORDER: dict[PatternType, int] = {pattern: index for index, pattern in enumerate(PatternType)}


class ComplianceFlag(StrEnum):
    """Strings that may appear in ``RiskAnalyzedTrade.complianceFlags``."""

    SANCTIONED_USER = "SANCTIONED_USER"
    SANCTIONED_COUNTERPARTY = "SANCTIONED_COUNTERPARTY"
    SANCTIONED_COUNTRY = "SANCTIONED_COUNTRY"
    RESTRICTED_COUNTRY = "RESTRICTED_COUNTRY"
    KYC_TRADE_LIMIT = "KYC_TRADE_LIMIT"
    KYC_DAILY_LIMIT = "KYC_DAILY_LIMIT"
    NO_PROFILE = "NO_PROFILE"
    STRUCTURING_SUSPECTED = "STRUCTURING_SUSPECTED"
    TRAVEL_RULE = "TRAVEL_RULE"
    TAX_REPORTING_REQUIRED = "TAX_REPORTING_REQUIRED"
    LATE_EVENT = "LATE_EVENT"
    DUPLICATE_EVENT = "DUPLICATE_EVENT"


class MitigationAction(StrEnum):
    """Strings that may appear in ``RiskAnalyzedTrade.riskMitigationActions``, in output order."""

    MANUAL_REVIEW_REQUIRED = "MANUAL_REVIEW_REQUIRED"
    LIMIT_TRADING = "LIMIT_TRADING"
    BLOCK_TRADE = "BLOCK_TRADE"
    FREEZE_ACCOUNT = "FREEZE_ACCOUNT"
    REPORT_TO_COMPLIANCE = "REPORT_TO_COMPLIANCE"


class InvalidTrade(CoreError):
    """A trade record has a missing or bad field; ``field`` names it, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidOrderEvent(CoreError):
    """An order-event record has a missing or bad field; ``field`` names it, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidProfile(CoreError):
    """A user-profile record has a missing or bad field; ``field`` names it, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


#: Longest accepted id (trade, user, customer, order): ids are kept in per-user state.
MAX_ID_LENGTH = 128
#: Largest accepted event time, epoch ms (year 5138): rejects seconds-vs-ms and garbage values.
#: How far ahead of the clock an event may be is a rule (``event.max.future.skew.seconds``).
MAX_TIMESTAMP_MS = 10**14
#: Earliest accepted event time: 2009-01-03T18:15:05Z, the first block of any crypto asset.
MIN_TIMESTAMP_MS = 1_231_006_505_000
#: Largest accepted quantity (1e15: a quadrillion units of the cheapest token), price (1e9 per
#: unit) and notional (1e12 USD, a trillion: beyond any single execution). Bounded inputs keep
#: every aggregate of the state finite (sums, EWMA variances of notionals up to 1e24).
MAX_QUANTITY = 1e15
MAX_PRICE = 1e9
MAX_NOTIONAL = 1e12
#: Smallest accepted quantity, price and notional: denormal values (5e-324) would turn ratios
#: such as the price deviation into inf.
MIN_POSITIVE = 1e-12
#: notional must equal quantity x price within this relative tolerance (rounding by the source).
NOTIONAL_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True, init=False)
class Trade:
    """One executed trade (``riskengine.CryptoTrade``); build it with :func:`parse_trade`."""

    trade_id: str
    user_id: str
    customer_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    notional: float
    timestamp: int
    exchange: str
    order_type: str
    risk_level: RiskLevel | None = None
    counterparty_user_id: str | None = None
    order_id: str | None = None

    def __init__(
        self,
        trade_id: str,
        user_id: str,
        customer_id: str,
        symbol: str,
        side: Side,
        quantity: float,
        price: float,
        notional: float,
        timestamp: int,
        exchange: str,
        order_type: str,
        risk_level: RiskLevel | None = None,
        counterparty_user_id: str | None = None,
        order_id: str | None = None,
    ) -> None:
        object.__setattr__(self, "trade_id", trade_id)
        object.__setattr__(self, "user_id", user_id)
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "side", side)
        object.__setattr__(self, "quantity", quantity)
        object.__setattr__(self, "price", price)
        object.__setattr__(self, "notional", notional)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "exchange", exchange)
        object.__setattr__(self, "order_type", order_type)
        object.__setattr__(self, "risk_level", risk_level)
        object.__setattr__(self, "counterparty_user_id", counterparty_user_id)
        object.__setattr__(self, "order_id", order_id)

    def to_record(self) -> dict[str, Any]:
        """The ``CryptoTrade`` record (camelCase field names)."""
        return {
            "tradeId": self.trade_id,
            "userId": self.user_id,
            "customerId": self.customer_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "quantity": self.quantity,
            "price": self.price,
            "notional": self.notional,
            "timestamp": self.timestamp,
            "exchange": self.exchange,
            "orderType": self.order_type,
            "riskLevel": None if self.risk_level is None else self.risk_level.value,
            "counterpartyUserId": self.counterparty_user_id,
            "orderId": self.order_id,
        }


_Invalid = type[InvalidTrade] | type[InvalidProfile] | type[InvalidOrderEvent]


def ahead_of_clock(timestamp: int, clock_ms: int, max_skew_ms: int) -> str | None:
    """Why an event at ``timestamp`` is too far ahead of ``clock_ms`` to be admitted (None: it is not).

    An event far in the future would move its account's event time (the watermark) for good and
    push every later event out of the pattern windows as "too late"; it is rejected instead.
    """
    if timestamp <= clock_ms + max_skew_ms:
        return None
    return (
        f"event time {timestamp} is {(timestamp - clock_ms) / 1000:,.0f} s ahead of the clock "
        f"({clock_ms}); at most {max_skew_ms / 1000:g} s is allowed (event.max.future.skew.seconds)"
    )


def is_symbol(text: str) -> bool:
    """Whether ``text`` is a ``BASE/QUOTE`` symbol such as ``BTC/USDT``."""
    base, slash, quote = text.partition("/")
    return bool(slash and base and quote) and "/" not in quote


def _string(record: Mapping[str, Any], name: str, error: _Invalid) -> str:
    if name not in record:
        raise error(name, "missing")
    value = record[name]
    if not isinstance(value, str):
        raise error(name, f"must be a string, got {type(value).__name__}")
    if not value or value.strip() != value:
        raise error(name, f"must be a non-empty string without surrounding spaces, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise error(name, f"longer than {MAX_ID_LENGTH} characters")
    return value


def _optional_string(record: Mapping[str, Any], name: str, error: _Invalid) -> str | None:
    if record.get(name) is None:
        return None
    return _string(record, name, error)


def _shown(value: Any) -> str:
    """``repr(value)``, shortened: an error message must not echo a 400-digit number back."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


def _finite(record: Mapping[str, Any], name: str, error: _Invalid) -> float:
    if name not in record:
        raise error(name, "missing")
    value = record[name]
    # bool is an int subclass: True must not pass as a quantity of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(name, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise error(name, f"must be a finite number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise error(name, f"must be a finite number, got {_shown(value)}")
    return number


def _positive(record: Mapping[str, Any], name: str, high: float, error: _Invalid = InvalidTrade) -> float:
    number = _finite(record, name, error)
    if number <= 0.0:
        raise error(name, f"must be a finite number > 0, got {_shown(record[name])}")
    if number < MIN_POSITIVE:
        raise error(name, f"must be at least {MIN_POSITIVE:g}, got {number:g}")
    if number > high:
        raise error(name, f"must be at most {high:g}, got {number:g}")
    return number


def _integer(record: Mapping[str, Any], name: str, low: int, high: int, error: _Invalid) -> int:
    if name not in record:
        raise error(name, "missing")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise error(name, f"must be between {low} and {high}, got {value}")
    return value


def parse_trade(record: Mapping[str, Any]) -> Trade:
    """Validate a ``CryptoTrade`` record (camelCase keys) and build a :class:`Trade`.

    Raises :class:`InvalidTrade` naming the first bad field: a missing required field, a wrong
    type, an empty or over-long id, a non-positive or non-finite quantity, price or notional, a
    notional that disagrees with quantity x price by more than 1 %, a quantity, price or notional
    below :data:`MIN_POSITIVE` or above :data:`MAX_QUANTITY`, :data:`MAX_PRICE`,
    :data:`MAX_NOTIONAL`, an unknown side or risk level, or an event time outside
    :data:`MIN_TIMESTAMP_MS`..:data:`MAX_TIMESTAMP_MS`.
    """
    if not isinstance(record, Mapping):
        raise InvalidTrade("record", f"must be an object, got {type(record).__name__}")
    trade_id = _string(record, "tradeId", InvalidTrade)
    user_id = _string(record, "userId", InvalidTrade)
    customer_id = _string(record, "customerId", InvalidTrade)
    symbol = _string(record, "symbol", InvalidTrade)
    if not is_symbol(symbol):
        raise InvalidTrade("symbol", f"must be BASE/QUOTE such as BTC/USDT, got {symbol!r}")
    if "side" not in record:
        raise InvalidTrade("side", "missing")
    side_value = record["side"]
    try:
        side = Side(side_value)
    except ValueError:
        raise InvalidTrade("side", f"unknown side {side_value!r} (expected BUY or SELL)") from None
    quantity = _positive(record, "quantity", MAX_QUANTITY)
    price = _positive(record, "price", MAX_PRICE)
    notional = _positive(record, "notional", MAX_NOTIONAL)
    if abs(notional - quantity * price) > NOTIONAL_TOLERANCE * notional:
        raise InvalidTrade(
            "notional",
            f"{notional!r} is not quantity x price ({quantity!r} x {price!r} = {quantity * price!r})",
        )
    timestamp = _integer(record, "timestamp", MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS, InvalidTrade)
    exchange = _string(record, "exchange", InvalidTrade)
    order_type = _string(record, "orderType", InvalidTrade)
    level_value = record.get("riskLevel")
    risk_level = None
    if level_value is not None:
        try:
            risk_level = RiskLevel(level_value)
        except ValueError:
            raise InvalidTrade("riskLevel", f"unknown risk level {level_value!r}") from None
    return Trade(
        trade_id=trade_id,
        user_id=user_id,
        customer_id=customer_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        notional=notional,
        timestamp=timestamp,
        exchange=exchange,
        order_type=order_type,
        risk_level=risk_level,
        counterparty_user_id=_optional_string(record, "counterpartyUserId", InvalidTrade),
        order_id=_optional_string(record, "orderId", InvalidTrade),
    )


@dataclass(frozen=True, slots=True, init=False)
class OrderEvent:
    """One step in an order's life (``riskengine.OrderEvent``); build it with :func:`parse_order_event`.

    ``quantity`` is the order's quantity after this event, ``remaining_quantity`` what is still
    unfilled after it: a FILLED event with a remaining quantity above 0 is a partial fill.
    """

    event_id: str
    order_id: str
    user_id: str
    symbol: str
    side: Side
    event_type: OrderEventType
    price: float
    quantity: float
    remaining_quantity: float
    timestamp: int
    exchange: str | None = None

    def __init__(
        self,
        event_id: str,
        order_id: str,
        user_id: str,
        symbol: str,
        side: Side,
        event_type: OrderEventType,
        price: float,
        quantity: float,
        remaining_quantity: float,
        timestamp: int,
        exchange: str | None = None,
    ) -> None:
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "order_id", order_id)
        object.__setattr__(self, "user_id", user_id)
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "side", side)
        object.__setattr__(self, "event_type", event_type)
        object.__setattr__(self, "price", price)
        object.__setattr__(self, "quantity", quantity)
        object.__setattr__(self, "remaining_quantity", remaining_quantity)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "exchange", exchange)

    def to_record(self) -> dict[str, Any]:
        """The ``OrderEvent`` record (camelCase field names)."""
        return {
            "eventId": self.event_id,
            "orderId": self.order_id,
            "userId": self.user_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "eventType": self.event_type.value,
            "price": self.price,
            "quantity": self.quantity,
            "remainingQuantity": self.remaining_quantity,
            "timestamp": self.timestamp,
            "exchange": self.exchange,
        }


def _remaining(record: Mapping[str, Any]) -> float:
    number = _finite(record, "remainingQuantity", InvalidOrderEvent)
    if abs(number) > MAX_QUANTITY:
        raise InvalidOrderEvent(
            "remainingQuantity", f"must be at most {MAX_QUANTITY:g} in size, got {number:g}"
        )
    return number


def parse_order_event(record: Mapping[str, Any]) -> OrderEvent:
    """Validate an ``OrderEvent`` record (camelCase keys) and build an :class:`OrderEvent`.

    Raises :class:`InvalidOrderEvent` naming the first bad field: a missing field, a wrong type, an
    empty or over-long id, a symbol not BASE/QUOTE, an unknown side or event type, a price or
    quantity that is not a finite number > 0 (or above :data:`MAX_PRICE` / :data:`MAX_QUANTITY`), a
    remaining quantity that is not finite or larger than :data:`MAX_QUANTITY` in size, or an event
    time outside :data:`MIN_TIMESTAMP_MS`..:data:`MAX_TIMESTAMP_MS`. A remaining quantity below 0
    or above the quantity is well-formed here: the order book flags it as an inconsistency (see
    :mod:`riskengine.core.order_book`).
    """
    if not isinstance(record, Mapping):
        raise InvalidOrderEvent("record", f"must be an object, got {type(record).__name__}")
    event_id = _string(record, "eventId", InvalidOrderEvent)
    order_id = _string(record, "orderId", InvalidOrderEvent)
    user_id = _string(record, "userId", InvalidOrderEvent)
    symbol = _string(record, "symbol", InvalidOrderEvent)
    if not is_symbol(symbol):
        raise InvalidOrderEvent("symbol", f"must be BASE/QUOTE such as BTC/USDT, got {symbol!r}")
    side_value = record.get("side")
    if side_value not in Side.__members__:
        raise InvalidOrderEvent("side", f"unknown side {side_value!r} (expected BUY or SELL)")
    side = Side(str(side_value))
    type_value = record.get("eventType")
    if type_value not in OrderEventType.__members__:
        expected = ", ".join(OrderEventType)
        raise InvalidOrderEvent("eventType", f"unknown event type {type_value!r} (expected {expected})")
    event_type = OrderEventType(str(type_value))
    return OrderEvent(
        event_id=event_id,
        order_id=order_id,
        user_id=user_id,
        symbol=symbol,
        side=side,
        event_type=event_type,
        price=_positive(record, "price", MAX_PRICE, InvalidOrderEvent),
        quantity=_positive(record, "quantity", MAX_QUANTITY, InvalidOrderEvent),
        remaining_quantity=_remaining(record),
        timestamp=_integer(record, "timestamp", MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS, InvalidOrderEvent),
        exchange=_optional_string(record, "exchange", InvalidOrderEvent),
    )


@dataclass(frozen=True, slots=True)
class UserProfile:
    """Reference data for one account (``riskengine.UserProfile``)."""

    user_id: str
    customer_id: str
    kyc_tier: int
    country: str
    sanctioned: bool = False
    linked_accounts: frozenset[str] = frozenset()
    updated_at: int = 0
    #: None: no designation; every pattern applies as the typology defines it.
    account_type: AccountType | None = None


def parse_profile(record: Mapping[str, Any]) -> UserProfile:
    """Validate a ``UserProfile`` record (camelCase keys); :class:`InvalidProfile` names a bad field."""
    if not isinstance(record, Mapping):
        raise InvalidProfile("record", f"must be an object, got {type(record).__name__}")
    user_id = _string(record, "userId", InvalidProfile)
    customer_id = _string(record, "customerId", InvalidProfile)
    kyc_tier = _integer(record, "kycTier", 0, 3, InvalidProfile)
    country = _string(record, "country", InvalidProfile)
    if len(country) != 2 or not country.isalpha() or not country.isupper():
        raise InvalidProfile("country", f"must be an ISO 3166-1 alpha-2 code such as DE, got {country!r}")
    sanctioned = record.get("sanctioned", False)
    if not isinstance(sanctioned, bool):
        raise InvalidProfile("sanctioned", f"must be true or false, got {sanctioned!r}")
    linked = record.get("linkedAccounts", [])
    if not isinstance(linked, (list, tuple)) or not all(isinstance(a, str) and a for a in linked):
        raise InvalidProfile("linkedAccounts", "must be a list of non-empty user ids")
    updated_at = record.get("updatedAt", 0)
    if isinstance(updated_at, bool) or not isinstance(updated_at, int):
        raise InvalidProfile("updatedAt", f"must be an integer, got {updated_at!r}")
    account_type = record.get("accountType")
    if account_type is not None and account_type not in AccountType.__members__:
        raise InvalidProfile(
            "accountType",
            f"must be null or one of {', '.join(AccountType.__members__)}, got {account_type!r}",
        )
    return UserProfile(
        user_id=user_id,
        customer_id=customer_id,
        kyc_tier=kyc_tier,
        country=country,
        sanctioned=sanctioned,
        linked_accounts=frozenset(linked),
        updated_at=updated_at,
        account_type=None if account_type is None else AccountType(account_type),
    )


class Feature(NamedTuple):
    """A number that fed a decision, with the threshold it was compared against (``Feature``)."""

    name: str
    value: float
    threshold: float | None = None
    comparison: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The ``Feature`` record."""
        return {
            "name": self.name,
            "value": float(self.value),
            "threshold": None if self.threshold is None else float(self.threshold),
            "comparison": self.comparison,
        }


class VolumeAnalysis(NamedTuple):
    """Size of the trade against the user's history (``VolumeAnalysis``).

    ``z_score`` and ``percentile_rank`` compare the notional with the user's running EWMA mean and
    variance and quantile sketch *before* this trade. ``std_notional`` is the EWMA standard
    deviation floored at ``volume.std.floor.ratio`` x the mean (so a short or steady history does
    not make every larger trade an outlier); ``z_score = (notional - mean) / std_notional``, and 0
    until the user has ``volume.min.history`` trades. ``trades_in_window`` counts the user's trades
    in the volume-spike window ending at this trade (this one included; 0 for a late arrival).
    """

    notional: float
    z_score: float
    percentile_rank: float
    mean_notional: float
    std_notional: float
    trades_in_window: int
    volume_spike: bool

    def to_record(self) -> dict[str, Any]:
        """The ``VolumeAnalysis`` record."""
        return {
            "notional": self.notional,
            "zScore": self.z_score,
            "percentileRank": self.percentile_rank,
            "meanNotional": self.mean_notional,
            "stdNotional": self.std_notional,
            "tradesInWindow": self.trades_in_window,
            "volumeSpike": self.volume_spike,
        }


class BehavioralAnalysis(NamedTuple):
    """Pattern matches on the user's recent history (``BehavioralAnalysis``).

    ``trades_in_window`` and ``sells_in_window`` count the user's trades and sells in the
    flash-crash window ending at this trade (this one included; 0 for a late arrival).
    """

    matched_patterns: tuple[PatternType, ...]
    trades_in_window: int
    sells_in_window: int
    late_arrival: bool
    #: Set-ups of patterns not complete yet the trade is part of (:mod:`riskengine.core.early_signals`).
    early_signals: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The ``BehavioralAnalysis`` record."""
        return {
            "matchedPatterns": [p.value for p in self.matched_patterns],
            "tradesInWindow": self.trades_in_window,
            "sellsInWindow": self.sells_in_window,
            "lateArrival": self.late_arrival,
            "earlySignals": list(self.early_signals),
        }


class MarketImpactAnalysis(NamedTuple):
    """Liquidity consumption, slippage against a reference price, and the large-order test.

    ``volatility`` and ``market_context_as_of`` are set when the symbol's market context (from the
    market state, see :mod:`riskengine.core.market`) was used: its volatility and the minute it is
    as of.
    """

    liquidity_consumption: float
    price_deviation: float
    reference_price: float | None
    large_order: bool
    large_order_threshold: float
    volatility: float | None = None
    market_context_as_of: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The ``MarketImpactAnalysis`` record."""
        return {
            "liquidityConsumption": self.liquidity_consumption,
            "priceDeviation": self.price_deviation,
            "referencePrice": self.reference_price,
            "largeOrder": self.large_order,
            "largeOrderThreshold": self.large_order_threshold,
            "volatility": self.volatility,
            "marketContextAsOf": self.market_context_as_of,
        }


class ScoreBreakdown(NamedTuple):
    """Per-component scores in [0, 1] and the weights that combined them (``ScoreBreakdown``)."""

    volume: float
    behavioral: float
    market_impact: float
    compliance: float
    weights: Mapping[str, float]

    def to_record(self) -> dict[str, Any]:
        """The ``ScoreBreakdown`` record."""
        return {
            "volume": self.volume,
            "behavioral": self.behavioral,
            "marketImpact": self.market_impact,
            "compliance": self.compliance,
            "weights": dict(self.weights),
        }


class RiskAnalyzedTrade(NamedTuple):
    """Every trade, scored (``RiskAnalyzedTrade``). ``processed_at`` is stamped by the adapter."""

    trade: Trade
    risk_score: float
    final_risk_level: RiskLevel
    triggered_patterns: tuple[PatternType, ...]
    volume: VolumeAnalysis
    behavioral: BehavioralAnalysis
    market_impact: MarketImpactAnalysis
    compliance_flags: tuple[str, ...]
    mitigation_actions: tuple[str, ...]
    breakdown: ScoreBreakdown
    rule_version: int
    processed_at: int | None = None

    @property
    def event_timestamp(self) -> int:
        """The trade's event time, epoch ms."""
        return self.trade.timestamp

    def to_record(self) -> dict[str, Any]:
        """The ``RiskAnalyzedTrade`` record."""
        return {
            "originalTrade": self.trade.to_record(),
            "riskScore": self.risk_score,
            "finalRiskLevel": self.final_risk_level.value,
            "triggeredPatterns": [p.value for p in self.triggered_patterns],
            "volumeAnalysis": self.volume.to_record(),
            "behavioralAnalysis": self.behavioral.to_record(),
            "marketImpactAnalysis": self.market_impact.to_record(),
            "complianceFlags": list(self.compliance_flags),
            "riskMitigationActions": list(self.mitigation_actions),
            "scoreBreakdown": self.breakdown.to_record(),
            "ruleVersion": self.rule_version,
            "eventTimestamp": self.trade.timestamp,
            "processedAt": self.processed_at,
        }


class OrderActivity(NamedTuple):
    """One step of the order flow an alert cites (``OrderActivity``): an order event or a trade.

    ``kind`` is the order event type (PLACED, AMENDED, CANCELLED, FILLED) or TRADE for one of the
    account's executions; ``order_id`` and ``remaining_quantity`` are None for a trade.
    """

    event_id: str
    order_id: str | None
    kind: str
    side: Side
    price: float
    quantity: float
    remaining_quantity: float | None
    timestamp: int

    def to_record(self) -> dict[str, Any]:
        """The ``OrderActivity`` record."""
        return {
            "eventId": self.event_id,
            "orderId": self.order_id,
            "kind": self.kind,
            "side": self.side.value,
            "price": self.price,
            "quantity": self.quantity,
            "remainingQuantity": self.remaining_quantity,
            "timestamp": self.timestamp,
        }


class RiskAlert(NamedTuple):
    """An explainable alert (``RiskAlert``); ``alert_id`` is derived from pattern, key and evidence.

    ``activity`` is the order flow behind an order-flow alert (the cited orders' lives and the
    account's fills around them), in event-time order; empty for the other patterns.
    """

    alert_id: str
    pattern: PatternType
    user_id: str | None
    symbol: str | None
    severity: Severity
    description: str
    recommended_action: str
    timestamp: int
    evidence: tuple[str, ...]
    features: tuple[Feature, ...]
    rule_version: int
    activity: tuple[OrderActivity, ...] = ()
    #: 0-100, see :mod:`riskengine.core.priority`; None only for alerts built without one.
    priority: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The ``RiskAlert`` record."""
        return {
            "alertId": self.alert_id,
            "patternType": self.pattern.value,
            "userId": self.user_id,
            "symbol": self.symbol,
            "severity": self.severity.value,
            "description": self.description,
            "recommendedAction": self.recommended_action,
            "timestamp": self.timestamp,
            "evidence": list(self.evidence),
            "features": [f.to_record() for f in self.features],
            "ruleVersion": self.rule_version,
            "orderActivity": [a.to_record() for a in self.activity],
            "priority": self.priority,
        }


def alert_id(pattern: PatternType, key: str, evidence: tuple[str, ...]) -> str:
    """Deterministic alert id: 32 hex digits of SHA-256 over pattern, key and evidence ids.

    Each part is written as ``<length>:<utf-8 text>`` (a netstring without the comma), so no
    choice of ids can make two different inputs produce the same bytes.
    """
    digest = hashlib.sha256()
    for part in (pattern.value, key, *evidence):
        data = part.encode()
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()[:32]
