"""One execution, two trade records: how the market side counts an execution once.

A venue reports an execution once per side: two trade records with opposite sides, each with its
own ``tradeId`` and the other account as ``counterpartyUserId``, at the same time, price and
quantity. The records of one execution share an *execution key*: (time, price, quantity, buyer,
seller), where the buyer is the record's account on a BUY and its counterparty on a SELL. A record
without a counterparty is an execution of its own.

:class:`ExecutionLedger` counts, per key, the records seen from each side. A record is a *new*
execution when its side now has more records under the key than the other side: the first record
of an execution (whichever side) is new, the second is its twin. Two identical executions between
the same accounts at the same millisecond (four records) count twice. Records reach the ledger in
event-time order (see :mod:`riskengine.core.market`), so it keeps only the keys of the latest
event time.
"""

from __future__ import annotations

from typing import Any

from .models import Side, Trade

ExecutionKey = tuple[Any, ...]


def execution_key(trade: Trade) -> ExecutionKey:
    """The key both records of ``trade``'s execution share (see the module docstring)."""
    other = trade.counterparty_user_id
    if other is None:
        return (trade.trade_id,)
    if trade.side is Side.BUY:
        return (trade.timestamp, trade.price, trade.quantity, trade.user_id, other)
    return (trade.timestamp, trade.price, trade.quantity, other, trade.user_id)


def buyer_and_seller(trade: Trade) -> tuple[str | None, str | None]:
    """The buying and the selling account of ``trade``'s execution (None: not known)."""
    if trade.side is Side.BUY:
        return trade.user_id, trade.counterparty_user_id
    return trade.counterparty_user_id, trade.user_id


class ExecutionLedger:
    """Records per execution key and side at the latest event time; see the module docstring."""

    __slots__ = ("counts", "timestamp")

    def __init__(self, timestamp: int = -1, counts: dict[ExecutionKey, list[int]] | None = None) -> None:
        self.timestamp = timestamp
        #: key -> [BUY records, SELL records]
        self.counts: dict[ExecutionKey, list[int]] = counts if counts is not None else {}

    def add(self, trade: Trade) -> bool:
        """Count ``trade``'s record; True if it is a new execution, False if it is a twin."""
        if trade.timestamp != self.timestamp:
            self.timestamp = trade.timestamp
            self.counts = {}
        key = execution_key(trade)
        sides = self.counts.get(key)
        if sides is None:
            sides = self.counts[key] = [0, 0]
        mine = 0 if trade.side is Side.BUY else 1
        sides[mine] += 1
        return sides[mine] > sides[1 - mine]

    def to_json(self) -> list[Any]:
        """A JSON-able form (for the state encodings)."""
        return [self.timestamp, [[list(key), sides] for key, sides in self.counts.items()]]

    @classmethod
    def from_json(cls, data: list[Any]) -> ExecutionLedger:
        """Read :meth:`to_json`'s form."""
        timestamp, rows = data
        return cls(int(timestamp), {tuple(key): [int(b), int(s)] for key, (b, s) in rows})
