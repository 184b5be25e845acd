"""``riskengine topics create``: create the engine's topics with the configured layout."""

from __future__ import annotations

import argparse

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.contracts.topics import TopicLayoutError, ensure_topics, topic_specs
from riskengine.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``topics`` command."""
    parser = subparsers.add_parser("topics", help="create the engine's Kafka topics")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create missing topics (RISKENGINE_TOPIC_PARTITIONS, RISKENGINE_TOPIC_REPLICATION_FACTOR); "
        "fail if an existing one has another partition count",
    )
    create.set_defaults(handler=create_topics)


def create_topics(args: argparse.Namespace, settings: Settings) -> int:
    """Create the topics; exit 1 naming the topic whose layout is wrong, or Kafka unreachable."""
    try:
        result = reaching(ensure_topics(settings, topic_specs(settings)), settings)
    except ServiceUnreachable as exc:
        return report("topics", exc)
    except TopicLayoutError as exc:
        print(f"riskengine topics: {exc}")
        return 1
    for name, state in result.items():
        print(
            f"{name:24} {state:8} partitions={settings.topic_partitions} "
            f"replication={settings.topic_replication_factor}"
        )
    return 0
