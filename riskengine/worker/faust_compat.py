"""The one seam to Faust's and aiokafka's internals.

Faust owns the group membership, the tables' changelogs and standby recovery, and the web server;
the worker needs a little more than Faust's public API gives (batched store writes, a corrected
post-rebalance seek, a metadata refresh). Every reach into a private attribute of faust-streaming
or aiokafka is in this module and listed in :data:`SURFACE` with why it is needed and the version
it was checked against. ``tests/unit/worker/test_faust_compat.py`` checks the whole surface against
the installed packages, so an upgrade that changes it fails there, naming the reach, instead of in
a crash test.

Checked against faust-streaming 0.15.3 and aiokafka 0.14.0 (pinned in ``setup.cfg``).

The reaches:

- ``faust.stores.rocksdb.Store._dbs`` and ``._db_for_partition``: the open rocksdict database of
  each table partition. The worker writes a batch's states in one ``WriteBatch`` per partition (one
  WAL append instead of one per trade) and checkpoints those databases for snapshots; Faust's store
  API writes one key per call and needs a current event.
- ``faust.transport.consumer.Consumer._committed_offset`` and ``._is_changelog_tp``: which stream
  partitions have a committed offset after Faust's post-rebalance seek (see
  :class:`Consumer.perform_seek` for why that seek needs correcting).
- ``faust.tables.manager.TableManager.recovery`` (public, but not declared on ``TableManagerT``):
  the standby partitions and the offsets the recovery took, which :meth:`Consumer.resume_flow`
  seeks the standbys back to.
- ``aiokafka.AIOKafkaConsumer._client``: ``force_metadata_update`` on a group-less consumer whose
  topics were created moments ago (their partitions are otherwise unknown until the next periodic
  refresh).
- ``faust.App._new_transport`` (overridden by :class:`TransportApp`): the one hook that gives the
  app a transport of its own, here :class:`Transport`.
- ``faust.transport.consumer.Consumer._buffered_partitions``: partitions Faust's own stream flow
  control stopped fetching, whose fetched records ``getmany`` still yields; the batch path keeps
  that rule. ``Consumer.pause_partitions`` only takes partitions out of the set ``getmany``
  drains, and its ``getmany`` drops the records of a partition paused before they were handed out
  (aiokafka's position has moved past them), which the per-user agent's first version of input
  pausing ran into (a worker stalled with thousands of order events never delivered). The agent
  now pauses a partition in the aiokafka fetcher and leaves it in Faust's set
  (:func:`stop_fetching`).
- ``faust.transport.consumer.Consumer._unacked_messages`` is a ``WeakSet``: before it lets
  partitions go, Faust waits until every message handed to an agent is acked or no longer
  referenced. An agent that holds events back lets go of them when a rebalance starts
  (:attr:`TransportApp.rebalance_started`), so the rebalance does not wait for them; they were
  never acked, so they come again after it. The last event a stream handed out stays referenced
  by the stream's generator until the next one arrives (none does during a rebalance), so a
  dropped event is also taken out of the set (:func:`untrack`): Faust then neither waits for it
  nor commits past it.

- ``faust.transport.consumer.Consumer._drain_messages`` (overridden by :class:`Consumer`), with
  ``_wait_next_records``, ``_to_message``, ``_read_offset``, ``_add_gap``, ``_commit_every`` and
  ``_n_acked``: the batch path. Faust's loop hands every record to the conductor one at a time,
  each through ``wait_first`` (a task and two futures), a channel queue, a stream step and an ack,
  about 200 us per event. The agents' topics (:attr:`TransportApp.batch_routes`) get each fetched
  partition's records as one list instead, in offset order, with the same read-offset, gap and
  commit bookkeeping, each record as a :class:`BatchMessage` (what Faust's consumer reads of a
  tracked message, without the rest of its ``ConsumerMessage``); other topics keep Faust's
  per-record path (``_to_message``).
- ``faust.transport.consumer.ThreadDelegateConsumer._thread`` and its ``_consumer``: the
  aiokafka consumer behind Faust's, for ``last_poll_timestamp`` (public there): when a fetch
  response last brought a partition's end, so the per-user agent can tell an end fetched after an
  event arrived from an older one (:func:`last_fetch_ms`).

- The aiokafka consumer's ``_fetcher`` and the fetcher's ``_fetch_min_bytes`` and
  ``_fetch_max_wait_ms``, read each time it builds a fetch request (:meth:`Consumer._batch_fetches`).
  Faust builds the consumer with a fixed ``fetch_max_wait_ms`` of 1.5 s and aiokafka's
  ``fetch_min_bytes`` of 1: a long poll, which the broker answers as soon as any record is there.
  Under a steady load that is a fetch response every few records, and each costs the consumer
  thread about as much as the records it brings. While records flow the broker may now hold a
  fetch until :data:`FETCH_MIN_BYTES` are there or :attr:`TransportApp.fetch_wait_ms` has passed;
  after a round that brought none the long poll is back (held fetches of an idle worker, one every
  10 ms, cost a tenth of a core).

Not a private reach, but a rule of aiokafka's fetcher relied on (``Fetcher._get_actions_per_node``):
no fetch request goes to a broker while any of its partitions' fetched records wait undrained, for
up to ``prefetch_backoff`` (100 ms) after they came. A partition Faust stops draining must stop
being fetched too (:func:`fetch_partitions`): table changelogs once recovered
(:meth:`Consumer.pause_partitions`), inputs the agent pauses (:func:`stop_fetching`).

Not a private reach, but an order relied on: Faust's aiokafka rebalance listener calls the public
``App.on_rebalance_start`` synchronously, in Faust's consumer thread, before it hands the
revocation (and that wait) to the app's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, MutableSet
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as driver
from faust.types import TransportT

from riskengine.worker.commit import Fence

log = logging.getLogger(__name__)

#: What a fetch waits for on the broker (up to :attr:`TransportApp.fetch_wait_ms`) when batching.
FETCH_MIN_BYTES = 64 * 1024
#: The versions this surface was checked against (``setup.cfg`` pins them).
CHECKED_VERSIONS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


@dataclass(frozen=True)
class Reach:
    """One private attribute the worker uses: where it is, what it must be, and why."""

    owner: str
    attribute: str
    #: "instance attribute" (set in ``__init__``), "method" or "class attribute"
    kind: str
    why: str


SURFACE: tuple[Reach, ...] = (
    Reach(
        "faust.stores.rocksdb.Store",
        "_dbs",
        "instance attribute",
        "partition -> open rocksdict database: which partitions the store holds, for batched writes "
        "(StateStore) and checkpoints (snapshots)",
    ),
    Reach(
        "faust.stores.rocksdb.Store",
        "_db_for_partition",
        "method",
        "the open rocksdict database of a partition (opened on first use), for batched writes and reads",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_committed_offset",
        "instance attribute",
        "tp -> committed offset, filled by perform_seek: partitions without one are rewound",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_is_changelog_tp",
        "method",
        "tells table changelog partitions (never rewound here) from stream partitions",
    ),
    Reach(
        "faust.app.base.App",
        "_new_transport",
        "method",
        "overridden by TransportApp to install Transport (the corrected post-rebalance seek)",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_buffered_partitions",
        "instance attribute",
        "partitions whose fetched records getmany still hands out while Faust's stream flow control "
        "stops fetching them (on_buffer_full): the batch path keeps that rule",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_unacked_messages",
        "instance attribute",
        "a WeakSet: a rebalance waits only for events still in it; an agent takes out the events "
        "it drops as a rebalance starts (untrack)",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_drain_messages",
        "method",
        "overridden by Consumer: the fetched records of a routed topic reach its agent a partition's "
        "list at a time (the batch path); other topics go through Faust's per-record loop",
    ),
    Reach(
        "mode.services.Service",
        "_stopped",
        "instance attribute",
        "the consumer's and the fetcher's stop flags, which end the drain loop (as in Faust's own)",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_wait_next_records",
        "method",
        "the fetch round the drain loop waits for: (records by partition, the active partitions)",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_to_message",
        "method",
        "an aiokafka record -> Faust's ConsumerMessage (what acks and commits are counted on)",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_read_offset",
        "instance attribute",
        "tp -> last offset handed out: records below it (re-fetched after a seek) are not handed out",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_add_gap",
        "method",
        "offsets missing from a partition (compaction, transaction markers) count as acked",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_commit_every",
        "instance attribute",
        "broker_commit_every: commit after this many acks, as Faust's drain loop does",
    ),
    Reach(
        "faust.transport.consumer.Consumer",
        "_n_acked",
        "instance attribute",
        "acks since the last commit (for _commit_every)",
    ),
    Reach(
        "faust.transport.consumer.ThreadDelegateConsumer",
        "_thread",
        "instance attribute",
        "the consumer thread that owns the aiokafka consumer",
    ),
    Reach(
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread",
        "_consumer",
        "class attribute",
        "the aiokafka consumer (None until the thread started), for last_poll_timestamp",
    ),
    Reach(
        "aiokafka.consumer.consumer.AIOKafkaConsumer",
        "_fetcher",
        "instance attribute",
        "its Fetcher (None until started), whose fetch requests the drain loop batches",
    ),
    Reach(
        "aiokafka.consumer.fetcher.Fetcher",
        "_fetch_min_bytes",
        "instance attribute",
        "the bytes a fetch request waits for, read as each request is built (Faust passes no value: 1)",
    ),
    Reach(
        "aiokafka.consumer.fetcher.Fetcher",
        "_fetch_max_wait_ms",
        "instance attribute",
        "the longest a fetch request waits for them, read as each request is built (Faust: 1,500)",
    ),
    Reach(
        "aiokafka.consumer.consumer.AIOKafkaConsumer",
        "_client",
        "instance attribute",
        "its AIOKafkaClient, for force_metadata_update on topics created moments ago",
    ),
)


# -- stores -----------------------------------------------------------------------------------


def held_partitions(table: Any) -> Mapping[int, Any]:
    """Partition -> open rocksdict database of ``table``'s RocksDB store (active and standby).

    Faust opens a partition's database when the partition is assigned and drops it from this
    mapping when the partition is revoked.
    """
    dbs: Mapping[int, Any] = table.data._dbs
    return dbs


def partition_db(table: Any, partition: int) -> Any:
    """The open rocksdict database of ``table``'s ``partition`` (Faust opens it on first use)."""
    return table.data._db_for_partition(partition)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The committed offset of the stream partition ``tp`` as of the last rebalance (None: none)."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def last_fetch_ms(consumer: Any, tp: Any) -> int | None:
    """Wall-clock ms at which a fetch response last brought ``tp``'s end (None: never, or not
    assigned). Read from Faust's consumer thread's aiokafka consumer; an int, so safe across threads."""
    kafka = consumer._thread._consumer
    if kafka is None:
        return None
    try:
        fetched: int | None = kafka.last_poll_timestamp(tp)
    except (AssertionError, KeyError):  # not assigned (any more)
        return None
    return fetched


def untrack(consumer: Any, messages: Iterable[Any]) -> None:
    """Faust stops waiting for ``messages`` (dropped unacked; they come again after the rebalance)."""
    unacked = consumer._unacked_messages
    for message in messages:
        unacked.discard(message)


def stop_fetching(consumer: Any, tps: Iterable[Any]) -> None:
    """Stop fetching ``tps`` while still handing out what was fetched for them.

    The aiokafka fetcher pauses them (:func:`fetch_partitions`); they stay in Faust's active set,
    so ``getmany`` still drains the records fetched before the pause and the batch path hands them
    to the agent (out of that set, as Faust's ``pause_partitions`` or ``on_buffer_full`` put them,
    those records would wait undrained and hold up every fetch).
    """
    fetch_partitions(consumer, tps, fetch=False)


def resume_fetching(consumer: Any, tps: Iterable[Any]) -> None:
    """Fetch ``tps`` again (see :func:`stop_fetching`)."""
    fetch_partitions(consumer, tps, fetch=True)


def fetch_partitions(consumer: Any, tps: Iterable[Any], fetch: bool) -> None:
    """Pause (``fetch`` False) or resume the aiokafka fetcher's fetching of ``tps``, on the consumer
    thread, which owns the fetcher (a resume resolves a future of its event loop).

    Why pause there: aiokafka sends no fetch request to a broker while any partition's fetched
    records wait undrained, for up to its ``prefetch_backoff`` (100 ms) after they came. A partition
    that Faust no longer drains but aiokafka still fetches stops every input for that long each
    time records arrive for it. Partitions not assigned by the time the thread runs this (a
    rebalance meanwhile; a new assignment starts unpaused) are left out.
    """
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    thread = consumer._thread
    loop = getattr(thread, "thread_loop", None)
    if not wanted or thread._consumer is None or loop is None or loop.is_closed():
        return

    def apply() -> None:
        kafka = thread._consumer
        if kafka is None:
            return
        assigned = kafka.assignment()
        owned = [tp for tp in wanted if tp in assigned]
        if owned:
            (kafka.resume if fetch else kafka.pause)(*owned)

    try:
        loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the consumer thread's loop closed meanwhile: the worker is stopping
        log.debug("consumer thread stopped; fetching of %d partitions left as it is", len(wanted))


def recovering(app: faust.App) -> bool:
    """True while ``app`` rebalances or its tables recover (their databases are being rewritten)."""
    recovery = getattr(app.tables, "recovery", None)  # created when the app starts
    return bool(app.rebalancing) or recovery is None or not recovery.completed.is_set()


# -- the batch path ---------------------------------------------------------------------------


class BatchMessage:
    """A fetched record as the batch path hands it out, tracked and acked in Faust's consumer.

    It holds what the agents read (topic, partition, offset, key, value) and what Faust's consumer
    reads of a message it tracks: ``tp``, ``offset``, ``topic`` and ``acked`` in ``Consumer.ack``,
    ``acked`` when the revocation's ``wait_empty`` cleans its set, ``refcount`` in that wait's
    report; weak references for that set. Faust's ``ConsumerMessage`` sets about twenty attributes
    per record (about 1 us, 3 % of a worker's CPU at 5,000 trades/s) for the per-record stream's
    bookkeeping, which the batch path does not use.
    """

    __slots__ = ("__weakref__", "acked", "key", "offset", "partition", "refcount", "topic", "tp", "value")

    def __init__(self, tp: Any, record: Any) -> None:
        self.tp = tp
        self.topic: str = record.topic
        self.partition: int = record.partition
        self.offset: int = record.offset
        self.key: bytes | None = record.key
        self.value: bytes | None = record.value
        self.acked = False
        self.refcount = 0

    def __repr__(self) -> str:
        return f"<BatchMessage {self.topic}/{self.partition}@{self.offset}{' acked' if self.acked else ''}>"


class Delivery:
    """One record handed to a batch route: its :class:`BatchMessage`, where the agents read it
    (``.message``)."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


class BatchRoute(Protocol):
    """An agent that takes its topics' records a fetched partition's list at a time."""

    async def room(self) -> None:
        """Wait until the agent can take more records (it is started and its filling batch is not full)."""
        ...

    def deliver(self, events: list[Delivery], more_waiting: bool) -> None:
        """Take ``events`` (one partition's, in offset order); ``more_waiting``: the partition's end
        on the broker is beyond the last of them."""
        ...


class Acks:
    """Acks delivered records in Faust's consumer (what it commits from), as a stream's ``ack`` would."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    def ack(self, event: Delivery) -> bool:
        """Ack ``event``'s record; False when it was acked before."""
        acked: bool = self._app.consumer.ack(event.message)
        return acked


# -- clients ----------------------------------------------------------------------------------


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Fetch the cluster metadata now (topics created moments ago show their partitions)."""
    await consumer._client.force_metadata_update()


# -- the post-rebalance seek ------------------------------------------------------------------


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer with a corrected :meth:`perform_seek`.

    After every rebalance Faust seeks each stream partition back to its committed offset, because
    records fetched during the rebalance may have been dropped. Two faults in that step lost
    trades in the crash tests, and a third lost a standby's state:

    1. *The seek did not stop the flow.* Faust resumes the stream partitions, then seeks, then
       clears the agents' input queues. Records fetched before the seek kept reaching the queue
       while it ran, the clear dropped those, and the same fetch then went on with the records
       after them: the agent saw offset 202 and then 222 of one partition, and 203-221 were never
       analyzed. The flow is now stopped for the seek; Faust resumes it after the clear, from the
       new positions.
    2. *A partition without a committed offset was not moved.* aiokafka's ``seek_to_committed``
       skips a partition whose committed offset is missing or 0. When a worker died before its
       first commit on a partition, the worker that took it over had fetched it from the start,
       dropped those records during the rebalance, and went on from the end of that fetch (944 of
       3,000 trades in one crash test). Such partitions are now sought to their beginning, which is
       where ``auto_offset_reset`` (``earliest``, see :func:`riskengine.worker.app.app_options`)
       put them.
    3. *A changelog partition's records dropped with the flow stopped were not fetched again*
       (:meth:`resume_flow`): a standby lost the keys written before it started.

    A trade read again after the seek is recognized by its offset and not applied twice (see
    :mod:`riskengine.worker.agents.user_agent`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._standby_seeks: set[asyncio.Future[None]] = set()
        #: whether the fetcher's requests are batched now, and its own (long-poll) settings
        self._fetch_batching = False
        self._long_poll: tuple[int, int] | None = None

    def resume_flow(self) -> None:
        """Resume the flow, and fetch the standbys' changelogs again from what the recovery took.

        A fetch round that comes while the flow is stopped is dropped (Faust's loop and
        :meth:`_drain_messages` alike); a stream partition's records come again from the seek to
        its committed offset, a changelog partition's did not. A standby that had just started
        reading a changelog from the beginning lost its first records while :meth:`perform_seek`
        held the flow, its later records moved the persisted offset past the gap, and the worker
        that took the partition over recovered without the keys before it (the chaos ``sequence``
        scenario). The offsets are taken now, before any record of the resumed flow is taken, so
        the seek repeats records the recovery skips (it takes an offset once) and never leaves one
        out. Active changelog partitions are the recovery's own (paused once it is done).
        """
        super().resume_flow()
        tables: Any = self.app.tables  # TableManagerT does not declare its recovery
        recovery = tables.recovery
        targets = {}
        for tp in recovery.standby_tps - recovery.active_tps:
            taken = recovery.standby_offsets.get(tp)
            targets[tp] = 0 if taken is None or taken < 0 else taken + 1
        if targets:
            seeking = asyncio.ensure_future(self._seek_standbys(targets))
            self._standby_seeks.add(seeking)  # a reference until it is done
            seeking.add_done_callback(self._standby_seeks.discard)

    def pause_partitions(self, tps: Iterable[Any]) -> None:
        """Faust's pause (its own bookkeeping: the partitions leave the set ``getmany`` drains), and
        for table changelog partitions the aiokafka fetcher's pause too (:meth:`_fetch_changelogs`)."""
        tps = set(tps)
        super().pause_partitions(tps)
        self._fetch_changelogs(tps, fetch=False)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        """Faust's resume, and the aiokafka fetcher's for table changelog partitions."""
        tps = set(tps)
        super().resume_partitions(tps)
        self._fetch_changelogs(tps, fetch=True)

    def _fetch_changelogs(self, tps: set[Any], fetch: bool) -> None:
        """Pause (or resume) the aiokafka fetcher's fetching of the table changelog partitions in
        ``tps`` as Faust pauses (resumes) them (why: :func:`fetch_partitions`).

        An active table's changelog partition is paused once its recovery is done, and the worker
        writes it all the time: each one that got its first record since the last rebalance stopped
        every input for about 110 ms, most of the p99 at 1,000 trades/s. Input partitions keep
        Faust's rule: a recovery pauses them only while it rewrites the tables.
        """
        fetch_partitions(self, [tp for tp in tps if self._is_changelog_tp(tp)], fetch)

    async def _seek_standbys(self, targets: dict[Any, int]) -> None:
        for tp, offset in targets.items():
            try:
                await self.seek_wait({tp: offset})
            except IllegalStateError:
                log.info("%s/%s revoked before the seek", tp.topic, tp.partition)
            except Exception as exc:  # the next resumption seeks again
                log.warning("could not seek the standby %s/%s: %r", tp.topic, tp.partition, exc)

    async def perform_seek(self) -> None:
        """Stop the flow, then seek every stream partition to its committed offset or beginning."""
        # The fetch under way stops at its next record; Faust resumes the flow after clearing the
        # queues, so the next record an agent sees comes from the new position.
        self.stop_flow()
        await super().perform_seek()
        # perform_seek has just recorded every committed offset above zero.
        uncommitted = {
            tp
            for tp in self.assignment()
            if not self._is_changelog_tp(tp) and not self._committed_offset.get(tp)
        }
        if not uncommitted:
            return
        log.info(
            "no committed offset: consuming %s from the beginning",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(uncommitted)),
        )
        # A seek to a looked-up offset, on the consumer's thread: seek_to_beginning would leave the
        # position unknown until the fetcher's next round (Faust's livelock check fails on that),
        # and a seek from this thread races the fetcher's own use of its buffers.
        for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
            try:
                await self.seek_wait({tp: offset})
            except IllegalStateError:
                # Revoked meanwhile: its next owner seeks it after its own assignment.
                log.info("%s/%s revoked before the seek", tp.topic, tp.partition)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's drain loop, with the batch path for the topics in :attr:`TransportApp.batch_routes`.

        Each fetch round, each partition's records go to its topic's route as one list, after the
        same bookkeeping Faust's loop does per record: records below the read offset (fetched again
        after a seek) are left out, missing offsets are added as gaps, each record is tracked as
        handed out (a rebalance waits for it until it is acked or let go), and every
        ``broker_commit_every`` acks the offsets are committed. A round stops at a new consumer
        generation or when the flow stops (a rebalance), as Faust's ``getmany`` does.
        """
        routes: Mapping[str, BatchRoute] = getattr(self.app, "batch_routes", {})
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                self._batch_fetches(bool(records))
                # Faust's getmany may return at once, again and again: let other tasks run.
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_while_stopped()
                    continue
                generation = self.app.consumer_generation_id
                for tp, fetched in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    route = routes.get(tp.topic)
                    if route is None:
                        await self._deliver_each(tp, fetched)
                    else:
                        await self._deliver_list(tp, fetched, route, generation)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise

    def _batch_fetches(self, busy: bool) -> None:
        """Let the broker hold fetch requests for :data:`FETCH_MIN_BYTES` (at most
        :attr:`TransportApp.fetch_wait_ms`) while rounds bring records (``busy``); the fetcher's own
        long poll once a round brought none. Set from this thread: the consumer thread reads both
        values as it builds its next request, so one request may go out with the old pair."""
        wait_ms: int = getattr(self.app, "fetch_wait_ms", 0)
        if not wait_ms or busy == self._fetch_batching:
            return
        kafka = self._thread._consumer
        fetcher = None if kafka is None else kafka._fetcher
        if fetcher is None:
            return
        if self._long_poll is None:
            self._long_poll = (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = (
            (FETCH_MIN_BYTES, wait_ms) if busy else self._long_poll
        )
        self._fetch_batching = busy

    async def _seek_while_stopped(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # as Faust's getmany: the next round seeks again
            log.warning("exception performing seek when flow not active %r", exc)

    async def _deliver_list(self, tp: Any, fetched: list[Any], route: BatchRoute, generation: int) -> None:
        read_offset = self._read_offset.get(tp)
        # Faust types the set as holding its Messages; it reads only what a BatchMessage has.
        unacked: MutableSet[Any] = self._unacked_messages
        events: list[Delivery] = []
        for record in fetched:
            offset = record.offset
            if read_offset is not None and offset < read_offset:
                continue
            if read_offset and offset - read_offset > 1:
                await self._add_gap(tp, read_offset + 1, offset)
            message = BatchMessage(tp, record)
            unacked.add(message)
            events.append(Delivery(message))
            read_offset = offset
        if not events:
            return
        await self._commit_if_due()
        await route.room()
        if not self.flow_active or self.app.consumer_generation_id != generation:
            # A rebalance started meanwhile: Faust seeks back after it; these come again.
            untrack(self, [event.message for event in events])
            return
        last = events[-1].message.offset
        highwater = self.highwater(tp)
        route.deliver(events, highwater is not None and last + 1 < highwater)
        self._read_offset[tp] = last

    async def _deliver_each(self, tp: Any, fetched: list[Any]) -> None:
        """Faust's own per-record delivery (through the conductor to the topic's channels)."""
        for record in fetched:
            offset = record.offset
            read_offset = self._read_offset.get(tp)
            if read_offset is not None and offset < read_offset:
                continue
            if read_offset and offset - read_offset > 1:
                await self._add_gap(tp, read_offset + 1, offset)
            await self._commit_if_due()
            await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
            self._read_offset[tp] = offset

    async def _commit_if_due(self) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class Transport(driver.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer


class TransportApp(faust.App):
    """A Faust app whose Kafka transport is :class:`Transport`, with :attr:`rebalance_started` and
    the rebalance :attr:`fence` of the commit protocol."""

    def __init__(self, id: str, **options: Any) -> None:
        super().__init__(id, **options)
        #: called as every rebalance starts, before the revocation waits for acks (from Faust's
        #: consumer thread, so a hook must hand its work to its own event loop thread-safely), and
        #: as the app stops, before Faust waits for them again
        self.rebalance_started: list[Callable[[], None]] = []
        #: the rebalance generation every batch is checked against (riskengine.worker.commit)
        self.fence = Fence()
        #: topic -> the agent that takes its records in lists (see Consumer._drain_messages)
        self.batch_routes: dict[str, BatchRoute] = {}
        #: longest the broker holds a fetch until FETCH_MIN_BYTES are there while records flow (0:
        #: never; see Consumer._batch_fetches)
        self.fetch_wait_ms = 0
        self.on_partitions_assigned.connect(self._end_rebalance)

    def on_rebalance_start(self) -> None:
        """Faust's bookkeeping, a new fence generation, then the :attr:`rebalance_started` hooks."""
        super().on_rebalance_start()
        self._fence_and_let_go()

    async def on_stop(self) -> None:
        """The agents let go of what they hold, as when a rebalance starts, then Faust stops.

        Faust's stop waits until every record handed to an agent is acked or let go: the records an
        agent holds back (for the other input, for a watermark) are neither while nothing more
        arrives, and the worker waited until it was killed. Let go unacked, they come again to
        whoever consumes their partitions next; batches in flight stop at their next step.
        """
        self._fence_and_let_go()
        await super().on_stop()

    def route_batches(self, topic: Any, route: BatchRoute) -> None:
        """Subscribe to ``topic`` (a Faust topic, acked) and hand its records to ``route`` in lists."""
        for name in topic.topics:
            self.batch_routes[name] = route
        # What iterating the topic in an agent would do: the conductor subscribes to it.
        self.topics.add(topic)

    def _fence_and_let_go(self) -> None:
        self.fence.begin_rebalance()
        for hook in self.rebalance_started:
            hook()

    def _end_rebalance(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.fence.end_rebalance()

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)
