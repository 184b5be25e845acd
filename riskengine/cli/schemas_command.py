"""``riskengine schemas register|export``: the Avro contracts for the registry and for standard clients.

``register`` sets each subject's compatibility (FULL_TRANSITIVE for the inputs, BACKWARD for the
engine's outputs: :func:`riskengine.contracts.topics.compatibility`) and registers the contracts
under the subjects of the actual topic names, suffix included (Confluent's TopicNameStrategy).

``export DIR`` writes every contract self-contained (every referenced type defined inline), the
form the registry gets, so a standard serializer (confluent-kafka's ``AvroSerializer``, Java's
``KafkaAvroSerializer``) can be handed the file as it is; plus ``subjects.json`` naming each file's
subject and compatibility.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.contracts.avro_codec import RegistryError, SchemaCatalog
from riskengine.contracts.schema_files import NAMESPACE, expanded_schema
from riskengine.contracts.topics import RECORD_TOPICS, compatibility, record_subjects
from riskengine.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schemas`` command."""
    parser = subparsers.add_parser("schemas", help="register or export the Avro contracts in schemas/")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    action = actions.add_parser(
        "register",
        help="set each subject's compatibility (inputs FULL_TRANSITIVE, outputs BACKWARD) and register "
        "the contracts under the topics' subjects (RISKENGINE_WORKER_TOPIC_SUFFIX included)",
    )
    action.set_defaults(handler=register_schemas)
    export = actions.add_parser(
        "export",
        help="write every contract self-contained (no references) into DIR, for standard serializers",
    )
    export.add_argument("dir", type=Path, metavar="DIR", help="folder to write (created if missing)")
    export.set_defaults(handler=export_schemas)


async def _register(settings: Settings) -> dict[str, int]:
    return await SchemaCatalog.for_settings(settings).register()


def register_schemas(args: argparse.Namespace, settings: Settings) -> int:
    """Register every contract; exit 1 with the registry's reason when one is refused."""
    try:
        ids = reaching(_register(settings), settings)
    except ServiceUnreachable as exc:
        return report("schemas", exc)
    except RegistryError as exc:
        print(f"riskengine schemas: {exc}")
        return 1
    subjects = record_subjects(settings.worker_topic_suffix)
    width = max(len(subject) for subject in subjects.values())
    for name, schema_id in ids.items():
        print(f"{subjects[name]:{width}} {name:20} id={schema_id} compatibility={compatibility(name)}")
    return 0


def export_schemas(args: argparse.Namespace, settings: Settings) -> int:
    """Write ``<namespace>.<Name>.avsc`` per contract and ``subjects.json``; no service needed."""
    folder: Path = args.dir
    folder.mkdir(parents=True, exist_ok=True)
    subjects = record_subjects(settings.worker_topic_suffix)
    index = {}
    for name in RECORD_TOPICS:
        file_name = f"{NAMESPACE}.{name}.avsc"
        (folder / file_name).write_text(json.dumps(expanded_schema(name), indent=2) + "\n")
        index[file_name] = {"subject": subjects[name], "compatibility": compatibility(name)}
        print(f"{folder / file_name}  ->  {subjects[name]} ({compatibility(name)})")
    (folder / "subjects.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0
