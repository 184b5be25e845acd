"""Avro through a Confluent-compatible schema registry, in the Confluent wire format.

A message value is ``0x00`` (magic byte), the writer's schema id as a 4-byte big-endian integer,
then the Avro binary body. :class:`SchemaCatalog` registers the engine's contracts and keeps every
schema it will need in memory *before* consuming starts: encoding and decoding never call the
registry, so nothing blocks the event loop while processing. A message written with a schema id
the catalog has not seen raises :class:`UnknownSchemaId`; async callers may ``await
catalog.fetch(schema_id)`` and retry, or use :func:`fetch_schema`, which retries a registry that
gives no answer (:class:`RegistryUnavailable`: unreachable, timed out, 5xx) with backoff
(:data:`FETCH_RETRY_DELAYS_S`) and remembers only a definite "not found" (:class:`SchemaNotFound`,
HTTP 404), in a bounded set with expiry (:class:`NotFoundIds`), so a schema registered later is
found and a brief registry outage leaves nothing behind.

Decoding failures are typed (all subclasses of :class:`DecodeError`) and carry a reason meant for
the dead-letter headers.
"""

from __future__ import annotations

import asyncio
import io
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from riskengine.contracts.schema_files import expanded_schema, parsed_schema
from riskengine.contracts.topics import RECORD_TOPICS, compatibility, record_subjects
from riskengine.core import (
    InvalidOrderEvent,
    InvalidTrade,
    OrderEvent,
    RiskAnalyzedTrade,
    Trade,
    parse_order_event,
    parse_trade,
    read_order_event,
    read_trade,
)
from riskengine.core.analyzed_writer import analyzed_body
from riskengine.errors import ContractError, EventRejected, FatalError
from riskengine.settings import Settings

P = TypeVar("P")

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
#: Waits before the 2nd, 3rd and 4th request of one schema fetch when the registry gives no answer
#: (:class:`RegistryUnavailable`): 4 requests and 1.4 s of waiting at most, enough for a registry
#: restart's brief refusal without holding a batch for long. The wait is backpressure: the batch
#: that met the unknown id is held, not dead-lettered, while the registry may come back.
FETCH_RETRY_DELAYS_S: tuple[float, ...] = (0.2, 0.4, 0.8)
#: Wait before a refused compatibility update is checked and tried again (another worker starting
#: at the same moment was setting it).
COMPATIBILITY_RETRY_S = 0.5
#: Timeout of one fetch request (the client's 10 s would hold a batch 40 s against a hung registry).
FETCH_TIMEOUT_S = 2.0
#: Ids the registry answered 404 for are not asked for again during this many seconds (a poison
#: storm of one bogus id costs one request per id per period), then asked again: the id may have
#: been registered since.
NOT_FOUND_TTL_S = 300.0
#: At most this many "not found" ids are remembered (the oldest are forgotten first), so a storm
#: of random ids cannot grow the worker's memory.
NOT_FOUND_CAPACITY = 1024
_HEADER = struct.Struct(">bI")
# What fastavro raises on bytes that do not fit the schema (truncation, bad varints, bad UTF-8...).
_AVRO_READ_ERRORS = (
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    struct.error,
)


class DecodeError(ContractError, EventRejected, ValueError):
    """A message value could not be turned into a valid record. ``reason`` is short and stable."""

    reason = "decode-error"


class MalformedFrame(DecodeError):
    """The bytes are not in the Confluent wire format (too short or wrong magic byte)."""

    reason = "malformed-frame"


class UnknownSchemaId(DecodeError):
    """The writer's schema id is not in the catalog (and may not exist in the registry)."""

    reason = "unknown-schema-id"

    def __init__(self, schema_id: int, detail: str = "") -> None:
        super().__init__(
            f"schema id {schema_id} is not known to this worker" + (f": {detail}" if detail else "")
        )
        self.schema_id = schema_id


class UnreadableRecord(DecodeError):
    """The Avro body does not parse with the writer's schema, or cannot be resolved to the reader's."""

    reason = "unreadable-record"


class UnresolvableRecord(UnreadableRecord):
    """The body parses with the writer's schema but does not resolve to the reader's.

    ``record`` is what the writer wrote, so a validator can name the field at fault (an enum
    symbol this reader does not know, for instance).
    """

    def __init__(self, message: str, record: Any) -> None:
        super().__init__(message)
        self.record = record


class InvalidRecord(DecodeError):
    """The record is valid Avro but a field has a value the contract forbids."""

    reason = "invalid-record"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SchemaNotFound(UnknownSchemaId):
    """The registry answered the id with HTTP 404: a definite "not found" (until it is registered)."""


class UnsafeSchema(UnknownSchemaId):
    """The schema has an array whose items may take no bytes: a message claiming 2^60 of them would
    keep the decoder busy for hours (fastavro reads them one by one), so it is never cached."""

    reason = "unsafe-schema"


class RegistryError(ContractError, FatalError):
    """The registry refused or failed a request (unreachable, unauthorized, incompatible schema)."""


class RegistryUnavailable(RegistryError):
    """The registry gave no answer (unreachable, timed out, 5xx, 429, a body that is not JSON).

    Unlike its base (a refusal such as 401, which asking again does not change), worth retrying.
    """


@dataclass(frozen=True)
class _WriterSchema:
    parsed: Any
    # Resolution against the reader schema is only needed when the writer used another version.
    reader: Any | None


def registry_client(settings: Settings) -> AsyncSchemaRegistryClient:
    """A registry client with the configured URL and basic auth."""
    auth = None
    if settings.schema_registry_username:
        auth = httpx.BasicAuth(settings.schema_registry_username, settings.schema_registry_password.get())
    return AsyncSchemaRegistryClient(url=settings.schema_registry_url, auth=auth, timeout=httpx.Timeout(10.0))


def zero_width_arrays(schema: Any) -> list[str]:
    """The paths of the arrays in the parsed ``schema`` whose items may be encoded in no bytes.

    Such an item is ``null``, a ``fixed`` of size 0, or a record of such fields. Every other type
    takes at least one byte, so a claimed item count beyond the message's length ends the read at
    its end; a zero-width item does not, and a 2^60 count spins the decoder.
    """
    named: dict[str, Any] = {}
    found: list[str] = []

    def zero_width(node: Any, path: str, open_records: frozenset[str]) -> bool:
        if isinstance(node, str):
            if node == "null":
                return True
            if node in named and node not in open_records:
                return zero_width(named[node], path, open_records)
            return False  # a primitive of one byte or more, or a record that contains itself
        if isinstance(node, list):  # a union: its branch index takes a byte
            for branch in node:
                zero_width(branch, path, open_records)
            return False
        if not isinstance(node, dict):
            return False
        kind = node.get("type")
        if kind in ("record", "error"):
            name = str(node.get("name"))
            named[name] = node
            widths = [
                zero_width(f["type"], f"{path}.{f['name']}", open_records | {name}) for f in node["fields"]
            ]
            return all(widths)
        if kind in ("enum", "fixed"):
            named[str(node.get("name"))] = node
            return kind == "fixed" and node.get("size") == 0
        if kind == "array":
            if zero_width(node["items"], f"{path}[]", open_records):
                found.append(path or "(top level)")
            return False
        if kind == "map":
            zero_width(node["values"], f"{path}{{}}", open_records)
            return False
        return zero_width(kind, path, open_records)  # a primitive with attributes (logical types)

    zero_width(schema, "", frozenset())
    return found


class SchemaCache:
    """Schemas by registry id, and the version of each contract this process uses: no I/O.

    A process writes and reads contract ``name`` with the schema added with ``writes=name`` (by
    default the one in ``schemas/``); records written with any other cached version are resolved
    to it by Avro's schema-resolution rules.
    """

    def __init__(self) -> None:
        self._writer_ids: dict[str, int] = {}
        self._raw_by_id: dict[int, Any] = {}
        self._by_id: dict[tuple[int, str], _WriterSchema] = {}

    def add(self, schema_id: int, schema: dict[str, Any], writes: str | None = None) -> None:
        """Cache ``schema`` under ``schema_id``; ``writes`` names the contract this process writes with it.

        :class:`UnsafeSchema` (nothing cached) when an array's items may take no bytes.
        """
        parsed = fastavro.parse_schema(schema)
        unsafe = zero_width_arrays(parsed)
        if unsafe:
            raise UnsafeSchema(
                schema_id, f"arrays whose items may take no bytes: {', '.join(unsafe)} (refused)"
            )
        self._raw_by_id[schema_id] = parsed
        if writes is not None:
            self._writer_ids[writes] = schema_id
        self._by_id = {key: value for key, value in self._by_id.items() if key[1] != writes}

    def __len__(self) -> int:
        return len(self._raw_by_id)

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._raw_by_id

    def writer_id(self, name: str) -> int:
        """The id this process writes ``name`` with; KeyError before it was added."""
        return self._writer_ids[name]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode ``record`` with this process's version of ``name``; ValueError if it does not fit."""
        schema_id = self._writer_ids[name]
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC_BYTE, schema_id))
        try:
            fastavro.schemaless_writer(out, self._raw_by_id[schema_id], record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"record does not fit contract {name}: {exc!r}") from exc
        return out.getvalue()

    def encode_analyzed(
        self, analyzed: RiskAnalyzedTrade, trade_value: bytes | None = None, processed_at: int | None = None
    ) -> bytes:
        """Encode ``analyzed`` as a ``RiskAnalyzedTrade`` (see :mod:`riskengine.core.analyzed_writer`).

        ``trade_value``: the wire-format message the trade was decoded from; when its writer schema is
        this process's ``CryptoTrade``, its body becomes ``originalTrade`` as it is. ``processed_at``,
        when given, is written in place of ``analyzed.processed_at``.
        """
        original = None
        if trade_value is not None and self._own_schema(trade_value, "CryptoTrade"):
            original = trade_value[_HEADER.size :]
        header = _HEADER.pack(MAGIC_BYTE, self._writer_ids["RiskAnalyzedTrade"])
        return header + analyzed_body(analyzed, original, processed_at)

    def decode(self, payload: bytes | None, name: str) -> dict[str, Any]:
        """Decode a wire-format value into a record shaped by this process's version of ``name``."""
        if payload is None or len(payload) < _HEADER.size:
            raise MalformedFrame(f"value of {0 if payload is None else len(payload)} bytes is too short")
        magic, schema_id = _HEADER.unpack_from(payload)
        if magic != MAGIC_BYTE:
            raise MalformedFrame(f"magic byte is {magic}, expected {MAGIC_BYTE}")
        writer = self._writer(schema_id, name)
        body = io.BytesIO(payload)
        body.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, writer.reader)
        except fastavro.read.SchemaResolutionError as exc:
            body.seek(_HEADER.size)
            try:
                written = fastavro.schemaless_reader(body, writer.parsed, None)
            except _AVRO_READ_ERRORS as inner:
                raise UnreadableRecord(f"body does not parse with schema id {schema_id}: {inner!r}") from exc
            raise UnresolvableRecord(
                f"schema id {schema_id} cannot be read as {name}: {exc}", written
            ) from exc
        except _AVRO_READ_ERRORS as exc:
            raise UnreadableRecord(f"body does not parse with schema id {schema_id}: {exc!r}") from exc
        if body.tell() != len(payload):
            raise UnreadableRecord(f"{len(payload) - body.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise UnreadableRecord(f"schema id {schema_id} does not describe a record")
        return record

    def decode_as_written(self, payload: bytes) -> Any:
        """Decode a wire-format value with its writer's own schema, whatever the contract.

        For tools that show any record (``riskengine tail``): no reader schema, no validation.
        :class:`MalformedFrame`, :class:`UnknownSchemaId` (async callers may ``fetch`` it and
        retry) or :class:`UnreadableRecord` when it cannot.
        """
        if len(payload) < _HEADER.size:
            raise MalformedFrame(f"value of {len(payload)} bytes is too short")
        magic, schema_id = _HEADER.unpack_from(payload)
        if magic != MAGIC_BYTE:
            raise MalformedFrame(f"magic byte is {magic}, expected {MAGIC_BYTE}")
        schema = self._raw_by_id.get(schema_id)
        if schema is None:
            raise UnknownSchemaId(schema_id)
        body = io.BytesIO(payload)
        body.seek(_HEADER.size)
        try:
            return fastavro.schemaless_reader(body, schema, None)
        except _AVRO_READ_ERRORS as exc:
            raise UnreadableRecord(f"body does not parse with schema id {schema_id}: {exc!r}") from exc

    def _writer(self, schema_id: int, name: str) -> _WriterSchema:
        cached = self._by_id.get((schema_id, name))
        if cached is not None:
            return cached
        raw = self._raw_by_id.get(schema_id)
        if raw is None:
            raise UnknownSchemaId(schema_id)
        own_id = self._writer_ids.get(name)
        if own_id == schema_id:
            writer = _WriterSchema(raw, None)
        else:
            writer = _WriterSchema(raw, parsed_schema(name) if own_id is None else self._raw_by_id[own_id])
        self._by_id[(schema_id, name)] = writer
        return writer

    def decode_trade(self, payload: bytes | None) -> Trade:
        """Decode and validate a crypto-trades value; every failure is a :class:`DecodeError`."""
        return self._decode_valid(payload, "CryptoTrade", read_trade, parse_trade, InvalidTrade)

    def decode_order_event(self, payload: bytes | None) -> OrderEvent:
        """Decode and validate a crypto-orders value; every failure is a :class:`DecodeError`."""
        return self._decode_valid(
            payload, "OrderEvent", read_order_event, parse_order_event, InvalidOrderEvent
        )

    def _own_schema(self, payload: bytes, name: str) -> bool:
        """Whether ``payload`` was written with this process's version of ``name``: then its body is
        that schema's as it is (an analyzed trade's ``originalTrade``; the core's readers,
        :mod:`riskengine.core.event_reader`, build the event straight from it, and whatever they do
        not accept takes the general way, which names the fault)."""
        if len(payload) < _HEADER.size:
            return False
        magic, schema_id = _HEADER.unpack_from(payload)
        own: bool = magic == MAGIC_BYTE and schema_id == self._writer_ids.get(name)
        return own

    def _decode_valid(
        self,
        payload: bytes | None,
        name: str,
        read: Callable[[bytes, int], P | None],
        parse: Callable[[Mapping[str, Any]], P],
        invalid: type[InvalidTrade] | type[InvalidOrderEvent],
    ) -> P:
        """``payload``'s event: by the core's reader ``read`` when written with this process's own
        schema and accepted there, else the general way (:meth:`decode`, then ``parse``), which
        names what is wrong as a :class:`DecodeError`."""
        if payload is not None and self._own_schema(payload, name):
            event = read(payload, _HEADER.size)
            if event is not None:
                return event
        try:
            record = self.decode(payload, name)
        except UnresolvableRecord as exc:
            # Prefer naming the field (e.g. side 'HOLD') over Avro's resolution message.
            record = exc.record
            if not isinstance(record, dict):
                raise
            try:
                parse(record)
            except invalid as failed:
                raise InvalidRecord(failed.field, f"invalid {name}: {failed}") from exc
            raise
        try:
            return parse(record)
        except invalid as exc:
            raise InvalidRecord(exc.field, f"invalid {name}: {exc}") from exc


class SchemaCatalog(SchemaCache):
    """A :class:`SchemaCache` filled from the registry before consuming starts.

    ``suffix`` is RISKENGINE_WORKER_TOPIC_SUFFIX: subjects follow the actual topic names
    (``crypto-trades<suffix>-value``), as Confluent's TopicNameStrategy looks them up.
    """

    def __init__(self, client: AsyncSchemaRegistryClient, suffix: str = "") -> None:
        super().__init__()
        self._client = client
        self.subjects = record_subjects(suffix)

    @classmethod
    def for_settings(cls, settings: Settings) -> SchemaCatalog:
        """A catalog on the configured registry, with the subjects of the configured topics."""
        return cls(registry_client(settings), settings.worker_topic_suffix)

    async def register(self, names: Iterable[str] = tuple(RECORD_TOPICS)) -> dict[str, int]:
        """Set each contract's subject compatibility, register the contract (both idempotent) and
        write with it.

        The compatibility (:func:`riskengine.contracts.topics.compatibility`) is set before the
        first registration, so a subject never exists under the registry's global default only.
        """
        for name in names:
            subject = self.subjects[name]
            await self.set_compatibility(subject, compatibility(name))
            schema = expanded_schema(name)
            self.add(await self.register_schema(subject, schema), schema, writes=name)
        return dict(self._writer_ids)

    async def register_schema(self, subject: str, schema: dict[str, Any]) -> int:
        """Register one schema under ``subject``; RegistryError names the subject when refused."""
        try:
            schema_id: int = await self._client.register(subject, AvroSchema(schema))
        except ClientError as exc:
            raise RegistryError(
                f"{subject}: {exc.message} (HTTP {exc.http_code}): {exc.server_traceback}"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry unreachable while registering {subject}: {exc}") from exc
        return schema_id

    async def set_compatibility(self, subject: str, level: str = "BACKWARD") -> None:
        """Set ``subject``'s compatibility level.

        Workers starting together on a new subject set it at the same moment, and the registry
        refuses all but one (Apicurio: "Unable to update level", three catalogs at once failed in 10
        of 10 tries): a refusal is accepted when the subject has the level by then, else the update
        is tried once more.
        """
        try:
            try:
                await self._client.update_compatibility(level, subject)
            except ClientError as exc:
                await asyncio.sleep(COMPATIBILITY_RETRY_S)
                if await self._compatibility_of(subject) == level:
                    return
                try:
                    await self._client.update_compatibility(level, subject)
                except ClientError:
                    raise RegistryError(f"{subject}: setting compatibility {level}: {exc.message}") from exc
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry unreachable while configuring {subject}: {exc}") from exc

    async def _compatibility_of(self, subject: str) -> str | None:
        """``subject``'s own compatibility level; None when it has none (or it cannot be read)."""
        try:
            level: str = await self._client.get_compatibility(subject)
        except ClientError:
            return None
        return level

    async def warm(self, subjects: Iterable[str] | None = None) -> int:
        """Load every version of the given subjects (default: the engine's) so old writers decode.

        Returns how many schema ids are now cached.
        """
        for subject in subjects or self.subjects.values():
            try:
                versions = await self._client.get_versions(subject)
                for version in versions or []:
                    found = await self._client.get_schema(subject, version)
                    if found is not None and found.schema_id not in self:
                        try:
                            self.add(found.schema_id, found.schema.raw_schema)
                        except UnsafeSchema as exc:  # its messages are dead-lettered; start anyway
                            log.error("%s version %s: %s", subject, version, exc)
            except httpx.HTTPError as exc:
                raise RegistryError(f"schema registry unreachable while warming {subject}: {exc}") from exc
        return len(self)

    async def fetch(self, schema_id: int) -> None:
        """Fetch one schema by id into the cache (for async callers that met an unknown id).

        One request (:data:`FETCH_TIMEOUT_S`). :class:`SchemaNotFound` when the registry answers
        404, :class:`RegistryUnavailable` when it gives no answer, :class:`RegistryError` when it
        refuses (401, 403...).
        """
        try:
            found = await self._client.get_by_id(schema_id, timeout=httpx.Timeout(FETCH_TIMEOUT_S))
        except ClientError as exc:
            # The client raises ClientError for every status but 200 and 404.
            if exc.http_code is not None and (exc.http_code >= 500 or exc.http_code in (408, 429)):
                raise RegistryUnavailable(
                    f"schema registry failed fetching id {schema_id} (HTTP {exc.http_code})"
                ) from exc
            raise RegistryError(
                f"schema registry refused fetching id {schema_id}: {exc.message} (HTTP {exc.http_code})"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"schema registry unreachable while fetching id {schema_id}: {exc!r}"
            ) from exc
        except ValueError as exc:
            # A proxy's HTML error page in front of a restarting registry: the client parses every
            # body as JSON.
            raise RegistryUnavailable(
                f"schema registry gave a body that is not JSON for id {schema_id}: {exc}"
            ) from exc
        if found is None:
            raise SchemaNotFound(schema_id, "the schema registry has no schema with this id (HTTP 404)")
        self.add(schema_id, found.raw_schema)


class SchemaSource(Protocol):
    """What :func:`fetch_schema` needs: :meth:`SchemaCatalog.fetch` (or a test's fake of it)."""

    async def fetch(self, schema_id: int) -> None:
        """Fetch one schema into the cache; the exceptions of :meth:`SchemaCatalog.fetch`."""
        ...


class NotFoundIds:
    """Schema ids the registry answered 404 for, each for ``ttl_s``, at most ``capacity`` of them.

    Bounded and expiring on purpose: a set that only grows would keep dead-lettering an id that is
    registered later, until the worker restarts.
    """

    def __init__(
        self,
        capacity: int = NOT_FOUND_CAPACITY,
        ttl_s: float = NOT_FOUND_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        #: id -> when it expires, oldest insertion first
        self._expiry: OrderedDict[int, float] = OrderedDict()

    def add(self, schema_id: int) -> None:
        """Remember ``schema_id`` for ``ttl_s`` from now (forgetting the oldest id when full)."""
        self._expiry.pop(schema_id, None)
        self._expiry[schema_id] = self._clock() + self.ttl_s
        while len(self._expiry) > self.capacity:
            self._expiry.popitem(last=False)

    def __contains__(self, schema_id: object) -> bool:
        expiry = self._expiry.get(schema_id) if isinstance(schema_id, int) else None
        if expiry is None:
            return False
        if self._clock() >= expiry:
            del self._expiry[schema_id]  # type: ignore[arg-type]  # an int: it had an expiry
            return False
        return True

    def __len__(self) -> int:
        now = self._clock()
        return sum(1 for expiry in self._expiry.values() if now < expiry)


async def fetch_schema(
    catalog: SchemaSource,
    schema_id: int,
    not_found: NotFoundIds,
    delays: Iterable[float] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Fetch ``schema_id`` into ``catalog``, retrying a registry that gives no answer.

    Raises :class:`SchemaNotFound` at once for an id in ``not_found``, and when the registry
    answers 404 (the id is then added to ``not_found``); :class:`RegistryUnavailable` when every
    attempt (one, then one after each of ``delays``, default :data:`FETCH_RETRY_DELAYS_S` as it is
    at the call) got no answer; :class:`RegistryError` for a
    refusal (not retried: asking again does not change a 401). Only the 404 is remembered.
    """
    if schema_id in not_found:
        raise SchemaNotFound(schema_id, "the schema registry had no schema with this id moments ago")
    waits = list(FETCH_RETRY_DELAYS_S if delays is None else delays)
    for attempt in range(len(waits) + 1):
        try:
            await catalog.fetch(schema_id)
            return
        except (SchemaNotFound, UnsafeSchema):
            not_found.add(schema_id)  # a definite answer: asking again gives the same
            raise
        except RegistryUnavailable as exc:
            if attempt == len(waits):
                raise RegistryUnavailable(f"{exc} ({attempt + 1} attempts)") from exc
            log.warning("schema id %d: %s; retrying in %.1f s", schema_id, exc, waits[attempt])
            await sleep(waits[attempt])
