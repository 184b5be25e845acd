"""Fuzzing the REST API (issue 15): whatever the request, a 2xx or a 4xx with a short JSON answer.

Bodies are arbitrary JSON values, trades with fields replaced by them, and raw text no encoder
would write (NaN and Infinity literals, 400- and 5,000-digit numbers, arrays nested 50,000 deep,
invalid UTF-8, truncated JSON), under right and wrong content types and charsets, with arbitrary
query parameters. Every endpoint must answer below 500, in JSON, and never echo more than a bounded
slice of the request: every value of the answer is at most :data:`MAX_ECHO` characters and a short
suffix. The produce
endpoint goes all the way to the in-memory transport (no Kafka), with a simulation running so
that the customerId lookup in the simulated population is reached.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from riskengine.producer.api import MAX_ECHO, TRADE_FIELDS, create_app
from riskengine.producer.config import ProducerConfig, SimulationDefaults

from .offline_doubles import MemoryTransport, offline_catalog

VALID = {"userId": "U000001", "symbol": "BTC/USDT", "side": "BUY", "quantity": 0.5, "price": 60_000}
#: The longest value an answer may hold: MAX_ECHO characters and "... (1234567 characters)".
LONGEST_VALUE = MAX_ECHO + 30

# One server per test, shared by its examples on purpose (starting one per example would be slow
# and test nothing more); hypothesis warns about function-scoped fixtures for that reason.
FUZZ = settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
async def client(tmp_path) -> Any:
    """The API without an admin token (the test client is on loopback), with a slow simulation
    running: its population is what a produced trade's customerId is looked up in."""
    transport = MemoryTransport()

    async def connect(config):
        return transport, offline_catalog()

    config = ProducerConfig(audit_db=tmp_path / "audit.sqlite3", defaults=SimulationDefaults(users=100))
    client = TestClient(TestServer(create_app(config, connect), host="127.0.0.1"))
    await client.start_server()
    start = "/api/admin/mock-trading/start?rateMs=3600000&scenarios=none&quietMs=0"
    assert (await client.post(start, headers={"Content-Type": "application/json"})).status == 200
    yield client
    await client.close()


def scalars_of(answer: Any) -> Iterator[Any]:
    """Every key and leaf value of a decoded JSON answer."""
    if isinstance(answer, dict):
        for key, value in answer.items():
            yield key
            yield from scalars_of(value)
    elif isinstance(answer, list):
        for item in answer:
            yield from scalars_of(item)
    else:
        yield answer


async def check_answer(response: Any) -> None:
    """Below 500, JSON (an error says what is wrong), no value longer than LONGEST_VALUE.

    The bound is per value, not on the whole answer: the audit endpoint lists up to 100 stored
    rows, which is not an echo of the request.
    """
    raw = await response.read()
    assert response.status < 500, raw[:500]
    assert response.content_type == "application/json", raw[:500]
    answer = json.loads(raw)
    if response.status >= 400:
        assert isinstance(answer, dict) and answer["error"] and answer["reason"], answer
    longest = max(len(str(value)) for value in scalars_of(answer))
    assert longest <= LONGEST_VALUE, f"{longest} characters echoed: {raw[:200]!r}"


def long_text(sizes: list[int]) -> st.SearchStrategy[str]:
    """Strings of the given sizes (around MAX_ECHO and far beyond it), cheap to generate."""
    return st.builds(
        lambda size, char: char * size, st.sampled_from(sizes), st.sampled_from('x é\U0001f600\\"')
    )


EXTREME_NUMBERS = st.sampled_from(
    [1e300, -1e300, -0.0, 0.0, 5e-324, 1e-300, 10**400, -(10**400), math.nan, math.inf, -math.inf, 2**63, -1]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    EXTREME_NUMBERS,
    st.text(max_size=20),
    st.sampled_from(["BUY", "SELL", "BTC/USDT", "HIGH", " U1", ""]),
    long_text([MAX_ECHO, MAX_ECHO + 1, 5_000]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
#: A valid trade with some fields replaced (or added) by arbitrary values, and maybe a stray key.
TRADE_BODIES = st.builds(
    lambda changes, extra: VALID | changes | extra,
    st.dictionaries(st.sampled_from(TRADE_FIELDS), JSON_VALUES, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=10), long_text([5_000])), JSON_VALUES, max_size=1),
)


def dumped(value: Any) -> bytes:
    """``value`` as Python writes JSON, NaN and Infinity literals included."""
    return json.dumps(value, allow_nan=True).encode()


RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        ["NaN", "-Infinity", '{"quantity": NaN}', "9" * 400, "9" * 5_000, "1e99999", '"\\ud800"']
    ).map(str.encode),
    st.integers(1, 50_000).map(lambda depth: ("[" * depth + "]" * depth).encode()),
    st.integers(1, 50_000).map(lambda depth: ('{"a":' * depth + "1" + "}" * depth).encode()),
    st.builds(lambda text, cut: text[:cut], JSON_VALUES.map(dumped), st.integers(0, 50)),
)
JSON_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/json; charset=bogus",
        "application/json; charset=" + "x" * 5_000,
    ]
)
#: Header-safe text (the client refuses control characters).
OTHER_TYPES = st.one_of(
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)


@FUZZ
@given(body=st.one_of(JSON_VALUES, TRADE_BODIES).map(dumped), content_type=JSON_TYPES)
@example(body=dumped(VALID | {"quantity": 10**400, "price": 1.5}), content_type="application/json")
@example(body=dumped(VALID | {"userId": ["U000001"]}), content_type="application/json")
@example(body=dumped(VALID | {"side": "x" * 300_000}), content_type="application/json")
# Over aiohttp's 1 MiB body limit: its 413 must be JSON too.
@example(body=dumped(VALID | {"x" * 1_100_000: 1}), content_type="application/json")
@example(body=b'{"a": 1}', content_type="application/json; charset=bogus")
async def test_produce_answers_any_json_body_with_a_short_2xx_or_4xx(client, body, content_type):
    response = await client.post("/api/trades/produce", data=body, headers={"Content-Type": content_type})
    await check_answer(response)


@FUZZ
@given(body=RAW_BODIES, content_type=st.one_of(JSON_TYPES, OTHER_TYPES))
@example(body=b"[" * 50_000 + b"]" * 50_000, content_type="application/json")
@example(body=b"\xff\xfe{", content_type="application/json")
async def test_produce_answers_any_raw_body_with_a_short_2xx_or_4xx(client, body, content_type):
    response = await client.post("/api/trades/produce", data=body, headers={"Content-Type": content_type})
    await check_answer(response)


#: Every endpoint but start, and paths that are none: a start publishes a population per example
#: (a random ``users`` could ask for a million); its body is ignored and its parameters are covered
#: by test_api.py's bad-parameter tests.
ENDPOINTS = [
    ("POST", "/api/trades/produce"),
    ("POST", "/api/admin/mock-trading/stop"),
    ("GET", "/api/admin/stats"),
    ("GET", "/api/admin/audit"),
    ("GET", "/health"),
    ("GET", "/api/trades/produce"),
    ("POST", "/no/such/path"),
]


#: Query text the client can send (it refuses lone surrogates); up to past the guard's 256 limit.
QUERY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
#: The audit endpoint's parameters (and others) with any value.
QUERIES = st.dictionaries(
    st.one_of(st.sampled_from(["limit", "status", "tradeId", "eventId", "scenarioId"]), QUERY_TEXT),
    st.one_of(st.sampled_from(["0", "1", "10000", "10001", "-0", "1e3", "acked", "lost"]), QUERY_TEXT),
    max_size=3,
)


@settings(FUZZ, max_examples=150)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    query=QUERIES,
    body=st.one_of(RAW_BODIES, JSON_VALUES.map(dumped)),
    content_type=st.one_of(JSON_TYPES, OTHER_TYPES),
)
async def test_every_endpoint_answers_any_request_with_a_short_2xx_or_4xx(
    client, endpoint, query, body, content_type
):
    method, path = endpoint
    headers = {"Content-Type": content_type}
    response = await client.request(method, path, params=query, data=body, headers=headers)
    await check_answer(response)
