"""Builders shared by the core tests."""

from __future__ import annotations

import itertools
import uuid

from riskengine.core import (
    DEFAULT_RULES,
    Evaluation,
    OrderEvent,
    OrderEventType,
    ReferenceData,
    RiskAlert,
    Rules,
    Side,
    Trade,
    UserProfile,
    UserState,
    evaluate_order,
    evaluate_trade,
)

T0 = 1_768_467_600_000  # 2026-01-15T09:00:00Z
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_ids = itertools.count(1)


def trade(
    at: int,
    side: str = "BUY",
    notional: float = 1_000.0,
    *,
    symbol: str = "ADA/USDT",
    quantity: float | None = None,
    user: str = "u-1",
    customer: str | None = None,
    counterparty: str | None = None,
    trade_id: str | None = None,
    order_type: str = "LIMIT",
) -> Trade:
    """A trade at ``T0 + at`` ms; give ``quantity`` to fix it (price = notional / quantity), else price 1."""
    if quantity is None:
        quantity, price = notional, 1.0
    else:
        price = notional / quantity
    return Trade(
        trade_id=trade_id or str(uuid.UUID(int=next(_ids))),
        user_id=user,
        customer_id=customer or f"c-{user}",
        symbol=symbol,
        side=Side(side),
        quantity=quantity,
        price=price,
        notional=quantity * price,
        timestamp=T0 + at,
        exchange="TEST",
        order_type=order_type,
        counterparty_user_id=counterparty,
    )


def profile(user: str = "u-1", tier: int = 3, country: str = "DE", **extra: object) -> UserProfile:
    """An institutional (tier 3) profile by default: KYC limits far above the test notionals."""
    return UserProfile(user_id=user, customer_id=f"c-{user}", kyc_tier=tier, country=country, **extra)  # type: ignore[arg-type]


def reference(*profiles: UserProfile, **extra: object) -> ReferenceData:
    """Reference data with the given profiles, or one tier-3 profile for u-1."""
    chosen = profiles or (profile(),)
    return ReferenceData(profiles={p.user_id: p for p in chosen}, **extra)  # type: ignore[arg-type]


REFERENCE = reference()


def run(
    trades: list[Trade],
    rules: Rules = DEFAULT_RULES,
    ref: ReferenceData = REFERENCE,
    state: UserState | None = None,
) -> list[Evaluation]:
    """Evaluate trades of one user in the given order."""
    state = state or UserState()
    results = []
    for item in trades:
        result = evaluate_trade(state, item, ref, rules)
        state = result.state
        results.append(result)
    return results


def patterns_of(results: list[Evaluation]) -> list[set[str]]:
    """The triggered patterns of each trade, as names."""
    return [{p.value for p in r.analyzed.triggered_patterns} for r in results]


def alerts_of(results: list[Evaluation], pattern: str | None = None) -> list[RiskAlert]:
    """Every alert raised, optionally of one pattern."""
    return [a for r in results for a in r.alerts if pattern is None or a.pattern.value == pattern]


_event_ids = itertools.count(1)


def order(
    at: int,
    kind: str,
    order_id: str,
    side: str = "BUY",
    quantity: float = 100.0,
    *,
    price: float = 1.0,
    remaining: float | None = None,
    user: str = "u-1",
    symbol: str = "ADA/USDT",
    event_id: str | None = None,
) -> OrderEvent:
    """An order event at ``T0 + at`` ms; ``remaining`` defaults to the quantity (0 for FILLED)."""
    if remaining is None:
        remaining = 0.0 if kind == "FILLED" else quantity
    return OrderEvent(
        event_id=event_id or f"e-{next(_event_ids)}",
        order_id=order_id,
        user_id=user,
        symbol=symbol,
        side=Side(side),
        event_type=OrderEventType(kind),
        price=price,
        quantity=quantity,
        remaining_quantity=remaining,
        timestamp=T0 + at,
        exchange="TEST",
    )


def run_flow(
    events: list[Trade | OrderEvent],
    rules: Rules = DEFAULT_RULES,
    ref: ReferenceData = REFERENCE,
    state: UserState | None = None,
) -> tuple[UserState, list[RiskAlert], list[str | None]]:
    """Apply one user's trades and order events in the given order: state, alerts, order issues."""
    state = state or UserState()
    alerts: list[RiskAlert] = []
    issues: list[str | None] = []
    for item in events:
        if isinstance(item, Trade):
            result = evaluate_trade(state, item, ref, rules)
            state = result.state
            alerts.extend(result.alerts)
        else:
            outcome = evaluate_order(state, item, ref, rules)
            state = outcome.state
            alerts.extend(outcome.alerts)
            issues.append(outcome.issue)
    return state, alerts, issues


_BOOK_SYMBOLS = ("ADA/USDT", "BTC/USDT", "ETH/USDT")


def _book_event(
    number: int,
    after: int,
    kind: str,
    quantity: float | None = None,
    price: float | None = None,
    remaining: float | None = None,
) -> OrderEvent:
    """An event of order ``o-<number>`` of :func:`order_flow_state`, ``after`` ms past its placement."""
    return order(
        number * 700 + after,
        kind,
        f"o-{number:03d}",
        "SELL" if number % 2 else "BUY",
        10.0 + number % 7 if quantity is None else quantity,
        price=1.0 + number / 100 if price is None else price,
        remaining=remaining,
        symbol=_BOOK_SYMBOLS[number % 3],
        event_id=f"{kind[0].lower()}-{number:03d}",
    )


def order_flow_state() -> UserState:
    """A market maker's state with every part of the order book in use, the same on every call:
    resting, amended, partly filled, filled and cancelled orders over three symbols and both sides,
    size history, quote cycles, an inconsistent event, and trades with counterparties."""
    events: list[Trade | OrderEvent] = []
    for number in range(60):
        events.append(_book_event(number, 0, "PLACED"))
        if number % 5 == 1:
            events.append(_book_event(number, 300, "CANCELLED"))
        elif number % 5 == 2:
            events.append(_book_event(number, 200, "AMENDED", 12.0, 1.5))
            events.append(_book_event(number, 400, "FILLED", 12.0, 1.5, remaining=5.0))
        elif number % 5 == 3:
            events.append(_book_event(number, 100, "FILLED"))
        if number % 10 == 4:
            side = "SELL" if number % 2 else "BUY"
            symbol = _BOOK_SYMBOLS[number % 3]
            counterparty = f"u-{number % 3 + 2}"
            events.append(
                trade(
                    number * 700 + 500,
                    side,
                    800.0 + number,
                    symbol=symbol,
                    quantity=3.0,
                    counterparty=counterparty,
                    trade_id=f"t-{number:03d}",
                )
            )
    events.append(order(50_000, "CANCELLED", "o-unknown", event_id="c-unknown"))
    state, _alerts, _issues = run_flow(events)
    return state
