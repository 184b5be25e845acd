"""``riskengine stack up|down|status``: the local Kafka, schema registry and S3 servers.

Exit codes:

* ``up``: 0 when every selected service is ready; 1 when one failed (download, port taken,
  start-up, readiness timeout, set-up), the message naming the service and its log;
  2 when the settings point a service somewhere the stack cannot serve (not 127.0.0.1).
* ``down``: 0 when no process the stack started is left running; 1 when one could not be stopped;
  2 as for ``up``.
* ``status``: 0 when every selected service is ready; 1 otherwise (stopped, starting, stale pid
  file, port taken by another program); 2 as for ``up``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools

from riskengine.settings import Settings
from riskengine_devtools.stack import build_services, service_names
from riskengine_devtools.stack.runner import down, stack_lock, status, up
from riskengine_devtools.stack.service import StackConfigError, StackPaths

_EXIT_CODES = """exit codes:
  up      0 all ready, 1 a service failed (the message names its log)
  down    0 nothing the stack started is left running, 1 a process could not be stopped
  status  0 all ready, 1 any service stopped, starting, stale or its port taken
  all     2 the settings point a service off this machine (the stack binds 127.0.0.1 only)
"""

say = functools.partial(print, flush=True)


def _service_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(service_names()))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown service {', '.join(unknown) or '(none given)'}; choose from {','.join(service_names())}"
        )
    return names


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``stack`` command with its ``up``, ``down`` and ``status`` actions."""
    parser = subparsers.add_parser(
        "stack",
        help="run the local services (Kafka, schema registry, S3) without containers",
        description="Download (once, into RISKENGINE_CACHE_DIR), start, inspect and stop the local\n"
        "services; logs, pid files and data go to RISKENGINE_STACK_DIR.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in (
        ("up", run_up, "start what is not running and wait until every service is ready (idempotent)"),
        ("down", run_down, "stop the processes the stack started, in reverse order"),
        ("status", run_status, "show each service's address and state; exit 0 only if all are ready"),
    ):
        action = actions.add_parser(
            name,
            help=text,
            description=text,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        action.add_argument(
            "--only",
            type=_service_list,
            default=[],
            metavar="NAMES",
            help=f"comma-separated subset of {','.join(service_names())} (default: all)",
        )
        action.set_defaults(handler=handler)


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    """``stack up``."""
    try:
        services = build_services(settings, args.only)
        with stack_lock(StackPaths.from_settings(settings), say):
            return asyncio.run(up(services, settings.stack_start_timeout, say))
    except StackConfigError as exc:
        say(f"riskengine stack: {exc}")
        return 2


def run_down(args: argparse.Namespace, settings: Settings) -> int:
    """``stack down``."""
    try:
        services = build_services(settings, args.only)
        with stack_lock(StackPaths.from_settings(settings), say):
            return asyncio.run(down(services, say))
    except StackConfigError as exc:
        say(f"riskengine stack: {exc}")
        return 2


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """``stack status``."""
    try:
        return asyncio.run(status(build_services(settings, args.only), say))
    except StackConfigError as exc:
        say(f"riskengine stack: {exc}")
        return 2
