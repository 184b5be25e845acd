"""The ``riskengine`` command: one sub-command per ``*_command`` module in this package.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``handler``
to a function ``(args, settings) -> exit code``. Installed distributions add commands through the
``riskengine.commands`` entry points (the development tools add ``stack``, ``demo``, ``bench`` and
``bench-e2e``); without them, those names answer with what to install instead of argparse's
"invalid choice".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from types import ModuleType
from typing import Protocol

from riskengine.errors import SettingsError
from riskengine.logs import configure as configure_logging
from riskengine.settings import Settings

from . import (
    connector_command,
    dashboard_command,
    evaluate_command,
    generate_command,
    reference_command,
    replay_command,
    schemas_command,
    snapshot_command,
    tail_command,
    topics_command,
)

COMMANDS: tuple[ModuleType, ...] = (
    topics_command,
    schemas_command,
    replay_command,
    reference_command,
    generate_command,
    evaluate_command,
    snapshot_command,
    connector_command,
    dashboard_command,
    tail_command,
)
#: Entry-point group of the commands other distributions add.
PLUGIN_GROUP = "riskengine.commands"
#: Commands of the development tools, named when they are not installed.
DEVTOOLS_COMMANDS = ("stack", "demo", "bench", "bench-e2e", "chaos")


class CommandModule(Protocol):
    """What a command module provides."""

    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def plugin_commands() -> list[CommandModule]:
    """The command modules installed distributions declare in :data:`PLUGIN_GROUP`, by name."""
    return [entry.load() for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name)]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="riskengine", description="Real-time trade risk and market-abuse surveillance."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (*COMMANDS, *plugin_commands()):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``riskengine`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    installed = {entry.name for entry in entry_points(group=PLUGIN_GROUP)}
    if arguments and arguments[0] in DEVTOOLS_COMMANDS and arguments[0] not in installed:
        print(
            f"riskengine {arguments[0]}: part of the development tools, which are not installed here "
            "(pip install -e ./devtools, or make install in a checkout)",
            file=sys.stderr,
        )
        return 2
    args = build_parser().parse_args(arguments)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"riskengine: bad setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    code: int = args.handler(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
