"""``riskengine connector deploy|status|delete|config``: the Elasticsearch sink on Kafka Connect.

Exit codes: 0 success (``status``: the connector and its task run); 1 Connect or Elasticsearch
unreachable, the connector refused, failed or not running (``status``, ``delete``: not deployed).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json

from riskengine.search import sink_connector as connector
from riskengine.search.sink_connector import DEFAULT_NAME, ConnectorError
from riskengine.settings import Settings

say = functools.partial(print, flush=True)

_EPILOG = """exit codes:
  0  done (status: the connector and every task are RUNNING)
  1  Kafka Connect or Elasticsearch unreachable, the connector refused, FAILED or not running,
     or (status, delete) not deployed
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``connector`` command with its actions."""
    parser = subparsers.add_parser(
        "connector",
        help="the Kafka Connect sink indexing analysed trades and alerts into Elasticsearch",
        description="Deploy, inspect or remove the Elasticsearch sink connector on the Kafka Connect\n"
        "cluster at RISKENGINE_CONNECT_URL (topics and indices follow RISKENGINE_WORKER_TOPIC_SUFFIX).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in (
        (
            "deploy",
            run_deploy,
            "install the index templates, create or update the connector, wait until it runs",
        ),
        ("status", run_status, "show the connector's and its tasks' state (with the trace of a failure)"),
        ("delete", run_delete, "remove the connector (the indices and their documents stay)"),
        (
            "config",
            run_config,
            "print the connector config deploy would send, as JSON (passwords are ${env:...} references)",
        ),
    ):
        action = actions.add_parser(
            name,
            help=text,
            description=text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        action.add_argument("--name", default=DEFAULT_NAME, help=f"connector name (default {DEFAULT_NAME})")
        if name == "deploy":
            action.add_argument(
                "--timeout",
                type=float,
                default=connector.DEPLOY_TIMEOUT,
                help="seconds to wait for the connector and its task to run (default %(default)s)",
            )
        action.set_defaults(handler=handler)


def run_deploy(args: argparse.Namespace, settings: Settings) -> int:
    """``connector deploy``."""
    try:
        result = asyncio.run(connector.deploy(settings, name=args.name, wait_s=args.timeout, say=say))
    except ConnectorError as exc:
        say(f"riskengine connector: {exc}")
        return 1
    say(result.describe())
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """``connector status``."""
    try:
        result = asyncio.run(connector.status(settings, args.name))
    except ConnectorError as exc:
        say(f"riskengine connector: {exc}")
        return 1
    if result is None:
        say(f"connector {args.name}: not deployed on {settings.connect_url} (riskengine connector deploy)")
        return 1
    say(result.describe())
    failure = result.failure()
    if failure is not None:
        say(failure)
    return 0 if result.running else 1


def run_delete(args: argparse.Namespace, settings: Settings) -> int:
    """``connector delete``."""
    try:
        deleted = asyncio.run(connector.delete(settings, args.name))
    except ConnectorError as exc:
        say(f"riskengine connector: {exc}")
        return 1
    say(f"connector {args.name}: {'deleted' if deleted else 'was not deployed'}")
    return 0 if deleted else 1


def run_config(args: argparse.Namespace, settings: Settings) -> int:
    """``connector config``: printed as sent, since it holds references to the passwords, not them."""
    say(json.dumps(connector.connector_config(settings, name=args.name), indent=2))
    return 0
