"""ROUND_TRIP_WASH between two owners: legs, tolerance, trip count, owners and pair keys."""

from __future__ import annotations

import pytest

from riskengine.core import DEFAULT_RULES, PatternType, RiskAlert, Trade
from riskengine.core.account_pairs import (
    PairState,
    PairStateFormatError,
    decode_pair_state,
    encode_pair_state,
    evaluate_pair_trade,
    owner_of,
    pair_key,
)
from riskengine.core.early_signals import ROUND_TRIP_LEG, SIGNAL_SCORE

from .builders import MINUTE, SECOND, profile, reference, run, trade

REF = reference(profile("u-a"), profile("u-b"))


def leg(at: int, buyer: str, seller: str, quantity: float) -> Trade:
    """``buyer`` buys ``quantity`` from ``seller`` (the buyer's record)."""
    return trade(at, "BUY", notional=quantity * 2.0, quantity=quantity, user=buyer, counterparty=seller)


def trips(
    count: int, difference: float = 0.004, gap: int = 10 * MINUTE, back_after: int = 60 * SECOND
) -> list[Trade]:
    records = []
    for k in range(count):
        start = k * gap
        records.append(leg(start, "u-a", "u-b", 100.0))
        records.append(leg(start + back_after, "u-b", "u-a", 100.0 * (1 + difference)))
    return records


def feed(records: list[Trade]) -> list[RiskAlert]:
    state = PairState()
    alerts: list[RiskAlert] = []
    for record in records:
        key = pair_key(REF, record, DEFAULT_RULES)
        assert key is not None
        alerts.extend(
            evaluate_pair_trade(state, record, owner_of(REF, record.user_id), key, DEFAULT_RULES).alerts
        )
    return alerts


@pytest.mark.parametrize(("count", "fires"), [(2, False), (3, True)])
def test_three_round_trips_in_an_hour(count: int, fires: bool) -> None:
    alerts = feed(trips(count))
    assert bool(alerts) is fires
    if fires:
        (alert,) = alerts
        assert alert.pattern is PatternType.ROUND_TRIP_WASH
        assert len(alert.evidence) == 6
        names = {f.name for f in alert.features}
        assert {"account:u-a", "account:u-b"} <= names


@pytest.mark.parametrize(
    ("difference", "fires"), [(0.009, True), (0.011, False), (-0.009, True), (-0.011, False)]
)
def test_quantity_tolerance(difference: float, fires: bool) -> None:
    assert bool(feed(trips(3, difference))) is fires


def test_the_buy_back_must_follow_within_two_minutes() -> None:
    assert feed(trips(3, back_after=2 * MINUTE))
    assert not feed(trips(3, back_after=2 * MINUTE + 1))


def test_trips_must_fall_within_the_hour() -> None:
    assert feed(trips(3, gap=29 * MINUTE))
    assert not feed(trips(3, gap=31 * MINUTE))


def test_same_direction_twice_is_no_round_trip() -> None:
    records = [leg(k * MINUTE, "u-a", "u-b", 100.0) for k in range(8)]
    assert not feed(records)


def test_more_trips_within_the_hour_merge_into_the_alert() -> None:
    assert len(feed(trips(5, gap=5 * MINUTE))) == 1


def test_linked_accounts_are_one_owner() -> None:
    ref = reference(
        profile("u-a", linked_accounts=frozenset({"u-a2"})),
        profile("u-a2", linked_accounts=frozenset({"u-a"})),
        profile("u-b"),
    )
    assert owner_of(ref, "u-a") == owner_of(ref, "u-a2") == "customer:c-u-a"
    assert pair_key(ref, leg(0, "u-a2", "u-a", 1.0), DEFAULT_RULES) is None, "within one owner: a self trade"
    assert pair_key(ref, leg(0, "u-a2", "u-b", 1.0), DEFAULT_RULES) == pair_key(
        ref, leg(0, "u-b", "u-a", 1.0), DEFAULT_RULES
    )
    assert pair_key(ref, trade(0, "BUY", user="u-a"), DEFAULT_RULES) is None, "no counterparty"
    assert owner_of(ref, "u-unknown") == "user:u-unknown"


def test_both_records_of_a_leg_count_once() -> None:
    records = []
    for record in trips(3):
        twin = Trade(
            trade_id=record.trade_id + "-twin",
            user_id=str(record.counterparty_user_id),
            customer_id="c",
            symbol=record.symbol,
            side=type(record.side)("SELL"),
            quantity=record.quantity,
            price=record.price,
            notional=record.notional,
            timestamp=record.timestamp,
            exchange=record.exchange,
            order_type=record.order_type,
            counterparty_user_id=record.user_id,
        )
        records += sorted([record, twin], key=lambda t: t.trade_id)
    (alert,) = feed(records)
    assert len(alert.evidence) == 6


def test_state_round_trips() -> None:
    state = PairState()
    for record in trips(2):
        key = pair_key(REF, record, DEFAULT_RULES)
        assert key is not None
        evaluate_pair_trade(state, record, owner_of(REF, record.user_id), key, DEFAULT_RULES)
    data = encode_pair_state(state)
    assert encode_pair_state(decode_pair_state(data)) == data
    with pytest.raises(PairStateFormatError):
        decode_pair_state(b"\x01[1,2]")


# -- one round trip, seen from one account (an early signal on its trade) ----------------------


def test_a_trade_reversing_one_with_the_same_counterparty_shows_a_round_trip_leg():
    bought = trade(0, "BUY", 1_000.0, quantity=1_000.0, counterparty="u-2")
    back = trade(90 * SECOND, "SELL", 1_005.0, quantity=1_005.0, counterparty="u-2")
    first, second = run([bought, back])
    assert first.analyzed.behavioral.early_signals == ()
    assert second.analyzed.behavioral.early_signals == (ROUND_TRIP_LEG,)
    assert second.analyzed.breakdown.behavioral == SIGNAL_SCORE[ROUND_TRIP_LEG]
    # Another counterparty, a quantity 2 % off, or a leg over 2 minutes later: no round trip.
    for other in (
        trade(90 * SECOND, "SELL", 1_005.0, quantity=1_005.0, counterparty="u-3"),
        trade(90 * SECOND, "SELL", 1_020.0, quantity=1_020.0, counterparty="u-2"),
        trade(2 * MINUTE + 1, "SELL", 1_005.0, quantity=1_005.0, counterparty="u-2"),
        trade(90 * SECOND, "BUY", 1_005.0, quantity=1_005.0, counterparty="u-2"),
    ):
        assert run([bought, other])[1].analyzed.behavioral.early_signals == ()


def test_a_pair_with_a_designated_market_maker_is_not_watched_unless_the_rules_say_so() -> None:
    from riskengine.core import AccountType, Rules

    ref = reference(profile("u-a"), profile("u-mm", account_type=AccountType.MARKET_MAKER), profile("u-b"))
    assert pair_key(ref, leg(0, "u-a", "u-mm", 1.0), DEFAULT_RULES) is None
    assert pair_key(ref, leg(0, "u-a", "u-b", 1.0), DEFAULT_RULES) is not None
    watched = Rules.from_parameters(1, {"market.maker.exempt": "WASH_TRADING"})
    assert pair_key(ref, leg(0, "u-a", "u-mm", 1.0), watched) is not None
