"""The Avro codec: Confluent wire format, schema evolution, and typed errors for bad input."""

import copy
import json
import struct
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schema_registry.client.errors import ClientError

from riskengine.contracts.avro_codec import (
    FETCH_RETRY_DELAYS_S,
    NOT_FOUND_CAPACITY,
    NOT_FOUND_TTL_S,
    DecodeError,
    InvalidRecord,
    MalformedFrame,
    NotFoundIds,
    RegistryError,
    RegistryUnavailable,
    SchemaCache,
    SchemaCatalog,
    SchemaNotFound,
    UnknownSchemaId,
    UnreadableRecord,
    UnsafeSchema,
    fetch_schema,
    zero_width_arrays,
)
from riskengine.contracts.schema_files import expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS

TRADE = {
    "tradeId": "t-1",
    "userId": "u-1",
    "customerId": "c-1",
    "symbol": "BTC/USDT",
    "side": "BUY",
    "quantity": 0.5,
    "price": 60000.0,
    "notional": 30000.0,
    "timestamp": 1_764_000_000_000,
    "exchange": "BINANCE",
    "orderType": "MARKET",
    "riskLevel": None,
    "counterpartyUserId": None,
    "orderId": "o-1",
}


def trade_schema_v2() -> dict[str, Any]:
    """CryptoTrade plus one optional field, as a later release would add it."""
    schema = copy.deepcopy(expanded_schema("CryptoTrade"))
    schema["fields"].append({"name": "venueRegion", "type": ["null", "string"], "default": None})
    return schema


def cache_writing(schema_id: int, schema: dict[str, Any], *known: tuple[int, dict[str, Any]]) -> SchemaCache:
    cache = SchemaCache()
    for other_id, other in known:
        cache.add(other_id, other)
    cache.add(schema_id, schema, writes="CryptoTrade")
    return cache


@pytest.fixture
def cache() -> SchemaCache:
    return cache_writing(7, expanded_schema("CryptoTrade"))


def test_wire_format_is_magic_byte_schema_id_then_avro(cache):
    payload = cache.encode("CryptoTrade", TRADE)
    assert payload[0] == 0
    assert struct.unpack(">I", payload[1:5]) == (7,)
    assert cache.decode(payload, "CryptoTrade") == TRADE


def test_decode_trade_returns_a_validated_core_trade(cache):
    trade = cache.decode_trade(cache.encode("CryptoTrade", TRADE))
    assert trade.trade_id == "t-1"
    assert trade.notional == 30000.0


def test_encode_rejects_a_record_that_does_not_fit(cache):
    with pytest.raises(ValueError, match="CryptoTrade"):
        cache.encode("CryptoTrade", {**TRADE, "quantity": "lots"})


def test_newer_reader_reads_older_writer():
    old = cache_writing(1, expanded_schema("CryptoTrade"))
    new = cache_writing(2, trade_schema_v2(), (1, expanded_schema("CryptoTrade")))
    record = new.decode(old.encode("CryptoTrade", TRADE), "CryptoTrade")
    assert record == {**TRADE, "venueRegion": None}


def test_older_reader_reads_newer_writer():
    new = cache_writing(2, trade_schema_v2())
    old = cache_writing(1, expanded_schema("CryptoTrade"), (2, trade_schema_v2()))
    payload = new.encode("CryptoTrade", {**TRADE, "venueRegion": "EU"})
    assert old.decode(payload, "CryptoTrade") == TRADE


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"", MalformedFrame, "too short"),
        (b"\x00\x00\x00", MalformedFrame, "too short"),
        (b"\x01\x00\x00\x00\x07abc", MalformedFrame, "magic byte is 1"),
        (b"\x00\x00\x00\x00\x63abc", UnknownSchemaId, "schema id 99"),
        (b"\x00\x00\x00\x00\x07\x02t", UnreadableRecord, "does not parse"),
    ],
)
def test_malformed_values_give_typed_errors(cache, payload, error, message):
    with pytest.raises(error, match=message):
        cache.decode_trade(payload)


def test_trailing_bytes_are_rejected(cache):
    with pytest.raises(UnreadableRecord, match="trailing"):
        cache.decode_trade(cache.encode("CryptoTrade", TRADE) + b"\x00")


def test_valid_avro_with_a_negative_quantity_names_the_field(cache):
    with pytest.raises(InvalidRecord) as info:
        cache.decode_trade(cache.encode("CryptoTrade", {**TRADE, "quantity": -1.0}))
    assert info.value.field == "quantity"
    assert "quantity" in str(info.value)


def test_an_unknown_side_from_a_newer_writer_names_the_field():
    wider = copy.deepcopy(expanded_schema("CryptoTrade"))
    side = next(f for f in wider["fields"] if f["name"] == "side")
    side["type"]["symbols"] = ["BUY", "SELL", "HOLD"]
    writer = cache_writing(3, wider)
    reader = cache_writing(1, expanded_schema("CryptoTrade"), (3, wider))
    with pytest.raises(InvalidRecord) as info:
        reader.decode_trade(writer.encode("CryptoTrade", {**TRADE, "side": "HOLD"}))
    assert info.value.field == "side"
    assert "HOLD" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_any_bytes_decode_or_fail_with_a_decode_error(body):
    cache = cache_writing(7, expanded_schema("CryptoTrade"))
    for payload in (body, b"\x00\x00\x00\x00\x07" + body):
        try:
            cache.decode_trade(payload)
        except DecodeError as exc:
            assert exc.reason


ORDER_EVENT = {
    "eventId": "e-1",
    "orderId": "o-1",
    "userId": "u-1",
    "symbol": "BTC/USDT",
    "side": "SELL",
    "eventType": "PLACED",
    "price": 60000.0,
    "quantity": 0.5,
    "remainingQuantity": 0.5,
    "timestamp": 1_764_000_000_000,
    "exchange": "BINANCE",
}


def order_cache(schema_id: int, schema: dict[str, Any], *known: tuple[int, dict[str, Any]]) -> SchemaCache:
    cache = SchemaCache()
    for other_id, other in known:
        cache.add(other_id, other)
    cache.add(schema_id, schema, writes="OrderEvent")
    return cache


def test_an_unknown_order_event_type_from_a_newer_writer_names_the_field():
    wider = copy.deepcopy(expanded_schema("OrderEvent"))
    kind = next(f for f in wider["fields"] if f["name"] == "eventType")
    kind["type"]["symbols"] = [*kind["type"]["symbols"], "EXPIRED"]
    writer = order_cache(4, wider)
    reader = order_cache(2, expanded_schema("OrderEvent"), (4, wider))
    with pytest.raises(InvalidRecord) as info:
        reader.decode_order_event(writer.encode("OrderEvent", {**ORDER_EVENT, "eventType": "EXPIRED"}))
    assert info.value.field == "eventType"
    assert "EXPIRED" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", 0.0),
        ("price", -60000.0),
        ("quantity", 0.0),
        ("price", float("inf")),
        ("remainingQuantity", float("nan")),
        ("timestamp", 10**14 + 1),  # far future: beyond the year 5138
        ("timestamp", -1),
    ],
)
def test_an_order_event_with_an_impossible_value_names_the_field(field, value):
    cache = order_cache(2, expanded_schema("OrderEvent"))
    with pytest.raises(InvalidRecord) as info:
        cache.decode_order_event(cache.encode("OrderEvent", {**ORDER_EVENT, field: value}))
    assert info.value.field == field


# -- fetching unknown ids: a registry outage is retried, only a 404 is remembered ----------------


class FakeRegistryClient:
    """An in-process stand-in for the registry client's ``get_by_id``: one scripted outcome per call."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[int] = []

    async def get_by_id(self, schema_id: int, **options: Any) -> Any:
        self.calls.append(schema_id)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def a_catalog(*outcomes: Any) -> tuple[SchemaCatalog, FakeRegistryClient]:
    client = FakeRegistryClient(*outcomes)
    return SchemaCatalog(client), client  # type: ignore[arg-type]


FOUND = SimpleNamespace(raw_schema=expanded_schema("CryptoTrade"))


@pytest.mark.parametrize(
    "outcome, error",
    [
        (None, SchemaNotFound),
        (httpx.ConnectError("connection refused"), RegistryUnavailable),
        (httpx.ReadTimeout("timed out"), RegistryUnavailable),
        (ClientError("Received bad schema", http_code=503), RegistryUnavailable),
        (ClientError("Received bad schema", http_code=429), RegistryUnavailable),
        (json.JSONDecodeError("Expecting value", "<html>", 0), RegistryUnavailable),
        (ClientError("Unauthorized", http_code=401), RegistryError),
    ],
)
async def test_fetch_tells_a_definite_not_found_from_no_answer(outcome, error):
    catalog, _client = a_catalog(outcome)
    with pytest.raises(error) as raised:
        await catalog.fetch(42)
    # A 404 is an UnknownSchemaId (a dead letter); no answer and refusals are registry errors.
    assert isinstance(raised.value, UnknownSchemaId) == (error is SchemaNotFound)
    assert (type(raised.value) is RegistryError) == (error is RegistryError)
    assert 42 not in catalog


async def test_fetch_schema_retries_a_registry_that_gives_no_answer_with_backoff():
    down = httpx.ConnectError("connection refused")
    catalog, client = a_catalog(down, down, FOUND)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    not_found = NotFoundIds()
    await fetch_schema(catalog, 42, not_found, sleep=sleep)
    assert client.calls == [42, 42, 42]
    assert waits == [0.2, 0.4]
    assert 42 in catalog and 42 not in not_found


async def test_fetch_schema_gives_up_after_its_attempts_and_remembers_nothing():
    down = ClientError("Received bad schema", http_code=502)
    catalog, client = a_catalog(*[down] * 4, FOUND)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    not_found = NotFoundIds()
    with pytest.raises(RegistryUnavailable, match="4 attempts"):
        await fetch_schema(catalog, 42, not_found, sleep=sleep)
    assert waits == list(FETCH_RETRY_DELAYS_S) == [0.2, 0.4, 0.8]
    assert len(not_found) == 0
    # The registry is back: the next event with the id asks again and finds it.
    await fetch_schema(catalog, 42, not_found, sleep=sleep)
    assert 42 in catalog and len(client.calls) == 5


async def test_fetch_schema_does_not_retry_a_refusal():
    catalog, client = a_catalog(ClientError("Unauthorized", http_code=401))
    with pytest.raises(RegistryError, match="401"):
        await fetch_schema(catalog, 42, NotFoundIds(), delays=(0.0, 0.0))
    assert client.calls == [42]


async def test_a_not_found_is_remembered_until_it_expires_then_asked_again():
    now = [1_000.0]
    catalog, client = a_catalog(None, FOUND)
    not_found = NotFoundIds(ttl_s=300.0, clock=lambda: now[0])
    with pytest.raises(SchemaNotFound, match="HTTP 404"):
        await fetch_schema(catalog, 42, not_found)
    now[0] += 299.0
    with pytest.raises(SchemaNotFound, match="moments ago"):
        await fetch_schema(catalog, 42, not_found)
    assert client.calls == [42]  # remembered: no second request
    now[0] += 1.0
    # Registered since: found once the memory of the 404 expired.
    await fetch_schema(catalog, 42, not_found)
    assert client.calls == [42, 42] and 42 in catalog and 42 not in not_found


def test_not_found_ids_are_bounded_oldest_forgotten_first():
    not_found = NotFoundIds(capacity=3, clock=lambda: 0.0)
    for schema_id in range(1, 6):
        not_found.add(schema_id)
    assert len(not_found) == 3
    assert [i in not_found for i in range(1, 6)] == [False, False, True, True, True]
    assert "3" not in not_found
    assert NOT_FOUND_CAPACITY == 1024 and NOT_FOUND_TTL_S == 300.0


# -- schemas a hostile writer could use to stall the decoder ----------------------------------


def record_with(field_type: Any) -> dict[str, Any]:
    return {"type": "record", "name": "Hostile", "fields": [{"name": "items", "type": field_type}]}


NOTHING = {"type": "record", "name": "Nothing", "fields": [{"name": "gap", "type": "null"}]}


@pytest.mark.parametrize(
    "field_type, path",
    [
        ({"type": "array", "items": "null"}, ".items"),
        ({"type": "array", "items": NOTHING}, ".items"),
        ({"type": "array", "items": {"type": "fixed", "name": "Empty", "size": 0}}, ".items"),
        (["null", {"type": "array", "items": "null"}], ".items"),
        ({"type": "map", "values": {"type": "array", "items": "null"}}, ".items{}"),
        ({"type": "array", "items": {"type": "array", "items": "null"}}, ".items[]"),
    ],
)
def test_a_schema_with_an_array_of_zero_width_items_is_refused(field_type, path):
    cache = SchemaCache()
    with pytest.raises(UnsafeSchema, match="no bytes") as refused:
        cache.add(66, record_with(field_type))
    assert path in str(refused.value) and refused.value.reason == "unsafe-schema"
    assert 66 not in cache


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "array", "items": "int"},
        {"type": "array", "items": ["null", "string"]},  # the branch index takes a byte
        {"type": "array", "items": {"type": "fixed", "name": "One", "size": 1}},
        {"type": "map", "values": "null"},  # every entry has a key
        {"type": "array", "items": {"type": "enum", "name": "E", "symbols": ["A"]}},
    ],
)
def test_arrays_whose_items_take_a_byte_are_accepted(field_type):
    assert zero_width_arrays(record_with(field_type)) == []


def test_every_contract_and_a_recursive_record_are_accepted():
    for name in RECORD_TOPICS:
        assert zero_width_arrays(expanded_schema(name)) == [], name
    linked = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "next", "type": ["null", "Node"]},
            {"name": "seen", "type": {"type": "array", "items": "Node"}},
        ],
    }
    assert zero_width_arrays(linked) == []


async def test_an_unsafe_schema_from_the_registry_is_remembered_and_never_cached():
    hostile = SimpleNamespace(raw_schema=record_with({"type": "array", "items": "null"}))
    catalog, client = a_catalog(hostile)
    not_found = NotFoundIds()
    with pytest.raises(UnsafeSchema):
        await fetch_schema(catalog, 42, not_found)
    with pytest.raises(UnknownSchemaId):
        await fetch_schema(catalog, 42, not_found)
    assert client.calls == [42] and 42 not in catalog
