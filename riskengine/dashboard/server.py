"""The dashboard: an aiohttp app beside the workers (``riskengine dashboard``).

Endpoints:

- ``GET /``: the page (``static/index.html``; plain HTML, JS and CSS, no build step, no CDN);
- ``GET /api/alerts/stream``: Server-Sent Events, one ``alert`` event per RiskAlert read from the
  alerts topic (id = alertId; ``Last-Event-ID`` resumes from the backlog), ``dropped`` when this
  browser fell behind and missed some, and a comment every 15 s to keep the connection open;
- ``GET /api/reporting/...``: the reporting views (:mod:`riskengine.search.reporting`);
- ``GET /api/stats``: every worker's ``/stats`` combined (a worker that does not answer is listed
  as down, the others still count);
- ``GET /api/users/{userId}``: the user's detection state from the first worker that answers
  (a worker forwards the request to the user's owner; its status, 404 included, passes through);
- ``GET /api/health``: the alert feed's state and the number of connected browsers.

One alerts consumer (:class:`~riskengine.dashboard.feed.AlertFeed`) serves every browser.

Every request first passes :func:`riskengine.web_guard.guard` (Host naming this server, no foreign
Origin, query parameters of at most 256 characters, JSON POSTs). At most
``RISKENGINE_DASHBOARD_MAX_STREAMS`` event streams are open at once (one more is answered 503). An
error answer names no internal address and carries no exception text (those go to the log): a
browser, or a page that made it ask, learns nothing about the services behind the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from riskengine.contracts.topics import topic_names
from riskengine.dashboard.feed import CLOSED, AlertFeed, Broadcaster
from riskengine.search.reporting import ParameterError, check_user_id, create_reporting_app
from riskengine.settings import Settings
from riskengine.web_guard import allowed_names, guard

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Seconds between keep-alive comments on an idle event stream (proxies close silent connections).
HEARTBEAT_S = 15.0
#: A worker that takes longer than this to answer counts as down for that request.
WORKER_TIMEOUT_S = 3.0

FEED = web.AppKey("feed", AlertFeed)
WORKERS = web.AppKey("workers", list[str])
SESSION = web.AppKey("session", aiohttp.ClientSession)
MAX_STREAMS = web.AppKey("max_streams", int)
#: Headers the dashboard sends the workers (their token, when one is set).
WORKER_HEADERS = web.AppKey("worker_headers", dict[str, str])
#: What a browser is told instead of a reporting view's 5xx body (which names Elasticsearch's URL).
_REPORTING_ERRORS = {
    502: "the search backend refused the query (details in the dashboard's log)",
    503: "the search backend is unavailable; try again later",
}


def worker_urls(settings: Settings) -> list[str]:
    """The worker base URLs of ``RISKENGINE_DASHBOARD_WORKER_URLS``; ValueError names a bad one."""
    urls = [url.strip().rstrip("/") for url in settings.dashboard_worker_urls.split(",") if url.strip()]
    if not urls:
        raise ValueError("RISKENGINE_DASHBOARD_WORKER_URLS names no worker")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"RISKENGINE_DASHBOARD_WORKER_URLS: {url!r} is not an http(s) URL")
    return urls


def aggregate_stats(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """One view of every worker's ``/stats``: sums, merged counters, and each worker's state.

    ``workers`` holds ``{"url", "up", "stats"}`` or ``{"url", "up": False, "error"}`` per worker.
    """
    lag: dict[str, int] = {}
    dead: Counter[str] = Counter()
    alerts: Counter[str] = Counter()
    rows = []
    throughput = 0.0
    trades_in = analyzed = 0
    rules_version: int | None = None
    for worker in workers:
        if not worker["up"]:
            rows.append({"url": worker["url"], "up": False, "error": worker["error"]})
            continue
        stats = worker["stats"]
        own_lag = {str(p): int(v) for p, v in stats.get("consumerLag", {}).items()}
        for partition, value in own_lag.items():
            # During a rebalance two workers may both report a partition; the larger lag is the truth.
            lag[partition] = max(value, lag.get(partition, 0))
        dead.update(stats.get("deadLetters", {}))
        alerts.update(stats.get("alertsByPattern", {}))
        throughput += float(stats.get("throughputPerSecond", 0.0))
        trades_in += int(stats.get("tradesIn", 0))
        analyzed += int(stats.get("analyzed", 0))
        if "rulesVersion" in stats:
            rules_version = max(rules_version or 0, int(stats["rulesVersion"]))
        rows.append(
            {
                "url": worker["url"],
                "up": True,
                "uptimeSeconds": stats.get("uptimeSeconds"),
                "throughputPerSecond": stats.get("throughputPerSecond"),
                "partitions": sorted(own_lag, key=int),
                "consumerLag": sum(own_lag.values()),
            }
        )
    return {
        "workers": rows,
        "workersUp": sum(1 for row in rows if row["up"]),
        "workersDown": sum(1 for row in rows if not row["up"]),
        "throughputPerSecond": throughput,
        "tradesIn": trades_in,
        "analyzed": analyzed,
        "consumerLag": dict(sorted(lag.items(), key=lambda item: int(item[0]))),
        "consumerLagTotal": sum(lag.values()),
        "deadLetters": dict(dead),
        "deadLettersTotal": sum(dead.values()),
        "alertsByPattern": dict(alerts.most_common()),
        "alertsTotal": sum(alerts.values()),
        "rulesVersion": rules_version,
    }


async def _worker_stats(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, Any]:
    try:
        async with session.get(f"{url}/stats", headers=headers) as response:
            if response.status != 200:
                return {"url": url, "up": False, "error": f"HTTP {response.status}"}
            return {"url": url, "up": True, "stats": await response.json()}
    except TimeoutError:
        return {"url": url, "up": False, "error": "timed out"}
    except (aiohttp.ClientError, ValueError) as exc:
        # The exception text may name addresses behind the worker; the log keeps it.
        log.warning("worker %s: %s", url, exc or type(exc).__name__)
        return {"url": url, "up": False, "error": "unreachable or not answering JSON"}


async def _stats(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    headers = request.app[WORKER_HEADERS]
    workers = await asyncio.gather(*(_worker_stats(session, url, headers) for url in request.app[WORKERS]))
    document = aggregate_stats(list(workers))
    feed = request.app[FEED]
    document["feed"] = {"state": feed.state, "received": feed.received, "undecodable": feed.undecodable}
    return web.json_response(document)


async def _user(request: web.Request) -> web.Response:
    user = request.match_info["user_id"]
    try:
        check_user_id(user)
    except ParameterError as exc:
        return web.json_response({"error": str(exc), "parameter": exc.parameter}, status=400)
    for url in request.app[WORKERS]:
        try:
            async with request.app[SESSION].get(
                f"{url}/users/{quote(user, safe='')}", headers=request.app[WORKER_HEADERS]
            ) as response:
                body = await response.read()
                return web.Response(
                    body=body,
                    status=response.status,
                    content_type=response.content_type or "application/json",
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("worker %s: %s", url, exc or type(exc).__name__)
    return web.json_response({"error": "no worker answered"}, status=503)


async def _health(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    return web.json_response(
        {"feed": feed.state, "topic": feed.topic, "subscribers": len(feed.broadcaster.subscriptions)}
    )


def _event(kind: str, data: Any, event_id: str | None = None) -> bytes:
    lines = [f"event: {kind}"]
    if event_id:
        lines.append(f"id: {event_id}")
    # json.dumps never emits a newline, so the payload is one data line.
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


async def _stream(request: web.Request) -> web.StreamResponse:
    broadcaster = request.app[FEED].broadcaster
    limit = request.app[MAX_STREAMS]
    # Counted and subscribed with no await in between, so concurrent requests cannot all pass.
    if len(broadcaster.subscriptions) >= limit:
        return web.json_response(
            {"error": f"too many alert streams open (at most {limit}); try again later"},
            status=503,
            headers={"Retry-After": "5"},
        )
    subscription = broadcaster.subscribe(request.headers.get("Last-Event-ID"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        # The browser reconnects 2 s after a broken connection (EventSource's retry field).
        await response.write(b"retry: 2000\n\n")
        while True:
            item = await subscription.get(HEARTBEAT_S)
            dropped = subscription.take_dropped()
            if dropped:
                await response.write(_event("dropped", {"count": dropped}))
            if item is CLOSED:
                break
            if item is None:
                await response.write(b": keep-alive\n\n")
            elif isinstance(item, dict):
                await response.write(_event("alert", item, item.get("alertId")))
    except ConnectionResetError:  # The browser went away (aiohttp's client errors derive from it).
        pass
    finally:
        broadcaster.unsubscribe(subscription)
    return response


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@web.middleware
async def _hide_internal_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Replace a reporting view's 502/503 body, which names Elasticsearch's URL, with a plain one."""
    response = await handler(request)
    replacement = _REPORTING_ERRORS.get(response.status)
    if replacement is None or not request.path.startswith("/api/reporting/"):
        return response
    if isinstance(response, web.Response) and response.body is not None:
        log.warning("%s answered %d: %s", request.path, response.status, response.text)
    return web.json_response({"error": replacement}, status=response.status)


def create_dashboard(settings: Settings) -> web.Application:
    """The dashboard app for ``settings`` (worker URLs, topic suffix, Kafka, registry, Elasticsearch).

    Its alert consumer and HTTP client start with the app and stop with it; on shutdown every open
    event stream ends first, so stopping never waits on a browser.
    """
    names = allowed_names(settings.dashboard_host, settings.web_allowed_hosts)
    app = web.Application(middlewares=[guard(names), _hide_internal_errors])
    app[WORKERS] = worker_urls(settings)
    app[MAX_STREAMS] = settings.dashboard_max_streams
    token = settings.worker_admin_token.get()
    # The workers' state views are behind their token when one is set (the same setting).
    app[WORKER_HEADERS] = {"Authorization": f"Bearer {token}"} if token else {}
    app[FEED] = AlertFeed(settings, topic_names(settings).alerts, Broadcaster())

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S))
        app[FEED].start()
        yield
        await app[FEED].stop()
        await app[SESSION].close()

    async def end_streams(app: web.Application) -> None:
        app[FEED].broadcaster.close()

    app.cleanup_ctx.append(resources)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/", _index)
    app.router.add_get("/api/alerts/stream", _stream)
    app.router.add_get("/api/stats", _stats)
    app.router.add_get("/api/users/{user_id}", _user)
    app.router.add_get("/api/health", _health)
    app.add_subapp("/api/reporting", create_reporting_app(settings))
    app.router.add_static("/static/", STATIC, append_version=False)
    return app


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[web.Application, str]]:
    """Serve the dashboard on ``dashboard_host:dashboard_port`` until the block ends; yields (app, URL).

    Port 0 picks a free port (the URL tells which).
    """
    app = create_dashboard(settings)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.dashboard_host, settings.dashboard_port)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield app, f"http://{host}:{port}"
    finally:
        await runner.cleanup()
