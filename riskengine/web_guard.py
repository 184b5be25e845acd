"""The checks every local web server runs before a handler: the producer, the dashboard, the worker.

They are on the operator's machine (or a private network) and change things (start a simulation,
produce trades, clear alerts, snapshot tables). Any web page the operator opens can send requests to
them, so each request is checked first, in this order:

1. ``Host`` must name this server: one of 127.0.0.1, localhost, [::1], the bind address and
   ``RISKENGINE_WEB_ALLOWED_HOSTS``, with the port it listens on (421 otherwise). A DNS-rebinding
   page reaches 127.0.0.1 under its own name (``Host: evil.example:8090``) and is turned away here.
2. ``Origin``, when present, must be this server's own origin (403 otherwise). Browsers send it on
   every cross-origin POST and on fetches; curl and the services themselves send none.
3. Every query parameter at most :data:`MAX_PARAMETER` characters (400): no handler needs more, and
   a 5,000-digit number should never reach a parser.
4. A POST, PUT, PATCH or DELETE must say ``Content-Type: application/json`` (415 otherwise): a
   page can only send form or text/plain bodies without a CORS preflight, which these servers never
   grant.

:func:`bearer_token` reads an ``Authorization`` header without ever failing on odd bytes, and
:func:`token_matches` compares it in constant time; :func:`is_loopback` says whether the peer is
on this machine (admin endpoints without a token only answer it).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

#: Names every server answers to besides its bind address and the configured extra ones.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: Longest query parameter value (and name) accepted, in characters.
MAX_PARAMETER = 256
#: Methods whose body must be JSON.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Builds an error body from (short error, the header or parameter at fault, reason).
ErrorBody = Callable[[str, str, str], dict[str, Any]]


def _default_body(error: str, field: str, reason: str) -> dict[str, Any]:
    return {"error": reason}


def allowed_names(bind_host: str, extra: str = "") -> frozenset[str]:
    """The host names a server bound to ``bind_host`` answers to (``extra``: comma-separated)."""
    names = {*LOOPBACK_NAMES, bind_host, *(n for n in extra.split(","))}
    return frozenset(name.strip().lower().strip("[]") for name in names if name.strip())


def _split_host(value: str) -> tuple[str, int | None] | None:
    """(host name, port or None) of a Host header value; None when it is not one."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def host_problem(host: str | None, names: frozenset[str], port: int | None) -> str | None:
    """Why ``host`` (a Host header) does not name this server, or None when it does.

    ``port`` None accepts any port (the worker: Faust forwards a request to the owner of the key
    with the first worker's Host header, so a peer's port must pass).
    """
    split = _split_host(host or "")
    if split is None or not split[0]:
        return "the Host header is missing or malformed"
    name, given = split
    if name not in names:
        return "the Host header does not name this server"
    if port is not None and (given or 80) != port:
        return "the Host header names another port"
    return None


def origin_problem(
    origin: str | None, names: frozenset[str], port: int | None, scheme: str = "http"
) -> str | None:
    """Why ``origin`` (an Origin header) is foreign, or None when it is absent or this server's own.

    ``scheme`` is the one this server speaks; ``port`` None accepts any port (see :func:`host_problem`).
    """
    if origin is None:
        return None
    parts = urlsplit(origin)
    try:
        given = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the Origin header is malformed"
    if parts.scheme != scheme or (parts.hostname or "").lower() not in names:
        return "cross-origin requests are not accepted"
    if port is not None and given != port:
        return "cross-origin requests are not accepted"
    return None


def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return None


def guard(names: frozenset[str], *, any_port: bool = False, body: ErrorBody = _default_body) -> Any:
    """aiohttp middleware running the checks of this module's docstring, in that order.

    The port a request must name is the one its connection arrived on (port 0 in the settings
    picks a free one), unless ``any_port``.
    """

    def reject(status: int, error: str, field: str, reason: str) -> web.Response:
        return web.json_response(body(error, field, reason), status=status)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        port = None if any_port else _local_port(request)
        problem = host_problem(request.headers.get("Host"), names, port)
        if problem:
            return reject(421, "misdirected request", "Host", problem)
        problem = origin_problem(request.headers.get("Origin"), names, port, request.scheme)
        if problem:
            return reject(403, "forbidden", "Origin", problem)
        for name, value in request.query.items():
            if len(name) > MAX_PARAMETER or len(value) > MAX_PARAMETER:
                return reject(
                    400,
                    "invalid request",
                    name[:MAX_PARAMETER],
                    f"a query parameter is limited to {MAX_PARAMETER} characters",
                )
        if request.method in BODY_METHODS and request.content_type != "application/json":
            return reject(
                415, "unsupported media type", "Content-Type", "the request must be application/json"
            )
        return await handler(request)

    return check


def bearer_token(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None for anything else, never an exception."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_matches(header: str | None, expected: str) -> bool:
    """True when ``header`` carries ``expected`` as a bearer token (constant-time comparison)."""
    given = bearer_token(header)
    if given is None:
        return False
    # Bytes, not str: compare_digest refuses non-ASCII str, and a header may hold any byte.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def is_loopback(remote: str | None) -> bool:
    """True when the peer address ``remote`` is on this machine."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)
