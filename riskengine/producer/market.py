"""The simulated market: per-symbol price paths, lot and tick sizes, heavy-tailed trade sizes.

Every price is a driftless geometric random walk in *simulated* time with its own daily
volatility, advanced lazily whenever a price is asked for: the step over ``dt`` seconds is
``exp(sigma * sqrt(dt) * Z - sigma^2 * dt / 2)``, so the distribution does not depend on how often
prices are read. A scenario can lay a multiplicative overlay on one symbol (the pump-and-dump's
rise and fall); everyone trading that symbol then sees it. Nothing here reads a clock: callers
pass the simulated time in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A tradable pair: its starting price, daily volatility and share of the venue's trades."""

    symbol: str
    start_price: float
    daily_volatility: float
    weight: float


#: The venue's listings. Volatilities are typical daily moves; weights shape where flow goes.
SYMBOL_CATALOG: dict[str, SymbolSpec] = {
    spec.symbol: spec
    for spec in (
        SymbolSpec("BTC/USDT", 60_000.0, 0.030, 0.30),
        SymbolSpec("ETH/USDT", 3_000.0, 0.040, 0.20),
        SymbolSpec("SOL/USDT", 150.0, 0.060, 0.10),
        SymbolSpec("ADA/USDT", 0.45, 0.050, 0.06),
        SymbolSpec("XRP/USDT", 0.60, 0.050, 0.06),
        SymbolSpec("DOGE/USDT", 0.15, 0.070, 0.05),
        SymbolSpec("BNB/USDT", 580.0, 0.035, 0.05),
        SymbolSpec("AVAX/USDT", 35.0, 0.060, 0.04),
        SymbolSpec("LINK/USDT", 15.0, 0.055, 0.04),
        SymbolSpec("DOT/USDT", 7.0, 0.050, 0.03),
        SymbolSpec("LTC/USDT", 80.0, 0.040, 0.03),
        SymbolSpec("TRX/USDT", 0.12, 0.035, 0.02),
        SymbolSpec("MATIC/USDT", 0.80, 0.060, 0.01),
        SymbolSpec("SHIB/USDT", 0.000025, 0.080, 0.01),
    )
}

DEFAULT_SYMBOLS: tuple[str, ...] = tuple(SYMBOL_CATALOG)


def _decimals_for(value: float) -> int:
    """Decimal places that keep about six significant digits of ``value`` (at least 0)."""
    return max(0, 5 - math.floor(math.log10(value)))


@dataclass
class _PricePath:
    spec: SymbolSpec
    sigma: float  # per sqrt(second)
    price: float
    updated_ms: int
    price_decimals: int
    quantity_decimals: int
    overlay: Callable[[int], float] | None = None


class Market:
    """Mid prices of the configured symbols in simulated time, plus quantity and price rounding."""

    def __init__(self, symbols: Iterable[str], start_ms: int, rng: random.Random) -> None:
        self._rng = rng
        self._paths: dict[str, _PricePath] = {}
        for name in symbols:
            spec = SYMBOL_CATALOG[name]
            # A lot is worth about $0.01-$0.10 at the start price: fine enough for any trade size.
            quantity_decimals = max(0, math.ceil(math.log10(spec.start_price / 0.05)))
            self._paths[name] = _PricePath(
                spec=spec,
                sigma=spec.daily_volatility / math.sqrt(DAY_SECONDS),
                price=spec.start_price,
                updated_ms=start_ms,
                price_decimals=_decimals_for(spec.start_price),
                quantity_decimals=quantity_decimals,
            )

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols this market quotes, in configuration order."""
        return tuple(self._paths)

    def mid(self, symbol: str, now_ms: int) -> float:
        """The mid price at ``now_ms`` (advances the walk; times must not go backwards)."""
        path = self._paths[symbol]
        elapsed = (now_ms - path.updated_ms) / 1000.0
        if elapsed > 0:
            shock = path.sigma * math.sqrt(elapsed) * self._rng.gauss(0.0, 1.0)
            path.price *= math.exp(shock - 0.5 * path.sigma * path.sigma * elapsed)
            path.updated_ms = now_ms
        factor = 1.0 if path.overlay is None else path.overlay(now_ms)
        return path.price * factor

    def set_overlay(self, symbol: str, overlay: Callable[[int], float]) -> None:
        """Multiply ``symbol``'s price by ``overlay(now_ms)`` until :meth:`settle_overlay`."""
        self._paths[symbol].overlay = overlay

    def settle_overlay(self, symbol: str, now_ms: int) -> None:
        """Fold the overlay's current factor into the walk and remove it (the level shift stays)."""
        path = self._paths[symbol]
        if path.overlay is not None:
            self.mid(symbol, now_ms)
            path.price *= path.overlay(now_ms)
            path.overlay = None

    def has_overlay(self, symbol: str) -> bool:
        """True while a scenario moves ``symbol``'s price."""
        return self._paths[symbol].overlay is not None

    def round_price(self, symbol: str, price: float) -> float:
        """``price`` on the symbol's tick (about six significant digits of the start price)."""
        return round(price, self._paths[symbol].price_decimals)

    def quantity_for(self, symbol: str, notional: float, price: float) -> float:
        """The lot-rounded base quantity worth about ``notional`` at ``price`` (at least one lot)."""
        decimals = self._paths[symbol].quantity_decimals
        lot = 10.0**-decimals
        return round(max(lot, notional / price), decimals)

    def round_quantity(self, symbol: str, quantity: float) -> float:
        """``quantity`` on the symbol's lot size (at least one lot)."""
        decimals = self._paths[symbol].quantity_decimals
        return round(max(10.0**-decimals, quantity), decimals)

    def floor_quantity(self, symbol: str, quantity: float) -> float:
        """``quantity`` rounded down to the lot size (0.0 below one lot)."""
        decimals = self._paths[symbol].quantity_decimals
        scale = 10.0**decimals
        return round(math.floor(quantity * scale + 1e-6) / scale, decimals)

    def sub_quantity(self, symbol: str, quantity: float, less: float) -> float:
        """``quantity - less`` on the lot grid (exact for lot multiples; never below 0)."""
        return max(0.0, round(quantity - less, self._paths[symbol].quantity_decimals))


def notional_of(quantity: float, price: float) -> float:
    """quantity x price, rounded to a millionth so the JSON stays short and stable."""
    return round(quantity * price, 6)


def heavy_tailed(rng: random.Random, median: float, sigma: float = 0.9, tail: float = 0.03) -> float:
    """A trade size around ``median``: log-normal body, and a Pareto (alpha 1.3) tail in ``tail`` of draws."""
    size = median * math.exp(sigma * rng.gauss(0.0, 1.0))
    if rng.random() < tail:
        size *= rng.paretovariate(1.3)
    return size
