"""The per-user state table: one RocksDB value per userId, wrapped in a versioned envelope.

A table value is an *envelope* around the core's encoded :class:`~riskengine.core.UserState`:

- byte 0: the envelope's magic, its format version: :data:`ENVELOPE_MAGIC` (0xE2, version 2). The
  core's own ``encode_state`` bytes start with its ``FORMAT_VERSION`` (a small number), so a bare
  core state, the layout before envelopes existed, reads as an envelope without offsets or pending
  outputs; a version 1 envelope (0xE1, trades only) reads with no order event applied. Those are
  the migration paths (see :func:`decode_envelope`). The core state inside migrates through
  ``riskengine.core.MIGRATIONS`` when ``decode_state`` reads it.
- the source partition, and the offset of the last event applied to this state from each source
  (:data:`TRADES`, :data:`ORDERS`; -1: none);
- the *pending outputs*: for recently applied events whose outputs may not have reached the broker
  yet, the exact encoded bytes of their analyzed trade and alerts, by source and offset (see
  :mod:`riskengine.worker.commit` for why);
- the core's encoded state.

Next to the users' envelopes, each partition holds an *output journal* under
:data:`JOURNAL_KEY` (a key no userId can be: userIds have no surrounding spaces): the highest
offsets the partition's owner applied and the outputs not yet known to be delivered
(:class:`OutputJournal`). A changed user's envelope is written at most once per checkpoint interval,
the journal with every batch that sends outputs while a state is unwritten; see
:mod:`riskengine.worker.agents.user_agent` for how a re-delivery uses it.

The agent writes the table's RocksDB store (through :class:`UserStateTable`) and its changelog
topic itself, in batches (see :mod:`riskengine.worker.commit`); the records have the layout Faust's
own changelog writes have (raw key and value), so Faust's recovery and standby replicas read them
unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
import rocksdict
from faust.types import TP

from riskengine.core import FORMAT_VERSION
from riskengine.errors import WorkerError
from riskengine.settings import Settings
from riskengine.worker.faust_compat import held_partitions, partition_db

#: First byte of an envelope, by envelope version. Never a valid core FORMAT_VERSION.
ENVELOPE_MAGIC_V1 = 0xE1
ENVELOPE_MAGIC = 0xE2
#: The envelope format version, recorded in snapshot manifests (riskengine.worker.snapshots).
TABLE_FORMAT = 2
#: Most pending outputs kept per user (a hard bound; normally pruned to the undelivered ones).
MAX_PENDING = 64
#: Output kinds inside a pending entry (MARKET and PAIR: a framed key and value for the
#: repartition topics, see riskengine.worker.repartition).
ANALYZED = 0
ALERT = 1
MARKET = 2
PAIR = 3
#: Sources: the input topics whose events change a user's state, by index in the envelope.
TRADES = 0
ORDERS = 1
SOURCES = (TRADES, ORDERS)

TABLE_NAME = "user-state"

#: First byte of a partition's output journal.
JOURNAL_MAGIC = 0xE3
#: The output journal's key in every partition of the user table.
JOURNAL_KEY = b" output-journal"

_HEAD = struct.Struct("<BiqqH")  # magic, partition, trades offset, orders offset, pending count
_ENTRY = struct.Struct("<BqH")  # source, offset, outputs
_OUTPUT = struct.Struct("<BI")  # kind, length
_HEAD_V1 = struct.Struct("<BiqH")  # magic, partition, offset (trades), pending count
_ENTRY_V1 = struct.Struct("<qH")  # offset, outputs
_JOURNAL_HEAD = struct.Struct("<BiqqI")  # magic, partition, trades offset, orders offset, entries
_JOURNAL_ENTRY = struct.Struct("<BqIH")  # source, offset, key length, outputs

assert min(ENVELOPE_MAGIC_V1, ENVELOPE_MAGIC, JOURNAL_MAGIC) > FORMAT_VERSION, "a magic must not be a state"


class PartitionNotHeld(WorkerError):
    """A state table partition this worker does not hold (any more) was read or written."""


class EnvelopeError(WorkerError, ValueError):
    """A table value is neither an envelope nor a bare core state."""


@dataclass(frozen=True)
class Pending:
    """The encoded outputs of one applied event, by its source and offset."""

    source: int
    offset: int
    outputs: tuple[tuple[int, bytes], ...]


class AppliedEvents:
    """What a table value says about the events its state holds (an envelope, or its cached form)."""

    __slots__ = ()
    #: the input partition ``offsets`` belong to (-1: a bare core state of an older layout)
    partition: int
    #: source index -> offset of the last event of that source applied (-1: none)
    offsets: tuple[int, int]
    #: the outputs of applied events not yet known to be delivered
    pending: tuple[Pending, ...]

    def applied(self, source: int, partition: int, offset: int) -> bool:
        """True if the event at ``source``'s ``partition``/``offset`` is already part of this state."""
        return self.partition == partition and offset <= self.offsets[source]

    def pending_for(self, source: int, offset: int) -> Pending | None:
        """The stored outputs of the event at ``source``'s ``offset``, if still kept."""
        for entry in self.pending:
            if entry.offset == offset and entry.source == source:
                return entry
        return None


@dataclass(frozen=True)
class Envelope(AppliedEvents):
    """A decoded table value: last applied offset per source, pending outputs, core state bytes."""

    partition: int
    offsets: tuple[int, int]
    state: bytes
    pending: tuple[Pending, ...] = field(default=())


def encode_envelope(envelope: Envelope) -> bytes:
    """The table value for ``envelope``."""
    trades, orders = envelope.offsets
    parts = [_HEAD.pack(ENVELOPE_MAGIC, envelope.partition, trades, orders, len(envelope.pending))]
    for entry in envelope.pending:
        parts.append(_ENTRY.pack(entry.source, entry.offset, len(entry.outputs)))
        for kind, data in entry.outputs:
            parts.append(_OUTPUT.pack(kind, len(data)))
            parts.append(data)
    parts.append(envelope.state)
    return b"".join(parts)


def decode_envelope(data: bytes) -> Envelope:
    """Read a table value of this or an older layout (see the module docstring for the migrations)."""
    if not data:
        raise EnvelopeError("empty table value")
    magic = data[0]
    if magic not in (ENVELOPE_MAGIC, ENVELOPE_MAGIC_V1):
        if magic <= FORMAT_VERSION:
            return Envelope(-1, (-1, -1), data)
        raise EnvelopeError(f"unknown table value format {magic:#x}")
    try:
        if magic == ENVELOPE_MAGIC:
            _magic, partition, trades, orders, count = _HEAD.unpack_from(data)
            position = _HEAD.size
        else:
            _magic, partition, trades, count = _HEAD_V1.unpack_from(data)
            orders = -1
            position = _HEAD_V1.size
        pending = []
        for _ in range(count):
            if magic == ENVELOPE_MAGIC:
                source, entry_offset, outputs = _ENTRY.unpack_from(data, position)
                position += _ENTRY.size
                if source not in SOURCES:
                    raise EnvelopeError(f"unknown source {source} in a pending entry")
            else:
                source = TRADES
                entry_offset, outputs = _ENTRY_V1.unpack_from(data, position)
                position += _ENTRY_V1.size
            items, position = _read_outputs(data, position, outputs)
            pending.append(Pending(source, entry_offset, items))
    except struct.error as exc:
        raise EnvelopeError(f"truncated envelope: {exc}") from exc
    return Envelope(partition, (trades, orders), data[position:], tuple(pending))


def _read_outputs(data: bytes, position: int, count: int) -> tuple[tuple[tuple[int, bytes], ...], int]:
    """``count`` (kind, bytes) outputs from ``position``, and the position after them."""
    items = []
    for _ in range(count):
        kind, length = _OUTPUT.unpack_from(data, position)
        position += _OUTPUT.size
        if position + length > len(data):
            raise EnvelopeError("truncated output")
        items.append((kind, data[position : position + length]))
        position += length
    return tuple(items), position


def with_pending(
    previous: tuple[Pending, ...], entry: Pending | None, undelivered: tuple[int | None, int | None]
) -> tuple[Pending, ...]:
    """``previous`` plus ``entry`` (if any), without delivered entries, at most MAX_PENDING.

    ``undelivered`` is, per source, the lowest offset whose outputs may not have been acknowledged
    yet (None: unknown, keep all). Outputs below it reached the broker, so they are never sent again.
    """
    for pending in previous:
        limit = undelivered[pending.source]
        if limit is not None and pending.offset < limit:
            break
    else:
        # Nothing to drop (what almost every event finds): no list, and no copy without an entry.
        added = previous if entry is None else (*previous, entry)
        return added if len(added) <= MAX_PENDING else added[-MAX_PENDING:]
    kept = [p for p in previous if undelivered[p.source] is None or p.offset >= (undelivered[p.source] or 0)]
    if entry is not None:
        kept.append(entry)
    return tuple(kept[-MAX_PENDING:])


@dataclass
class OutputJournal:
    """How far one partition's events were applied, and their outputs not yet known to be delivered.

    A user's envelope is not rewritten after every batch (its state is most of the bytes a batch
    writes) but at most once per checkpoint interval: the journal records meanwhile, per source, the
    highest offset applied, and the exact bytes of the outputs not yet known to be delivered, with
    their user's key. An event at or below a source's journal offset but past its user's envelope
    offset had its outputs sent (or about to be) from a state that never became durable: it is
    applied again, and its outputs are the journal's bytes (none when pruned as delivered), never
    new ones. An event at or below its user's envelope offset is in the state: the envelope is
    consulted first, so a journal behind the envelopes (written before they were) is harmless.
    """

    partition: int
    #: source index -> highest offset applied (-1: none)
    offsets: list[int] = field(default_factory=lambda: [-1, -1])
    #: (source, offset) -> (the user's key, the event's encoded outputs), in application order
    entries: dict[tuple[int, int], tuple[bytes, tuple[tuple[int, bytes], ...]]] = field(default_factory=dict)

    def covers(self, source: int, offset: int) -> bool:
        """True if the event at ``source``'s ``offset`` was applied (by this or an earlier owner)."""
        return offset <= self.offsets[source]

    def record(self, source: int, offset: int, key: bytes, outputs: tuple[tuple[int, bytes], ...]) -> None:
        """The event at ``source``'s ``offset`` was applied, with ``outputs`` (may be empty)."""
        if offset > self.offsets[source]:
            self.offsets[source] = offset
        if outputs:
            self.entries[(source, offset)] = (key, outputs)

    def prune(self, undelivered: tuple[int | None, int | None], unwritten: Container[bytes]) -> None:
        """Drop the entries below ``undelivered`` (per source, as for :func:`with_pending`) and those
        of users not ``unwritten``: their states hold the events, their envelopes the outputs."""
        self.entries = {
            where: entry
            for where, entry in self.entries.items()
            if entry[0] in unwritten and ((bound := undelivered[where[0]]) is None or where[1] >= bound)
        }


def encode_journal(journal: OutputJournal) -> bytes:
    """The table value for ``journal``."""
    trades, orders = journal.offsets
    parts = [_JOURNAL_HEAD.pack(JOURNAL_MAGIC, journal.partition, trades, orders, len(journal.entries))]
    for (source, offset), (key, outputs) in journal.entries.items():
        parts.append(_JOURNAL_ENTRY.pack(source, offset, len(key), len(outputs)))
        parts.append(key)
        for kind, data in outputs:
            parts.append(_OUTPUT.pack(kind, len(data)))
            parts.append(data)
    return b"".join(parts)


def decode_journal(data: bytes) -> OutputJournal:
    """Read a journal value; :class:`EnvelopeError` when it is not one."""
    if not data or data[0] != JOURNAL_MAGIC:
        raise EnvelopeError("not an output journal")
    try:
        _magic, partition, trades, orders, count = _JOURNAL_HEAD.unpack_from(data)
        position = _JOURNAL_HEAD.size
        journal = OutputJournal(partition, [trades, orders])
        for _ in range(count):
            source, offset, key_length, outputs = _JOURNAL_ENTRY.unpack_from(data, position)
            position += _JOURNAL_ENTRY.size
            if source not in SOURCES:
                raise EnvelopeError(f"unknown source {source} in a journal entry")
            if position + key_length > len(data):
                raise EnvelopeError("truncated journal key")
            key = data[position : position + key_length]
            position += key_length
            items, position = _read_outputs(data, position, outputs)
            journal.entries[(source, offset)] = (key, items)
    except struct.error as exc:
        raise EnvelopeError(f"truncated journal: {exc}") from exc
    if position != len(data):
        raise EnvelopeError("trailing bytes after the journal")
    return journal


def rocksdb_options(settings: Settings) -> dict[str, Any]:
    """Small RocksDB options: Faust's defaults are a 2 GiB cache and 3 x 64 MiB memtables per partition."""
    return {
        "driver": "rocksdict",
        "write_buffer_size": settings.worker_rocksdb_write_buffer_size,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.worker_rocksdb_block_cache_size,
    }


class StateTable:
    """A state table: Faust's table (changelog, recovery, standbys) and batched access.

    Declared on the app at construction. Faust's own store API writes one key per call and needs a
    current event; the agents instead read by key and write one :class:`rocksdict.WriteBatch` per
    partition per batch (one WAL append instead of one per event), through the partition databases
    :mod:`riskengine.worker.faust_compat` reaches. It is the
    :class:`~riskengine.worker.commit.StateWriter` of the commit protocol.
    """

    def __init__(self, app: faust.App, settings: Settings, name: str, description: str) -> None:
        self.table: faust.Table[bytes, bytes] = faust.Table(
            app,
            name=name,
            beacon=app.tables.beacon,
            partitions=settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            help=description,
            options=rocksdb_options(settings),
        )
        app.tables.add(self.table)

    @property
    def changelog_topic(self) -> str:
        """The name of the table's changelog topic."""
        name: str = self.table.changelog_topic.get_topic_name()
        return name

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The stored value of ``key`` in ``partition``; :class:`PartitionNotHeld` if not held here."""
        value: bytes | None = self._held_db(partition).get(key)
        return value

    def write(self, values: Mapping[tuple[int, bytes], bytes]) -> None:
        """Write ``(partition, key) -> value``, one atomic write per partition; :class:`PartitionNotHeld`
        (before anything is written) when a partition is not held here."""
        batches: dict[int, rocksdict.WriteBatch] = {}
        for (partition, key), value in values.items():
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
            batch.put(key, value)
        dbs = {partition: self._held_db(partition) for partition in batches}
        for partition, batch in batches.items():
            dbs[partition].write(batch)

    def _held_db(self, partition: int) -> Any:
        # Faust's own accessor would open a revoked partition's database again (and write into a
        # copy nobody recovers from): only a held one is used.
        if partition not in held_partitions(self.table):
            raise PartitionNotHeld(f"{self.table.name} partition {partition} is not held by this worker")
        return partition_db(self.table, partition)

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        """Record ``offset`` as the last changelog record applied to ``partition`` (Faust's own key)."""
        self._held_db(partition)  # Faust's setter opens a revoked partition's database again
        self.table.data.set_persisted_offset(TP(self.changelog_topic, partition), offset)


class UserStateTable(StateTable):
    """The per-user state table (envelopes around :class:`riskengine.core.UserState`)."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        super().__init__(
            app, settings, TABLE_NAME, "per-user detection state (envelope around riskengine.core.UserState)"
        )


#: The per-symbol market table (riskengine.core.market.MarketState) and the per-owner-pair table.
MARKET_TABLE_NAME = "market-state"
PAIR_TABLE_NAME = "pair-state"
