"""``riskengine dashboard``: serve the live dashboard and the reporting views until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal

from riskengine.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dashboard`` command."""
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the live dashboard and the reporting views",
        description="Serves the dashboard page, live alerts (Server-Sent Events from the alerts topic), "
        "the workers' combined /stats and /users/{id} (RISKENGINE_DASHBOARD_WORKER_URLS) and the reporting "
        "views over Elasticsearch, on RISKENGINE_DASHBOARD_HOST:RISKENGINE_DASHBOARD_PORT. "
        "RISKENGINE_WORKER_TOPIC_SUFFIX selects the topic and indices of a suffixed deployment.",
    )
    parser.add_argument("--host", help="interface to listen on (default: RISKENGINE_DASHBOARD_HOST)")
    parser.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (default: RISKENGINE_DASHBOARD_PORT)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted; 0 after a clean stop, 1 when the port cannot be bound, 2 on bad settings."""
    # Imported here so the other commands do not load aiohttp's server and the Kafka clients.
    from riskengine.dashboard.server import worker_urls

    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"riskengine dashboard: --port must be 0 to 65535, got {args.port}")
        return 2
    settings = dataclasses.replace(
        settings,
        dashboard_host=args.host or settings.dashboard_host,
        dashboard_port=settings.dashboard_port if args.port is None else args.port,
    )
    try:
        worker_urls(settings)
    except ValueError as exc:
        print(f"riskengine dashboard: bad setting: {exc}")
        return 2
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from riskengine.dashboard.server import FEED, serving, worker_urls

    if settings.log_level != "debug":
        # One line per registry, Elasticsearch and page request would bury the dashboard's own log.
        for name in ("httpx", "elastic_transport.transport", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with serving(settings) as (app, url):
            print(f"riskengine dashboard: {url}", flush=True)
            print(
                f"  alerts from topic {app[FEED].topic}; workers {', '.join(worker_urls(settings))}; "
                f"Elasticsearch {settings.elasticsearch_url}. Ctrl-C stops.",
                flush=True,
            )
            await stop.wait()
            print("riskengine dashboard: stopping", flush=True)
    except OSError as exc:  # The port is taken or the address cannot be bound.
        address = f"{settings.dashboard_host}:{settings.dashboard_port}"
        print(f"riskengine dashboard: cannot listen on {address}: {exc}")
        return 1
    print("riskengine dashboard: stopped", flush=True)
    return 0
