"""The ``riskengine`` command: one sub-command per module in this package.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``handler`` to a
function ``(args, settings) -> exit code``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from riskengine.settings import Settings, SettingsError

from . import (
    bench,
    bench_e2e,
    connector,
    dashboard,
    demo,
    evaluate,
    generate,
    replay,
    schemas,
    snapshot,
    stack,
    topics,
)

COMMANDS = (
    stack,
    topics,
    schemas,
    replay,
    bench,
    bench_e2e,
    generate,
    evaluate,
    snapshot,
    connector,
    dashboard,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="riskengine", description="Real-time trade risk and market-abuse surveillance."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``riskengine`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"riskengine: bad setting: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code: int = args.handler(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
