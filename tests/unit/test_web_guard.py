"""The request checks shared by the producer, the dashboard and the worker (riskengine.web_guard)."""

from __future__ import annotations

import pytest

from riskengine.web_guard import (
    allowed_names,
    bearer_token,
    host_problem,
    is_loopback,
    origin_problem,
    token_matches,
)

ALLOWED = allowed_names("10.0.0.7", " svc.internal ,")


def test_allowed_names_are_loopback_the_bind_address_and_the_extra_ones():
    assert sorted(ALLOWED) == ["10.0.0.7", "127.0.0.1", "::1", "localhost", "svc.internal"]


@pytest.mark.parametrize(
    ("host", "port", "ok"),
    [
        ("127.0.0.1:8090", 8090, True),
        ("LocalHost:8090", 8090, True),
        ("[::1]:8090", 8090, True),
        ("svc.internal:8090", 8090, True),
        ("localhost", 80, True),
        ("localhost:8091", 8090, False),
        ("localhost:8091", None, True),
        ("evil.example:8090", 8090, False),
        ("127.0.0.1.evil.example:8090", None, False),
        ("", 8090, False),
        (None, 8090, False),
        ("[bad", 8090, False),
        ("localhost:99999", 8090, False),
    ],
)
def test_host(host, port, ok):
    assert (host_problem(host, ALLOWED, port) is None) is ok


@pytest.mark.parametrize(
    ("origin", "port", "ok"),
    [
        (None, 8090, True),
        ("http://127.0.0.1:8090", 8090, True),
        ("http://localhost:8090", 8090, True),
        ("https://localhost:8090", 8090, False),
        ("http://localhost:8091", 8090, False),
        ("http://localhost:8091", None, True),
        ("http://evil.example:8090", 8090, False),
        ("null", 8090, False),
        ("", 8090, False),
        ("http://localhost:bad", 8090, False),
    ],
)
def test_origin(origin, port, ok):
    assert (origin_problem(origin, ALLOWED, port) is None) is ok


def test_bearer_tokens_never_raise():
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    for header in (None, "", "Bearer", "Bearer ", "Basic abc", "abc"):
        assert bearer_token(header) is None
    assert token_matches("Bearer s3cret", "s3cret")
    for header in ("Bearer s3cret2", "Bearer \udcff", "Bearer \u00e9", "Basic s3cret", None):
        assert not token_matches(header, "s3cret")


def test_loopback_peers():
    for remote in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(remote), remote
    for other in ("10.0.0.7", "192.168.1.2", "::ffff:10.0.0.7", "", None, "not-an-ip"):
        assert not is_loopback(other), other
