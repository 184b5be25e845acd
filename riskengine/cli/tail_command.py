"""``riskengine tail TOPIC``: a topic's records as JSON lines, Avro decoded.

The readable counterpart of ``kafka-console-consumer``: one JSON object per record with its
topic, partition, offset, timestamp, key (UTF-8, the engine's keys are userIds or symbols), value
and headers. Values in the Confluent wire format are decoded with their writer's schema from the
registry; anything else is shown as JSON when it parses as JSON (the repartition topics), as
UTF-8 text, or base64 (``valueBase64``) when it is neither: a dead letter's original bytes always
show. No consumer group: nothing is committed, no other reader is disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.connections import client_options
from riskengine.contracts.avro_codec import MAGIC_BYTE, DecodeError, SchemaCatalog, UnknownSchemaId
from riskengine.contracts.topics import TOPICS, topic_names
from riskengine.errors import CommandError
from riskengine.settings import Settings
from riskengine.worker import repartition

#: How long the metadata of an existing topic may take to give the consumer its partitions.
ASSIGN_TIMEOUT_S = 10.0


class UnknownTopic(CommandError):
    """The topic does not exist on the broker."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tail`` command."""
    parser = subparsers.add_parser(
        "tail",
        help="print a topic's records as JSON lines (Avro decoded through the registry)",
        description="TOPIC is an engine topic (crypto-trades, risk-alerts, ...: "
        "RISKENGINE_WORKER_TOPIC_SUFFIX is appended) or any other topic name, used as it is. Follows "
        "the topic from its end until "
        "Ctrl-C, unless --from-beginning, --max or --idle say otherwise.",
    )
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    parser.add_argument("--max", type=int, metavar="N", help="stop after N records")
    parser.add_argument("--idle", type=float, metavar="S", help="stop once no record came for S seconds")
    parser.add_argument("--partition", type=int, action="append", metavar="P", help="only partition P")
    parser.set_defaults(handler=run_tail)


def topic_name(settings: Settings, topic: str) -> str:
    """An engine topic's actual name (suffix appended); any other name as it is."""
    engine = dict(zip(TOPICS.all(), topic_names(settings).all(), strict=True))
    return engine.get(topic, topic)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def record_line(message: Any, decode: Callable[[bytes], Any]) -> str:
    """One JSON line for ``message``; ``decode`` turns a wire-format value into a record (or raises)."""
    line: dict[str, Any] = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": message.timestamp,
        "key": None
        if message.key is None
        else (_text(message.key) or base64.b64encode(message.key).decode()),
    }
    value = message.value
    if value is None:
        line["value"] = None
    else:
        try:
            line["value"] = _jsonable(decode(value))
        except DecodeError:
            if value[:1] == bytes([repartition.FORMAT]):
                with contextlib.suppress(repartition.RepartitionError):
                    line["value"] = repartition.document(repartition.decode(value))
        if "value" not in line:
            text = _text(value)
            try:
                line["value"] = json.loads(text) if text is not None else None
            except ValueError:
                line["value"] = text
            if text is None:
                line["valueBase64"] = base64.b64encode(value).decode()
    if message.headers:
        line["headers"] = {k: _text(v) or base64.b64encode(v).decode() for k, v in message.headers}
    encoded: str = json.dumps(line, ensure_ascii=False)
    return encoded


async def tail(settings: Settings, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    """Print records of ``args.topic``; returns how many."""
    name = topic_name(settings, args.topic)
    catalog = SchemaCatalog.for_settings(settings)
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, group_id=None)
    try:
        await consumer.start()
        # The list of every topic: asking for the one topic could make the broker auto-create it.
        if name not in await consumer.topics():
            raise UnknownTopic(f"topic {name} does not exist on {settings.kafka_bootstrap_servers}")
        consumer.subscribe([name])  # no group: every partition is assigned to this consumer
        for _ in range(int(ASSIGN_TIMEOUT_S / 0.05)):
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        chosen = sorted(
            tp for tp in consumer.assignment() if not args.partition or tp.partition in args.partition
        )
        if not chosen:
            raise UnknownTopic(f"topic {name} has no partition {args.partition} to read")
        if len(chosen) < len(consumer.assignment()):
            consumer.assign(chosen)
        if args.from_beginning:
            await consumer.seek_to_beginning(*chosen)
        else:
            await consumer.seek_to_end(*chosen)
        count = 0
        loop = asyncio.get_running_loop()
        last = loop.time()
        while args.max is None or count < args.max:
            batches = await consumer.getmany(timeout_ms=200, max_records=args.max and args.max - count)
            if not batches:
                if args.idle is not None and loop.time() - last >= args.idle:
                    break
                continue
            last = loop.time()
            for message in (m for tp in sorted(batches) for m in batches[tp]):
                out(await _line(catalog, message))
                count += 1
        return count
    finally:
        await consumer.stop()


async def _line(catalog: SchemaCatalog, message: Any) -> str:
    value = message.value
    if value is not None and len(value) >= 5 and value[0] == MAGIC_BYTE:
        schema_id = int.from_bytes(value[1:5], "big")
        if schema_id not in catalog:
            # Not in the registry (or not Avro at all): the record is shown undecoded.
            with contextlib.suppress(UnknownSchemaId):
                await catalog.fetch(schema_id)
    return record_line(message, catalog.decode_as_written)


def run_tail(args: argparse.Namespace, settings: Settings) -> int:
    """``riskengine tail``: exit 0 after Ctrl-C or the limits, 1 when a service or the topic is missing."""

    def out(line: str) -> None:
        print(line, flush=True)

    # The records are the output; the consumer's subscription chatter is not.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        reaching(tail(settings, args, out), settings)
    except ServiceUnreachable as exc:
        return report("tail", exc)
    except UnknownTopic as exc:
        print(f"riskengine tail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `riskengine tail TOPIC | head`: the reader has had enough
        sys.stderr.close()
        return 0
    return 0
