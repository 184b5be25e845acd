"""``riskengine schemas register``: register the Avro contracts with the schema registry."""

from __future__ import annotations

import argparse
import asyncio

from riskengine.contracts.avro_codec import RegistryError, SchemaCatalog, registry_client
from riskengine.contracts.topics import RECORD_TOPICS, value_subject
from riskengine.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schemas`` command."""
    parser = subparsers.add_parser("schemas", help="register the Avro contracts in schemas/")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    action = actions.add_parser(
        "register", help="set each subject's compatibility to BACKWARD and register the current contracts"
    )
    action.set_defaults(handler=register_schemas)


async def _register(settings: Settings) -> dict[str, int]:
    catalog = SchemaCatalog(registry_client(settings))
    for topic in RECORD_TOPICS.values():
        await catalog.set_compatibility(value_subject(topic), "BACKWARD")
    return await catalog.register()


def register_schemas(args: argparse.Namespace, settings: Settings) -> int:
    """Register every contract; exit 1 with the registry's reason when one is refused."""
    try:
        ids = asyncio.run(_register(settings))
    except RegistryError as exc:
        print(f"riskengine schemas: {exc}")
        return 1
    for name, schema_id in ids.items():
        print(f"{value_subject(RECORD_TOPICS[name]):32} {name:20} id={schema_id} compatibility=BACKWARD")
    return 0
