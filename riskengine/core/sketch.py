"""A small quantile sketch of a user's recent notionals, for percentile ranks.

Notionals fall into log-spaced bins, four per power of two (each bin spans ~19 %, so a rank is
exact up to the width of the trade's own bin). Bin 0 takes everything below 2^-7 (~0.008) and the
last bin everything from ~1.2e10 up. A rank is ``(count below the bin + half the bin's count) /
total``, computed with one C-level ``sum`` over a slice, not a sort.

"Recent" history: when the total reaches :data:`DECAY_AT`, every count is halved (rounding down),
so old trades fade out geometrically and the counts always fit in 16 bits; the sketch is bounded at
:data:`BINS` counters whatever the number of trades. The counters are an ``array('H')``, not a list:
one sketch per user would otherwise hand the garbage collector 164 references to walk per user on
every full collection (a worker with 10,000 users paused for hundreds of milliseconds).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from math import floor, log2

#: Bins per power of two.
BINS_PER_OCTAVE = 4
#: log2 of the lower edge of bin 1 (notionals below 2^-7 share bin 0).
LOWEST_OCTAVE = -7
BINS = 4 * 41
#: Total count at which all counts are halved.
DECAY_AT = 1024

_OFFSET = -LOWEST_OCTAVE * BINS_PER_OCTAVE + 1
_LAST = BINS - 1
_ZEROS = bytes(2 * BINS)


def bin_of(notional: float) -> int:
    """The bin of a positive notional."""
    index = floor(log2(notional) * BINS_PER_OCTAVE) + _OFFSET
    if index < 0:
        return 0
    return index if index < _LAST else _LAST


class QuantileSketch:
    """Counts of notionals per log bin, with halving decay. ``total`` is the sum of ``counts``.

    ``low`` and ``high`` are the lowest and highest non-empty bins, so a rank sums only the
    occupied span (a user's notionals usually cover a dozen bins of the 164).
    """

    __slots__ = ("counts", "high", "low", "total")

    def __init__(self, counts: Sequence[int] | None = None) -> None:
        if counts is None:
            self.counts = array("H", _ZEROS)
            self.total = 0
            self.low = BINS
            self.high = -1
        else:
            self.counts = array("H", counts)
            self._bounds()

    def _bounds(self) -> None:
        counts = self.counts
        self.total = sum(counts)
        occupied = [index for index, count in enumerate(counts) if count]
        self.low = occupied[0] if occupied else BINS
        self.high = occupied[-1] if occupied else -1

    def _rank(self, index: int) -> float:
        total = self.total
        if not total:
            return 0.5
        if index > self.high:
            return 1.0
        low = self.low
        if index < low:
            return 0.0
        counts = self.counts
        return (sum(counts[low:index]) + 0.5 * counts[index]) / total

    def rank(self, notional: float) -> float:
        """Fraction of recorded notionals below ``notional``, half its own bin counting; 0.5 if empty."""
        return self._rank(bin_of(notional))

    def rank_and_add(self, notional: float) -> float:
        """:meth:`rank` of the notional, then :meth:`add` it (one bin computation, inlined: hot path)."""
        index = floor(log2(notional) * BINS_PER_OCTAVE) + _OFFSET
        if index < 0:
            index = 0
        elif index > _LAST:
            index = _LAST
        total = self.total
        counts = self.counts
        low = self.low
        high = self.high
        if not total:
            rank = 0.5
        elif index > high:
            rank = 1.0
        elif index < low:
            rank = 0.0
        else:
            rank = (sum(counts[low:index]) + 0.5 * counts[index]) / total
        if total >= DECAY_AT:
            self._add(index)
            return rank
        counts[index] += 1
        self.total = total + 1
        if index < low:
            self.low = index
        if index > high:
            self.high = index
        return rank

    def _add(self, index: int) -> None:
        # Halve every count first when the total has reached DECAY_AT.
        if self.total >= DECAY_AT:
            self.counts = array("H", [count >> 1 for count in self.counts])
            self._bounds()
        self.counts[index] += 1
        self.total += 1
        if index < self.low:
            self.low = index
        if index > self.high:
            self.high = index

    def span(self) -> tuple[int, Sequence[int]]:
        """(first bin, counts from the lowest to the highest non-empty bin), for compact encoding."""
        if self.high < 0:
            return 0, ()
        return self.low, self.counts[self.low : self.high + 1]

    @classmethod
    def from_span(cls, first: int, counts: Sequence[int]) -> QuantileSketch:
        """Rebuild from :meth:`span` output; ValueError when the span does not fit the bins."""
        if first < 0 or first + len(counts) > BINS or (counts and not (counts[0] and counts[-1])):
            raise ValueError(f"sketch span of {len(counts)} bins from {first} is not valid")
        sketch = cls()
        if counts:
            sketch.counts[first : first + len(counts)] = array("H", counts)
            sketch.total = sum(counts)
            sketch.low = first
            sketch.high = first + len(counts) - 1
        return sketch

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantileSketch) and other.counts == self.counts

    __hash__ = None  # type: ignore[assignment]
