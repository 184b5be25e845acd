"""Price paths, sizes and the population."""

import itertools
import math
import random
import statistics
from collections import Counter

import pytest

from riskengine.core import ReferenceData, parse_profile
from riskengine.core.models import AccountType
from riskengine.producer.market import SYMBOL_CATALOG, Market, heavy_tailed
from riskengine.producer.population import (
    SANCTIONED_COUNTRIES,
    PopulationError,
    Role,
    build_population,
    reference_document,
    role_counts,
)
from riskengine.producer.simulator import EXCHANGES

START = 1_767_225_600_000


def test_price_paths_are_seeded_positive_and_move_with_their_own_volatility():
    def path(seed: int) -> list[tuple[float, float]]:
        market = Market(("BTC/USDT", "DOGE/USDT"), START, random.Random(seed))
        return [
            (market.mid("BTC/USDT", START + s * 60_000), market.mid("DOGE/USDT", START + s * 60_000))
            for s in range(1, 1441)
        ]

    first = path(1)
    assert first == path(1) and first != path(2)
    for column, symbol in enumerate(("BTC/USDT", "DOGE/USDT")):
        prices = [p[column] for p in first]
        assert all(p > 0 for p in prices)
        returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
        daily = statistics.pstdev(returns) * math.sqrt(len(returns))
        assert daily == pytest.approx(SYMBOL_CATALOG[symbol].daily_volatility, rel=0.2)


def test_an_overlay_moves_the_price_and_settling_keeps_its_level():
    market = Market(("ADA/USDT",), START, random.Random(3))
    before = market.mid("ADA/USDT", START)
    market.set_overlay("ADA/USDT", lambda now: 1.25)
    assert market.mid("ADA/USDT", START) == pytest.approx(1.25 * before)
    market.settle_overlay("ADA/USDT", START)
    assert not market.has_overlay("ADA/USDT")
    assert market.mid("ADA/USDT", START) == pytest.approx(1.25 * before)


@pytest.mark.parametrize("symbol", list(SYMBOL_CATALOG))
def test_quantities_are_lot_rounded_and_worth_about_the_notional(symbol):
    market = Market((symbol,), START, random.Random(1))
    price = market.mid(symbol, START)
    for notional in (10.0, 999.0, 123_456.0):
        quantity = market.quantity_for(symbol, notional, price)
        assert quantity > 0
        assert quantity * price == pytest.approx(notional, rel=0.01)


def test_trade_sizes_are_heavy_tailed():
    rng = random.Random(5)
    sizes = sorted(heavy_tailed(rng, 1_000.0) for _ in range(20_000))
    median, p999 = sizes[len(sizes) // 2], sizes[int(len(sizes) * 0.999)]
    assert 850 < median < 1_150
    # A log-normal body alone (sigma 0.9) has its 99.9th percentile at 16x the median.
    assert p999 > 20 * median
    assert sizes[-1] > 100 * median


def test_roles_ids_and_linked_accounts():
    population = build_population(1_000, tuple(SYMBOL_CATALOG), EXCHANGES, random.Random(1))
    counts = role_counts(1_000)
    assert {role: len(population.by_role[role]) for role in Role} == counts
    assert [u.user_id for u in population.users] == [f"U{n:06d}" for n in range(1, 1_001)]
    for user in population.by_role[Role.LINKED]:
        (partner,) = user.linked_accounts
        assert population.by_id[partner].customer_id == user.customer_id
        assert population.by_id[partner].linked_accounts == (user.user_id,)
    sanctioned = population.by_role[Role.SANCTIONED]
    assert any(u.sanctioned for u in sanctioned) and any(
        u.country in SANCTIONED_COUNTRIES for u in sanctioned
    )
    for user in population.users:
        assert (user.role is Role.SANCTIONED) == (user.sanctioned or user.country in SANCTIONED_COUNTRIES)
    assert {u.kyc_tier for u in population.by_role[Role.RETAIL]} == {0, 1, 2}


def test_too_few_users_is_an_error_naming_the_minimum():
    with pytest.raises(PopulationError, match="at least 46 users"):
        role_counts(45)


def test_every_role_has_its_account_type_and_bad_actors_look_ordinary():
    population = build_population(2_000, tuple(SYMBOL_CATALOG), EXCHANGES, random.Random(4))
    types = {role: Counter(u.account_type for u in population.by_role[role]) for role in Role}
    assert set(types[Role.MARKET_MAKER]) == {"MARKET_MAKER"}
    assert set(types[Role.HFT]) == set(types[Role.ARBITRAGE]) == {"PROFESSIONAL"}
    assert set(types[Role.EXECUTION]) == set(types[Role.WHALE]) == {"INSTITUTIONAL"}
    assert set(types[Role.DCA]) == {"RETAIL"}
    assert set(types[Role.RETAIL]) == {"RETAIL", None}
    undesignated = types[Role.RETAIL][None] / sum(types[Role.RETAIL].values())
    assert 0.25 <= undesignated <= 0.35
    for role in (Role.ABUSER, Role.LINKED, Role.TIER0, Role.SANCTIONED):
        assert set(types[role]) <= {"RETAIL", "PROFESSIONAL", None}, role
    for user in population.users:
        profile = user.profile(START)
        assert profile["accountType"] == user.account_type
        assert parse_profile(profile).account_type == (
            None if user.account_type is None else AccountType(user.account_type)
        )
    dca = population.by_role[Role.DCA]
    assert all(u.interval_ms >= 15 * 60_000 and u.symbols[0].split("/")[0] in ("BTC", "ETH") for u in dca)


def test_the_reference_document_loads_into_the_cores_reference_data():
    population = build_population(100, ("BTC/USDT",), EXCHANGES, random.Random(1))
    reference = ReferenceData.from_document(reference_document(population, START))
    assert len(reference.profiles) == 100
    assert reference.sanctioned_countries == SANCTIONED_COUNTRIES
    flagged = [u for u in population.users if u.sanctioned]
    assert flagged and all(reference.is_sanctioned(u.user_id) for u in flagged)
