"""Two accounts passing the same coins back and forth: the account-pair state and ROUND_TRIP_WASH.

Both accounts' trades must meet, so the worker repartitions executions by the unordered pair of
their *owners* (:func:`pair_key`); ``riskengine replay`` groups them the same way. An account's
owner is ``customer:<customerId>`` of its profile, or the smallest such owner among the account
and the accounts its own profile links (one hop; venues list a link on both profiles), or
``user:<userId>`` without a profile: linked accounts and accounts of one customer are one owner,
and an execution within one owner is a SELF_TRADE, not a round trip.

:func:`evaluate_pair_trade` needs the records of a pair in (timestamp, tradeId) order, like the
market core (a record at or before the last applied is a re-delivery), and counts an execution
once (:mod:`riskengine.core.executions`).

ROUND_TRIP_WASH (keyed by the pair and the symbol): a *leg* is an execution in which one owner
buys from the other; a *round trip* is a leg followed, within ``round.trip.leg.minutes`` (2), by a
leg the other way in the same symbol whose quantity is within ``round.trip.quantity.tolerance``
(1%) of the first leg's (``|q_back - q_first| <= tolerance x q_first``). A leg closes at most one
round trip: the earliest open leg that fits. ``round.trip.min.trips`` (3) round trips completed
within ``round.trip.window.hours`` (1) raise the alert, with every leg as evidence and both
accounts of each leg named; further round trips within the window after an alert merge into it.
The state keeps open legs for the leg window and round trips for the trip window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from riskengine.errors import CoreError

from .executions import ExecutionLedger, buyer_and_seller
from .models import AccountType, Feature, PatternType, RiskAlert, Severity, Trade, alert_id
from .priority import alert_priority
from .reference import ReferenceData
from .rules import MINUTE_MS, Rules

#: Current encoding version of a pair state.
FORMAT_VERSION = 1
#: Round trips kept per symbol at most (a pair trading thousands of times an hour).
MAX_TRIPS = 256
#: Open legs kept per symbol at most.
MAX_LEGS = 256

DESCRIPTION = "Two accounts traded the same quantity back and forth repeatedly (round-trip wash trading)"
ACTION = "Freeze both accounts for investigation and report to compliance"


class PairStateFormatError(CoreError):
    """Bytes that are not a pair state this version can read."""


def owner_of(reference: ReferenceData, user_id: str) -> str:
    """The owner of ``user_id`` (see the module docstring)."""
    profile = reference.profiles.get(user_id)
    if profile is None:
        return f"user:{user_id}"
    owners = [f"customer:{profile.customer_id}"]
    for linked in profile.linked_accounts:
        other = reference.profiles.get(linked)
        owners.append(f"user:{linked}" if other is None else f"customer:{other.customer_id}")
    return min(owners)


def pair_key(reference: ReferenceData, trade: Trade, rules: Rules) -> str | None:
    """``owner|owner`` (sorted) of ``trade``'s execution; None without a counterparty, within one
    owner, or (ROUND_TRIP_WASH in ``market.maker.exempt``) with a designated market maker on a side:
    a maker is the other side of most round trips by its function."""
    buyer, seller = buyer_and_seller(trade)
    if buyer is None or seller is None:
        return None
    if PatternType.ROUND_TRIP_WASH in rules.market_maker_exempt and (
        _is_maker(reference, buyer) or _is_maker(reference, seller)
    ):
        return None
    first, second = sorted((owner_of(reference, buyer), owner_of(reference, seller)))
    if first == second:
        return None
    return f"{first}|{second}"


def _is_maker(reference: ReferenceData, user_id: str) -> bool:
    profile = reference.profiles.get(user_id)
    return profile is not None and profile.account_type is AccountType.MARKET_MAKER


@dataclass(slots=True)
class PairState:
    """One owner pair's open legs and round trips per symbol."""

    last_time: int = -1
    last_id: str = ""
    ledger: ExecutionLedger = field(default_factory=ExecutionLedger)
    #: symbol -> open legs [time, buying owner, quantity, trade id, buyer, seller]
    legs: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: symbol -> round trips [completion time, first leg id, back leg id, q_first, q_back, buyer, seller]
    trips: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: symbol -> timestamp of the last alert
    fired: dict[str, int] = field(default_factory=dict)


class PairEvaluation(NamedTuple):
    """What one record did: applied (not a re-delivery), the alerts it raised."""

    state: PairState
    applied: bool
    alerts: tuple[RiskAlert, ...]


def evaluate_pair_trade(
    state: PairState, trade: Trade, buyer_owner: str, pair: str, rules: Rules
) -> PairEvaluation:
    """Apply ``trade`` (an execution of ``pair``, in order) and run ROUND_TRIP_WASH."""
    if (trade.timestamp, trade.trade_id) <= (state.last_time, state.last_id):
        return PairEvaluation(state, False, ())
    state.last_time, state.last_id = trade.timestamp, trade.trade_id
    if not state.ledger.add(trade):
        return PairEvaluation(state, True, ())
    timestamp, symbol = trade.timestamp, trade.symbol
    buyer, seller = buyer_and_seller(trade)
    legs = [leg for leg in state.legs.get(symbol, ()) if leg[0] >= timestamp - rules.round_trip_leg_ms]
    trips = [
        trip for trip in state.trips.get(symbol, ()) if trip[0] >= timestamp - rules.round_trip_window_ms
    ]
    back = next(
        (
            leg
            for leg in legs
            if leg[1] != buyer_owner and abs(trade.quantity - leg[2]) <= rules.round_trip_tolerance * leg[2]
        ),
        None,
    )
    if back is None:
        legs.append([timestamp, buyer_owner, trade.quantity, trade.trade_id, buyer, seller])
        del legs[:-MAX_LEGS]
    else:
        legs.remove(back)
        trips.append([timestamp, back[3], trade.trade_id, back[2], trade.quantity, buyer, seller])
        del trips[:-MAX_TRIPS]
    _store(state.legs, symbol, legs)
    _store(state.trips, symbol, trips)
    _prune_other_symbols(state, symbol, timestamp, rules)
    if back is None or len(trips) < rules.round_trip_min:
        return PairEvaluation(state, True, ())
    last = state.fired.get(symbol)
    if last is not None and timestamp <= last + rules.round_trip_window_ms:
        return PairEvaluation(state, True, ())
    state.fired = {s: t for s, t in state.fired.items() if t >= timestamp - rules.round_trip_window_ms}
    state.fired[symbol] = timestamp
    return PairEvaluation(state, True, (_alert(trade, pair, trips, rules),))


def _prune_other_symbols(state: PairState, symbol: str, timestamp: int, rules: Rules) -> None:
    """Drop what the pair's other symbols keep beyond their windows (a symbol it stopped trading)."""
    for table, horizon in ((state.legs, rules.round_trip_leg_ms), (state.trips, rules.round_trip_window_ms)):
        for other in [s for s in table if s != symbol]:
            _store(table, other, [row for row in table[other] if row[0] >= timestamp - horizon])
    state.fired = {s: t for s, t in state.fired.items() if t >= timestamp - rules.round_trip_window_ms}


def _store(table: dict[str, list[list[Any]]], symbol: str, rows: list[list[Any]]) -> None:
    if rows:
        table[symbol] = rows
    else:
        table.pop(symbol, None)


def _alert(trade: Trade, pair: str, trips: list[list[Any]], rules: Rules) -> RiskAlert:
    evidence = tuple(leg_id for trip in trips for leg_id in (trip[1], trip[2]))
    accounts = sorted({account for trip in trips for account in (trip[5], trip[6]) if account})
    spans = [trip[0] for trip in trips]
    worst = max(abs(trip[4] - trip[3]) / trip[3] for trip in trips)
    features = [
        Feature("roundTrips", len(trips), rules.round_trip_min, ">="),
        Feature(
            "spanMinutes", (max(spans) - min(spans)) / MINUTE_MS, rules.round_trip_window_ms / MINUTE_MS, "<="
        ),
        Feature("maxQuantityDifference", worst, rules.round_trip_tolerance, "<="),
        *(
            Feature(f"account:{account}", sum(1 for trip in trips if account in (trip[5], trip[6])))
            for account in accounts
        ),
    ]
    return RiskAlert(
        alert_id=alert_id(PatternType.ROUND_TRIP_WASH, f"{pair}/{trade.symbol}", evidence),
        pattern=PatternType.ROUND_TRIP_WASH,
        user_id=accounts[0] if accounts else None,
        symbol=trade.symbol,
        severity=Severity.CRITICAL,
        description=DESCRIPTION,
        recommended_action=ACTION,
        timestamp=trade.timestamp,
        evidence=evidence,
        features=tuple(features),
        rule_version=rules.version,
        priority=alert_priority(
            Severity.CRITICAL,
            features,
            trade.price * sum(trip[4] for trip in trips),
            weight=rules.priority_weights.get(PatternType.ROUND_TRIP_WASH, 1.0),
        ),
    )


def encode_pair_state(state: PairState) -> bytes:
    """The state as a table value: a version byte, then compact JSON."""
    document = [state.last_time, state.last_id, state.ledger.to_json(), state.legs, state.trips, state.fired]
    return bytes([FORMAT_VERSION]) + json.dumps(document, separators=(",", ":")).encode()


def decode_pair_state(data: bytes) -> PairState:
    """Read :func:`encode_pair_state`'s bytes; :class:`PairStateFormatError` for anything else."""
    if not data or data[0] != FORMAT_VERSION:
        raise PairStateFormatError(f"unknown pair state version {data[:1]!r}")
    try:
        last_time, last_id, ledger, legs, trips, fired = json.loads(data[1:])
        return PairState(last_time, last_id, ExecutionLedger.from_json(ledger), legs, trips, fired)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError) as exc:
        raise PairStateFormatError(f"pair state does not decode: {exc!r}") from exc
