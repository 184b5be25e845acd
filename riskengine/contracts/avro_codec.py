"""Avro through a Confluent-compatible schema registry, in the Confluent wire format.

A message value is ``0x00`` (magic byte), the writer's schema id as a 4-byte big-endian integer,
then the Avro binary body. :class:`SchemaCatalog` registers the engine's contracts and keeps every
schema it will need in memory *before* consuming starts: encoding and decoding never call the
registry, so nothing blocks the event loop while processing. A message written with a schema id
the catalog has not seen raises :class:`UnknownSchemaId`; async callers may ``await
catalog.fetch(schema_id)`` and retry.

Decoding failures are typed (all subclasses of :class:`DecodeError`) and carry a reason meant for
the dead-letter headers.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from riskengine.contracts.analyzed_writer import analyzed_body
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
)
from riskengine.errors import ContractError, EventRejected, FatalError
from riskengine.settings import Settings

P = TypeVar("P")

MAGIC_BYTE = 0
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


class RegistryError(ContractError, FatalError):
    """The registry refused or failed a request (unreachable, unauthorized, incompatible schema)."""


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
        """Cache ``schema`` under ``schema_id``; ``writes`` names the contract this process writes with it."""
        self._raw_by_id[schema_id] = fastavro.parse_schema(schema)
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

    def encode_analyzed(self, analyzed: RiskAnalyzedTrade, trade_value: bytes | None = None) -> bytes:
        """Encode ``analyzed`` as a ``RiskAnalyzedTrade`` (see :mod:`riskengine.contracts.analyzed_writer`).

        ``trade_value``: the wire-format message the trade was decoded from; when its writer schema is
        this process's ``CryptoTrade``, its body becomes ``originalTrade`` as it is.
        """
        own_trade = self._writer_ids.get("CryptoTrade")
        original = None
        if trade_value is not None and own_trade is not None:
            magic, schema_id = _HEADER.unpack_from(trade_value)
            if magic == MAGIC_BYTE and schema_id == own_trade:
                original = trade_value[_HEADER.size :]
        header = _HEADER.pack(MAGIC_BYTE, self._writer_ids["RiskAnalyzedTrade"])
        return header + analyzed_body(analyzed, original)

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
        return self._decode_valid(payload, "CryptoTrade", parse_trade, InvalidTrade)

    def decode_order_event(self, payload: bytes | None) -> OrderEvent:
        """Decode and validate a crypto-orders value; every failure is a :class:`DecodeError`."""
        return self._decode_valid(payload, "OrderEvent", parse_order_event, InvalidOrderEvent)

    def _decode_valid(
        self,
        payload: bytes | None,
        name: str,
        parse: Callable[[Mapping[str, Any]], P],
        invalid: type[InvalidTrade] | type[InvalidOrderEvent],
    ) -> P:
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
        """Set ``subject``'s compatibility level."""
        try:
            await self._client.update_compatibility(level, subject)
        except ClientError as exc:
            raise RegistryError(f"{subject}: setting compatibility {level}: {exc.message}") from exc
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry unreachable while configuring {subject}: {exc}") from exc

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
                        self.add(found.schema_id, found.schema.raw_schema)
            except httpx.HTTPError as exc:
                raise RegistryError(f"schema registry unreachable while warming {subject}: {exc}") from exc
        return len(self)

    async def fetch(self, schema_id: int) -> None:
        """Fetch one schema by id into the cache (for async callers that met an unknown id)."""
        try:
            found = await self._client.get_by_id(schema_id)
        except httpx.HTTPError as exc:
            raise RegistryError(f"schema registry unreachable while fetching id {schema_id}: {exc}") from exc
        if found is None:
            raise UnknownSchemaId(schema_id)
        self.add(schema_id, found.raw_schema)
