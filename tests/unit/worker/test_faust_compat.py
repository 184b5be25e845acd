"""The seam to Faust's and aiokafka's internals: pinned, and the only one.

Each test names the reach it checks, so after a faust-streaming or aiokafka upgrade a failure here
says which private attribute moved, instead of a lost trade in a crash test.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import re
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError

from riskengine.settings import Settings
from riskengine.worker import faust_compat
from riskengine.worker.faust_compat import SURFACE, Reach
from riskengine.worker.tables.user_state import PartitionNotHeld, UserStateTable
from tests.unit.worker.worker_fakes import paused_partitions, unconnected_fetcher

REPO = Path(__file__).resolve().parents[3]
#: Underscore names that are public by convention (namedtuple API, argparse's annotation type).
CONVENTIONAL = {"_replace", "_asdict", "_fields", "_make", "_SubParsersAction"}


def _owner(reach: Reach) -> type:
    module, _, name = reach.owner.rpartition(".")
    owner: type = getattr(importlib.import_module(module), name)
    return owner


def _upgrade_hint(reach: Reach) -> str:
    return (
        f"{reach.owner}.{reach.attribute} ({reach.kind}) is not what riskengine/worker/faust_compat.py "
        f"expects ({reach.why}); re-check that module against the installed faust-streaming "
        f"{version('faust-streaming')} and aiokafka {version('aiokafka')}"
    )


def test_the_installed_versions_are_the_ones_the_surface_was_checked_against():
    for package, checked in faust_compat.CHECKED_VERSIONS.items():
        assert version(package) == checked, (
            f"{package} {version(package)} is installed; riskengine/worker/faust_compat.py was checked "
            f"against {checked}: re-check every entry of SURFACE, then update CHECKED_VERSIONS"
        )


@pytest.mark.parametrize("reach", [r for r in SURFACE if r.kind == "method"], ids=lambda r: r.attribute)
def test_every_private_method_the_worker_uses_exists(reach: Reach):
    assert callable(getattr(_owner(reach), reach.attribute, None)), _upgrade_hint(reach)


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    """A worker-like app (the compat transport, a RocksDB table) that never connects to a broker."""
    return faust_compat.TransportApp(
        "compat-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False
    )


def test_the_rocksdb_store_keeps_its_partition_databases_where_the_worker_reads_them(app, tmp_path):
    settings = replace(Settings.from_env({}), topic_partitions=2)
    user_state = UserStateTable(app, settings)
    store: Any = user_state.table.data
    dbs_reach = next(r for r in SURFACE if r.attribute == "_dbs")
    assert isinstance(getattr(store, "_dbs", None), dict), _upgrade_hint(dbs_reach)

    # Faust opens an assigned partition's database (what its assign_partitions does).
    for partition in (0, 1):
        faust_compat.partition_db(user_state.table, partition)
    # Batched writes and reads through the reached databases, on a real RocksDB.
    user_state.write({(0, b"u-1"): b"one", (1, b"u-2"): b"two", (1, b"u-3"): b"three"})
    assert user_state.get(0, b"u-1") == b"one" and user_state.get(1, b"u-3") == b"three"
    assert set(faust_compat.held_partitions(user_state.table)) == {0, 1}
    # The stored changelog offset goes where Faust's recovery reads it.
    user_state.set_changelog_offset(1, 41)
    assert store.persisted_offset(faust.types.TP(user_state.changelog_topic, 1)) == 41
    # Faust's revocation drops the partition from the databases the store holds.
    store.revoke_partitions(user_state.table, {faust.types.TP(user_state.changelog_topic, 0)})
    assert 0 not in faust_compat.held_partitions(user_state.table), _upgrade_hint(dbs_reach)
    # A revoked partition is never opened again by a late read or write (Faust's accessor would).
    with pytest.raises(PartitionNotHeld):
        user_state.get(0, b"u-1")
    with pytest.raises(PartitionNotHeld):
        user_state.write({(0, b"u-1"): b"late", (1, b"u-2"): b"late"})
    with pytest.raises(PartitionNotHeld):
        user_state.set_changelog_offset(0, 7)
    assert set(faust_compat.held_partitions(user_state.table)) == {1}
    assert user_state.get(1, b"u-2") == b"two"


def test_the_app_gets_the_corrected_transport_and_its_consumer_keeps_committed_offsets(app):
    new_transport = next(r for r in SURFACE if r.attribute == "_new_transport")
    assert isinstance(app.transport, faust_compat.Transport), _upgrade_hint(new_transport)
    consumer = app.consumer
    assert isinstance(consumer, faust_compat.Consumer)
    committed = next(r for r in SURFACE if r.attribute == "_committed_offset")
    assert hasattr(consumer._committed_offset, "get"), _upgrade_hint(committed)


def test_faust_still_seeks_through_perform_seek_after_a_rebalance():
    # The correction in faust_compat.Consumer.perform_seek only runs if Faust's recovery calls it.
    from faust.tables.recovery import Recovery

    source = inspect.getsource(Recovery._resume_streams)
    assert "perform_seek" in source, (
        "faust.tables.recovery.Recovery._resume_streams no longer calls consumer.perform_seek: "
        "re-check the post-rebalance seek correction in riskengine/worker/faust_compat.py"
    )
    assert source.index("perform_seek") < source.index("flow_control.resume"), (
        "Faust now clears the agents' queues before seeking: re-check faust_compat.Consumer.perform_seek"
    )


@pytest.mark.parametrize("wait_ms", [0, 10])
async def test_fetches_are_held_for_more_records_while_rounds_bring_some_and_long_polls_after_one_without(
    app, monkeypatch, wait_ms
):
    app.fetch_wait_ms = wait_ms
    consumer: Any = app.consumer
    fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    monkeypatch.setattr(consumer._thread, "_consumer", SimpleNamespace(_fetcher=fetcher))
    tp = faust.types.TP("unrouted", 0)
    # Two rounds with records, one that timed out, one empty, one with records again.
    rounds: list[tuple[Any, Any]] = [
        ({tp: []}, None),
        ({tp: []}, None),
        (None, None),
        ({}, None),
        ({tp: []}, None),
    ]
    seen: list[tuple[int, int]] = []

    async def next_records(wait_s: float) -> tuple[Any, Any]:
        seen.append((fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms))
        if len(seen) > len(rounds):
            consumer._stopped.set()
            return None, None
        return rounds[len(seen) - 1]

    monkeypatch.setattr(consumer, "_wait_next_records", next_records)
    await consumer._drain_messages(SimpleNamespace(_stopped=asyncio.Event()))
    held, long_poll = (faust_compat.FETCH_MIN_BYTES, wait_ms), (1, 1500)
    # What each round's fetches went out with: set after the round before.
    if wait_ms:
        assert seen == [long_poll, held, held, long_poll, long_poll, held]
    else:
        assert seen == [long_poll] * 6


def test_aiokafka_reads_the_fetch_settings_as_it_builds_each_request():
    from aiokafka.consumer.fetcher import Fetcher

    reach = next(r for r in SURFACE if r.attribute == "_fetch_min_bytes")
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start), _upgrade_hint(reach)
    source = inspect.getsource(Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms," in source and "self._fetch_min_bytes," in source, _upgrade_hint(reach)
    init = inspect.getsource(Fetcher.__init__)
    assert "self._fetch_min_bytes = fetch_min_bytes" in init, _upgrade_hint(reach)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in init, _upgrade_hint(reach)


async def test_the_aiokafka_consumer_has_the_client_the_metadata_refresh_uses():
    reach = next(r for r in SURFACE if r.attribute == "_client")
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    try:
        assert callable(getattr(getattr(consumer, "_client", None), "force_metadata_update", None)), (
            _upgrade_hint(reach)
        )
    finally:
        await consumer.stop()


def _defined_names(trees: list[ast.Module]) -> set[str]:
    """Underscore names riskengine defines itself (functions, classes, attributes, module names)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return names


def test_no_module_but_faust_compat_reaches_into_private_attributes_of_other_packages():
    paths = sorted([*(REPO / "riskengine").rglob("*.py"), *(REPO / "devtools").rglob("*.py")])
    trees = {path: ast.parse(path.read_text(), str(path)) for path in paths}
    ours = _defined_names(list(trees.values())) | CONVENTIONAL
    found = []
    for path, tree in trees.items():
        if path.name == "faust_compat.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in ours:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: .{name}")
    assert found == [], "private attributes reached outside riskengine/worker/faust_compat.py:\n" + "\n".join(
        found
    )


async def test_a_partition_that_stops_fetching_is_paused_in_aiokafka_and_still_drained(app, monkeypatch):
    consumer: Any = app.consumer
    trades, orders = faust.types.TP("trades", 0), faust.types.TP("orders", 0)
    kafka = unconnected_fetcher(consumer, monkeypatch, [trades, orders])
    consumer._set_active_tps({trades, orders})
    faust_compat.stop_fetching(consumer, [trades, faust.types.TP("not-assigned", 3)])
    await asyncio.sleep(0)  # the consumer thread's turn
    assert paused_partitions(kafka) == {("trades", 0)}
    # Still in the set getmany drains: what was fetched before the pause is handed out.
    assert consumer._get_active_partitions() == {trades, orders}
    faust_compat.resume_fetching(consumer, [trades])
    await asyncio.sleep(0)
    assert paused_partitions(kafka) == set()
    await kafka.stop()


async def test_a_changelog_partition_faust_pauses_is_paused_in_aiokafka_too(app, monkeypatch):
    table = app.Table("user-state", partitions=2)
    consumer: Any = app.consumer
    changelog, trades = faust.types.TP(table.changelog_topic.get_topic_name(), 1), faust.types.TP("trades", 1)
    kafka = unconnected_fetcher(consumer, monkeypatch, [changelog, trades])
    consumer.pause_partitions({changelog, trades})
    await asyncio.sleep(0)
    assert paused_partitions(kafka) == {(changelog.topic, 1)}  # an input keeps Faust's own pause
    assert not consumer._get_active_partitions() & {changelog, trades}
    consumer.resume_partitions({changelog})
    await asyncio.sleep(0)
    assert paused_partitions(kafka) == set()
    await kafka.stop()


def test_aiokafka_sends_no_fetch_to_a_broker_while_a_partitions_fetched_records_wait_undrained():
    # Why fetch_partitions pauses what Faust stops draining. Should this change, the pause may no
    # longer be needed (it does no harm).
    from aiokafka.consumer.fetcher import Fetcher

    actions = inspect.getsource(Fetcher._get_actions_per_node)
    assert "if tp in self._records:" in actions and "backoff_by_nodes[node_id].append(backoff)" in actions
    assert "if node_id in backoff_by_nodes:" in actions
    assert inspect.signature(Fetcher.__init__).parameters["prefetch_backoff"].default == 0.1


def test_a_rebalance_calls_the_hooks_before_the_revocation_waits_for_acks(app):
    # The listener runs in Faust's consumer thread: on_rebalance_start synchronously, then the
    # revocation (with its wait for acks) handed to the app's loop.
    from faust.transport.drivers.aiokafka import ConsumerRebalanceListener

    calls: list[str] = []
    app.rebalance_started.append(lambda: calls.append("hook"))

    class Thread:
        def __init__(self) -> None:
            self.app = app

        def on_partitions_revoked(self, revoked: set[Any]) -> Any:
            calls.append("revoked")
            return None

    ConsumerRebalanceListener(Thread()).on_partitions_revoked([])  # type: ignore[arg-type]
    assert calls == ["hook", "revoked"]
    assert app.rebalancing


def test_faust_waits_only_for_the_events_still_referenced_when_partitions_go(app):
    # An agent that lets go of held events relies on this (see faust_compat's module docstring).
    from weakref import WeakSet

    from faust.transport.consumer import Consumer

    reach = next(r for r in SURFACE if r.attribute == "_unacked_messages")
    assert isinstance(app.consumer._unacked_messages, WeakSet), _upgrade_hint(reach)
    assert "self._unacked_messages" in inspect.getsource(Consumer.wait_empty), _upgrade_hint(reach)
    assert "gc.collect()" in inspect.getsource(Consumer.wait_empty), _upgrade_hint(reach)


def test_the_aiokafka_consumer_behind_fausts_is_where_last_fetch_ms_reads_it(app):
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    thread = next(r for r in SURFACE if r.attribute == "_thread")
    inner = next(r for r in SURFACE if r.attribute == "_consumer")
    assert isinstance(getattr(app.consumer, "_thread", None), AIOKafkaConsumerThread), _upgrade_hint(thread)
    assert "_consumer" in vars(AIOKafkaConsumerThread), _upgrade_hint(inner)
    assert callable(AIOKafkaConsumer.last_poll_timestamp)
    # Before the thread starts there is no aiokafka consumer: nothing was fetched.
    assert faust_compat.last_fetch_ms(app.consumer, faust.types.TP("crypto-orders", 0)) is None


async def test_a_stopping_app_fences_its_batches_and_has_the_agents_let_go_first(app):
    # Faust's stop waits for every record handed out (wait_empty): the held ones are let go before.
    calls: list[tuple[str, bool]] = []
    app.rebalance_started.append(lambda: calls.append(("hook", app.fence.rebalancing)))
    generation = app.fence.generation
    await app.on_stop()
    assert calls == [("hook", True)] and app.fence.generation == generation + 1


class Route:
    """A batch route that records what it is handed, and can start a rebalance while it waits."""

    def __init__(self, app: Any, rebalance_on_room: bool = False) -> None:
        self.app = app
        self.rebalance_on_room = rebalance_on_room
        self.delivered: list[tuple[list[int], bool]] = []
        #: what a pipeline holds until it acks (Faust tracks the messages weakly)
        self.held: list[faust_compat.Delivery] = []

    async def room(self) -> None:
        if self.rebalance_on_room:
            self.app.consumer_generation_id += 1

    def deliver(self, events: list[faust_compat.Delivery], more_waiting: bool) -> None:
        self.delivered.append(([event.message.offset for event in events], more_waiting))
        self.held += events


def _records(tp: Any, offsets: list[int]) -> list[Any]:
    from aiokafka.structs import ConsumerRecord

    return [
        ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, ()) for offset in offsets
    ]


async def test_the_batch_path_hands_a_partitions_records_to_its_route_with_fausts_bookkeeping(app):
    # Pins _to_message, _read_offset, _add_gap, _unacked_messages and the commit counters the
    # batch path uses instead of Faust's per-record drain loop.
    tp = faust.types.TP("crypto-trades", 0)
    consumer = app.consumer
    route = Route(app)
    app.route_batches(app.topic("crypto-trades"), route)
    assert app.batch_routes == {"crypto-trades": route}
    for name in ("_read_offset", "_commit_every", "_n_acked"):
        reach = next(r for r in SURFACE if r.attribute == name)
        assert hasattr(consumer, name), _upgrade_hint(reach)
    consumer.highwater = lambda tp: 12  # the partition's end as the fetch response gave it
    consumer._read_offset[tp] = 5  # after a seek to 5: 3 and 4 are fetched again, not handed out
    await consumer._deliver_list(tp, _records(tp, [3, 4, 5, 6, 9]), route, app.consumer_generation_id)
    assert route.delivered == [([5, 6, 9], True)]  # 10 and 11 are still to come
    assert consumer._read_offset[tp] == 9
    # 7 and 8 are missing (compaction, transaction markers): a gap Faust counts as acked (the
    # interval its own loop records for the same bounds).
    assert [(gap.begin, gap.end) for gap in consumer._gap[tp]] == [(7, 10)]
    tracked = {message.offset for message in consumer._unacked_messages}
    assert tracked == {5, 6, 9}
    # Acked through the route's Acks, the records count for the next commit (once the conductor has
    # indexed the subscription, as it does before the consumer fetches).
    await app.topics._update_indices()
    assert app.topics.acks_enabled_for("crypto-trades")
    acks = faust_compat.Acks(app)
    message = next(m for m in consumer._unacked_messages if m.offset == 5)
    assert acks.ack(faust_compat.Delivery(message)) and not acks.ack(faust_compat.Delivery(message))
    assert consumer._acked[tp] == [5] and message not in consumer._unacked_messages
    # The others acked too, the revocation's wait finds nothing left to wait for.
    for other in list(consumer._unacked_messages):
        assert isinstance(other, faust_compat.BatchMessage) and acks.ack(faust_compat.Delivery(other))
    consumer._clean_unacked_messages()
    assert not consumer._unacked_messages and sorted(consumer._acked[tp]) == [5, 6, 9]
    assert repr(message) == "<BatchMessage crypto-trades/0@5 acked>"


def test_what_faust_reads_of_a_tracked_message_a_batch_message_has():
    # Consumer.ack, the revocation's wait_empty and its cleaning of the set are all of Faust that
    # touches the batch path's messages (the streams that read more never see them).
    from faust.transport.consumer import Consumer

    reach = next(r for r in SURFACE if r.attribute == "_drain_messages")
    read: set[str] = set()
    for method, name in (
        (Consumer.ack, "message"),
        (Consumer.wait_empty, "m"),
        (Consumer._clean_unacked_messages, "message"),
    ):
        read |= set(re.findall(rf"\b{name}\.(\w+)", inspect.getsource(method)))
    assert read == {"acked", "tp", "offset", "topic", "refcount"}, _upgrade_hint(reach)
    assert read <= set(faust_compat.BatchMessage.__slots__), _upgrade_hint(reach)


async def test_records_handed_out_as_a_rebalance_starts_are_let_go_not_delivered(app):
    tp = faust.types.TP("crypto-trades", 1)
    consumer = app.consumer
    route = Route(app, rebalance_on_room=True)
    await consumer._deliver_list(tp, _records(tp, [0, 1]), route, app.consumer_generation_id)
    assert route.delivered == [] and not consumer._unacked_messages
    assert consumer._read_offset.get(tp) is None  # the seek after the rebalance decides


def test_the_drain_loop_the_batch_path_replaces_is_the_one_checked():
    # Faust's own loop: a record at a time through wait_first and the conductor; the override keeps
    # its bookkeeping (read offset, gaps, commit_every) and its generation check.
    from faust.transport.consumer import Consumer

    reach = next(r for r in SURFACE if r.attribute == "_drain_messages")
    source = inspect.getsource(Consumer._drain_messages)
    for part in (
        "getmany(timeout=1.0)",
        "_add_gap(tp, r_offset + 1, offset)",
        "self._n_acked >= commit_every",
    ):
        assert part in source, _upgrade_hint(reach)
    assert "consumer_generation_id" in inspect.getsource(Consumer.getmany), _upgrade_hint(reach)
    assert "self.track_message" not in source  # streams track what they take: the batch path does it


async def test_resuming_the_flow_fetches_each_standby_again_from_what_the_recovery_took(app, monkeypatch):
    """A standby's records dropped while the flow was stopped come again: on resuming, each standby
    changelog partition is sought to the offset after the last one the recovery took (the start
    when it took none); active ones are the recovery's own; a revoked one is skipped."""
    user_state = UserStateTable(app, replace(Settings.from_env({}), topic_partitions=4))
    tps = [faust.types.TP(user_state.changelog_topic, partition) for partition in range(4)]
    recovery: Any = app.tables.recovery
    recovery.standby_tps.update(tps[:3])
    recovery.active_tps.add(tps[2])
    recovery.standby_offsets.update({tps[0]: 41, tps[1]: -1, tps[2]: 9})
    consumer: Any = app.consumer
    sought: dict[Any, int] = {}

    async def seek_wait(partitions: dict[Any, int]) -> None:
        if tps[3] in partitions:
            raise IllegalStateError("revoked")
        sought.update(partitions)

    monkeypatch.setattr(consumer, "seek_wait", seek_wait)
    consumer.stop_flow()
    consumer.resume_flow()
    assert consumer.flow_active
    await asyncio.gather(*consumer._standby_seeks)
    assert sought == {tps[0]: 42, tps[1]: 0}
    # Taken offsets are read at the resumption, not when the seek runs.
    recovery.standby_offsets[tps[0]] = 50
    recovery.standby_tps.add(tps[3])
    consumer.resume_flow()
    recovery.standby_offsets[tps[0]] = 60
    await asyncio.gather(*consumer._standby_seeks)
    assert sought == {tps[0]: 51, tps[1]: 0}
