"""Reference data and market contexts: every worker reads their compacted topics whole.

These are global tables in the Faust sense (every worker holds every key and follows new messages
without a restart), implemented as a small reader rather than ``app.GlobalTable``: a GlobalTable
whose changelog is an existing topic hangs faust-streaming 0.15.3's partition assignor (the group
never finishes its first assignment). :class:`ReferenceReader` assigns itself every partition of
``user-profiles``, ``risk-rules``, ``risk-reference`` and ``risk-market-context`` (no consumer
group, nothing committed), reads them from the beginning before the worker starts consuming
trades, and then follows them. Values are the raw Avro messages, decoded when they change, never
per trade:

- :class:`ProfileView` is the ``profiles`` mapping of the core's ``ReferenceData``: a live,
  read-only view that caches each decoded profile with the bytes it came from.
- :class:`RulesHolder` holds the active :class:`~riskengine.core.Rules`: a message with a higher
  version than the active one is activated as soon as it is read; an invalid message is logged and
  counted and the previous version stays active; a lower version is ignored (and counted).
- :class:`ReferenceHolder` does the same for the ``RiskReference`` record (sanctioned users and
  countries, restricted countries, market data), validated by the core's own
  ``ReferenceData.from_document`` (:mod:`riskengine.contracts.reference_record`); a version not
  above the active one is ignored and counted (unless it is the active record again).

- :class:`MarketContextHolder` keeps the market contexts of ``risk-market-context`` (a bounded
  history per symbol) and each market partition's progress, which tells whether the context a
  trade needs is final (see :mod:`riskengine.core.market`).

:class:`ReferenceFeed` puts them together: ``data`` is the core's ``ReferenceData`` (the live
profiles with the active lists and markets), replaced whenever a reference version activates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import DecodeError, SchemaCache
from riskengine.contracts.reference_record import NO_REFERENCE, VersionedReference, decode_reference
from riskengine.contracts.topics import Topics
from riskengine.core import (
    InvalidProfile,
    InvalidReference,
    InvalidRule,
    ReferenceData,
    Rules,
    UserProfile,
    parse_profile,
)
from riskengine.core.market import MarketContext, context_final_after
from riskengine.core.market_feed import MarketContexts, kafka_partition
from riskengine.settings import Settings
from riskengine.worker.faust_compat import refresh_metadata
from riskengine.worker.metrics import Metrics

log = logging.getLogger(__name__)

#: Market context versions kept per symbol (one per minute with trades: over an hour's worth).
CONTEXT_VERSIONS = 90


class ReferenceReader:
    """Reads the profiles, rules and reference topics into memory; ``start`` returns once caught up."""

    def __init__(
        self,
        settings: Settings,
        profiles_topic: str,
        rules_topic: str,
        reference_topic: str,
        context_topic: str,
    ) -> None:
        self._settings = settings
        self._profiles_topic = profiles_topic
        self._rules_topic = rules_topic
        self._reference_topic = reference_topic
        self._context_topic = context_topic
        self._topics = (profiles_topic, rules_topic, reference_topic, context_topic)
        self.profiles: dict[bytes, bytes] = {}
        self.on_rules: Callable[[bytes], Any] = lambda raw: None
        self.on_reference: Callable[[bytes], Any] = lambda raw: None
        self.on_context: Callable[[bytes], Any] = lambda raw: None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the topics up to their current end, then keep following them in the background."""
        consumer = AIOKafkaConsumer(**client_options(self._settings), enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
        tps = [
            TopicPartition(topic, partition)
            for topic in self._topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            await refresh_metadata(consumer)
            tps = [
                TopicPartition(topic, partition)
                for topic in self._topics
                for partition in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            await self._poll(consumer, 200)
        log.info("reference data loaded: %d profiles", len(self.profiles))
        self._task = asyncio.ensure_future(self._follow(consumer))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._poll(consumer, 500)
            except asyncio.CancelledError:
                raise
            except Exception:  # Keep the last good reference data; retry.
                log.exception("reading reference data failed; retrying")
                await asyncio.sleep(1.0)

    async def _poll(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        batches = await consumer.getmany(timeout_ms=timeout_ms)
        for tp, records in batches.items():
            for record in records:
                if tp.topic == self._rules_topic:
                    if record.value is not None:
                        self.on_rules(record.value)
                elif tp.topic == self._reference_topic:
                    # A tombstone deletes nothing: the active lists stay until a newer version.
                    if record.value is not None:
                        self.on_reference(record.value)
                elif tp.topic == self._context_topic:
                    if record.value is not None:
                        self.on_context(record.value)
                elif record.key is not None:
                    if record.value is None:
                        self.profiles.pop(record.key, None)
                    else:
                        self.profiles[record.key] = record.value

    async def stop(self) -> None:
        """Stop following the topics."""
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()


class ProfileView(Mapping[str, UserProfile]):
    """userId -> :class:`UserProfile`, live over a dict of raw ``UserProfile`` messages by key.

    A message that does not decode or validate counts as no profile (``on_invalid`` is told once per
    distinct value).
    """

    def __init__(
        self, table: Mapping[bytes, bytes], catalog: SchemaCache, on_invalid: Callable[[str, Exception], None]
    ) -> None:
        self._table = table
        self._catalog = catalog
        self._on_invalid = on_invalid
        #: userId -> (the raw value decoded, its profile, the table key): several lookups per trade
        self._cache: dict[str, tuple[bytes, UserProfile | None, bytes]] = {}

    def _lookup(self, user_id: str) -> UserProfile | None:
        cached = self._cache.get(user_id)
        if cached is not None:
            # The same value object, or an equal one, was decoded before: no key to encode.
            raw = self._table.get(cached[2])
            if raw is cached[0] or raw == cached[0]:
                return cached[1]
            key = cached[2]
        else:
            key = user_id.encode()
            raw = self._table.get(key)
        if raw is None:
            self._cache.pop(user_id, None)
            return None
        profile: UserProfile | None
        try:
            profile = parse_profile(self._catalog.decode(raw, "UserProfile"))
        except (DecodeError, InvalidProfile) as exc:
            self._on_invalid(user_id, exc)
            profile = None
        self._cache[user_id] = (raw, profile, key)
        return profile

    def __getitem__(self, user_id: str) -> UserProfile:
        profile = self._lookup(user_id)
        if profile is None:
            raise KeyError(user_id)
        return profile

    # Mapping.get, without the KeyError cost; _lookup's hit written out (the core asks several
    # times per trade: the user, the counterparty, their links).
    def get(self, user_id: str, default: Any = None) -> Any:
        """The profile of ``user_id`` or ``default``."""
        cached = self._cache.get(user_id)
        if cached is not None:
            raw = self._table.get(cached[2])
            if raw is cached[0]:
                profile = cached[1]
                return default if profile is None else profile
        profile = self._lookup(user_id)
        return default if profile is None else profile

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self._table)

    def __len__(self) -> int:
        return len(self._table)


class RulesHolder:
    """The active rules and the bookkeeping of rules messages (see the module docstring)."""

    def __init__(self, catalog: SchemaCache, initial: Rules) -> None:
        self._catalog = catalog
        self.current = initial
        self.rejected = 0
        self.stale = 0
        self.last_error = ""

    def offer(self, raw: bytes) -> bool:
        """Activate the ``RiskRules`` message ``raw`` if valid and newer; True if it was activated."""
        try:
            record = self._catalog.decode(raw, "RiskRules")
            rules = Rules.from_parameters(record["version"], record["parameters"])
        except (DecodeError, InvalidRule) as exc:
            self.rejected += 1
            self.last_error = str(exc)
            log.error("rejected rules message (rules version %d stays active): %s", self.current.version, exc)
            return False
        if rules.version <= self.current.version:
            if rules.version < self.current.version:
                self.stale += 1
                log.warning(
                    "ignored rules version %d: version %d is active", rules.version, self.current.version
                )
            return False
        log.info("rules version %d active (was %d)", rules.version, self.current.version)
        self.current = rules
        return True


class ReferenceHolder:
    """The active reference lists and the bookkeeping of ``RiskReference`` messages (module docstring)."""

    def __init__(self, catalog: SchemaCache, initial: VersionedReference = NO_REFERENCE) -> None:
        self._catalog = catalog
        self.current = initial
        self._current_raw: bytes | None = None
        self.rejected = 0
        self.stale = 0
        self.last_error = ""

    def offer(self, raw: bytes) -> bool:
        """Activate the ``RiskReference`` message ``raw`` if valid and newer; True if it was activated."""
        try:
            candidate = decode_reference(self._catalog, raw)
        except (DecodeError, InvalidReference) as exc:
            self.rejected += 1
            self.last_error = str(exc)
            log.error(
                "rejected reference message (reference version %d stays active): %s",
                self.current.version,
                exc,
            )
            return False
        if candidate.version <= self.current.version:
            # The active record read again (a restart reading the topic, a re-sent message) is no news;
            # anything else at or below the active version would silently differ from it.
            if raw != self._current_raw:
                self.stale += 1
                log.warning(
                    "ignored reference version %d: version %d is active",
                    candidate.version,
                    self.current.version,
                )
            return False
        data = candidate.data
        log.info(
            "reference version %d active (was %d): %d sanctioned users, %d sanctioned countries, "
            "%d restricted countries, %d markets",
            candidate.version,
            self.current.version,
            len(data.sanctioned_users),
            len(data.sanctioned_countries),
            len(data.restricted_countries),
            len(data.markets),
        )
        self.current = candidate
        self._current_raw = raw
        return True


class MarketContextHolder:
    """The market contexts read from ``risk-market-context``, and how far each market partition is.

    A trade of a symbol is scored against the newest context as of a minute before it
    (:class:`~riskengine.core.market_feed.MarketContexts`); that version is final once the symbol's
    market partition has applied every execution up to then (:meth:`ready`).
    """

    def __init__(self, catalog: SchemaCache, partitions: int) -> None:
        self._catalog = catalog
        self._partitions = partitions
        self.contexts = MarketContexts(limit=CONTEXT_VERSIONS)
        #: market partition -> every execution before this time is applied there
        self.progress: dict[int, int] = {}
        self.rejected = 0
        #: called when a market partition's progress advances (trades may be waiting for it)
        self.on_progress: list[Callable[[], Any]] = []

    def offer(self, raw: bytes) -> None:
        """Take in one ``MarketContext`` message (a context or a progress record)."""
        try:
            record = self._catalog.decode(raw, "MarketContext")
            symbol = record["symbol"]
            if symbol is None:
                partition = int(record["partition"])
                progress = int(record["asOf"])
                if progress > self.progress.get(partition, -1):
                    self.progress[partition] = progress
                    for callback in self.on_progress:
                        callback()
                return
            self.contexts.add(
                MarketContext(
                    symbol,
                    int(record["asOf"]),
                    record["referencePrice"],
                    float(record["recentVolume"] or 0.0),
                    record["volatility"],
                )
            )
        except (DecodeError, KeyError, TypeError, ValueError) as exc:
            self.rejected += 1
            log.error("ignored a market context message: %r", exc)

    def ready(self, symbol: str, timestamp: int, lateness_ms: int) -> bool:
        """True once the context a trade of ``symbol`` at ``timestamp`` uses can no longer change."""
        partition = kafka_partition(symbol.encode(), self._partitions)
        progress = self.progress.get(partition)
        return progress is not None and progress >= context_final_after(timestamp, lateness_ms)

    def for_trade(self, symbol: str, timestamp: int, lateness_ms: int) -> MarketContext | None:
        """The context a trade of ``symbol`` at ``timestamp`` is scored against (None: none known)."""
        return self.contexts.for_trade(symbol, timestamp, lateness_ms)


class ReferenceFeed:
    """The worker's reference data: profiles, rules and reference lists from their topics, live."""

    def __init__(self, settings: Settings, names: Topics, catalog: SchemaCache, metrics: Metrics) -> None:
        self._metrics = metrics
        self.reader = ReferenceReader(
            settings, names.user_profiles, names.risk_rules, names.risk_reference, names.market_context
        )
        self.profiles = ProfileView(self.reader.profiles, catalog, self._invalid_profile)
        self.rules = RulesHolder(catalog, Rules.default())
        self.reader.on_rules = self.rules.offer
        self.lists = ReferenceHolder(catalog)
        self.reader.on_reference = self._offer_reference
        self.markets = MarketContextHolder(catalog, settings.topic_partitions)
        self.reader.on_context = self.markets.offer
        #: What the core reads: the live profiles with the active lists and markets. A plain
        #: attribute, replaced on activation, so the per-event read costs no more than before.
        self.data = self._compose()

    def _compose(self) -> ReferenceData:
        lists = self.lists.current.data
        return ReferenceData(
            profiles=self.profiles,
            sanctioned_users=lists.sanctioned_users,
            sanctioned_countries=lists.sanctioned_countries,
            restricted_countries=lists.restricted_countries,
            markets=lists.markets,
        )

    def _offer_reference(self, raw: bytes) -> bool:
        activated = self.lists.offer(raw)
        if activated:
            self.data = self._compose()
        return activated

    def _invalid_profile(self, user_id: str, exc: Exception) -> None:
        self._metrics.invalid_profiles += 1
        log.warning("profile of %s ignored: %s", user_id, exc)

    async def start(self) -> None:
        """Read the topics up to their end, then follow them (before the first trade is analyzed)."""
        await self.reader.start()

    async def stop(self) -> None:
        """Stop following the topics."""
        await self.reader.stop()
