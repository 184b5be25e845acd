"""Reference data: user profiles and rules, every worker reading all of their compacted topics.

These are global tables in the Faust sense (every worker holds every key and follows new messages
without a restart), implemented as a small reader rather than ``app.GlobalTable``: a GlobalTable
whose changelog is an existing topic hangs faust-streaming 0.15.3's partition assignor (the group
never finishes its first assignment). :class:`ReferenceReader` assigns itself every partition of
``user-profiles`` and ``risk-rules`` (no consumer group, nothing committed), reads them from the
beginning before the worker starts consuming trades, and then follows them. Values are the raw
Avro messages, decoded when they change, never per trade:

- :class:`ProfileView` is the ``profiles`` mapping of the core's ``ReferenceData``: a live,
  read-only view that caches each decoded profile with the bytes it came from.
- :class:`RulesHolder` holds the active :class:`~riskengine.core.Rules`: a message with a higher
  version than the active one is activated as soon as it is read; an invalid message is logged and
  counted and the previous version stays active; a lower version is ignored (and counted).

:class:`ReferenceFeed` puts the three together: what the worker's context holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from riskengine.connections import client_options
from riskengine.contracts.avro_codec import DecodeError, SchemaCache
from riskengine.contracts.topics import Topics
from riskengine.core import InvalidProfile, InvalidRule, ReferenceData, Rules, UserProfile, parse_profile
from riskengine.settings import Settings
from riskengine.worker.faust_compat import refresh_metadata
from riskengine.worker.metrics import Metrics

log = logging.getLogger(__name__)


class ReferenceReader:
    """Reads the profiles and rules topics into memory; ``start`` returns once caught up."""

    def __init__(self, settings: Settings, profiles_topic: str, rules_topic: str) -> None:
        self._settings = settings
        self._profiles_topic = profiles_topic
        self._rules_topic = rules_topic
        self.profiles: dict[bytes, bytes] = {}
        self.on_rules: Callable[[bytes], Any] = lambda raw: None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read both topics up to their current end, then keep following them in the background."""
        consumer = AIOKafkaConsumer(**client_options(self._settings), enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
        tps = [
            TopicPartition(topic, partition)
            for topic in (self._profiles_topic, self._rules_topic)
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            await refresh_metadata(consumer)
            tps = [
                TopicPartition(topic, partition)
                for topic in (self._profiles_topic, self._rules_topic)
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
        self._cache: dict[str, tuple[bytes, UserProfile | None]] = {}

    def _lookup(self, user_id: str) -> UserProfile | None:
        raw = self._table.get(user_id.encode())
        if raw is None:
            return None
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] == raw:
            return cached[1]
        profile: UserProfile | None
        try:
            profile = parse_profile(self._catalog.decode(raw, "UserProfile"))
        except (DecodeError, InvalidProfile) as exc:
            self._on_invalid(user_id, exc)
            profile = None
        self._cache[user_id] = (raw, profile)
        return profile

    def __getitem__(self, user_id: str) -> UserProfile:
        profile = self._lookup(user_id)
        if profile is None:
            raise KeyError(user_id)
        return profile

    def get(self, user_id: str, default: Any = None) -> Any:  # Mapping.get, without the KeyError cost
        """The profile of ``user_id`` or ``default``."""
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


class ReferenceFeed:
    """The worker's reference data: profiles and rules from their topics, live."""

    def __init__(self, settings: Settings, names: Topics, catalog: SchemaCache, metrics: Metrics) -> None:
        self._metrics = metrics
        self.reader = ReferenceReader(settings, names.user_profiles, names.risk_rules)
        self.profiles = ProfileView(self.reader.profiles, catalog, self._invalid_profile)
        self.rules = RulesHolder(catalog, Rules.default())
        self.reader.on_rules = self.rules.offer
        #: What the core reads: the live profiles.
        self.data = ReferenceData(profiles=self.profiles)

    def _invalid_profile(self, user_id: str, exc: Exception) -> None:
        self._metrics.invalid_profiles += 1
        log.warning("profile of %s ignored: %s", user_id, exc)

    async def start(self) -> None:
        """Read both topics up to their end, then follow them (before the first trade is analyzed)."""
        await self.reader.start()

    async def stop(self) -> None:
        """Stop following the topics."""
        await self.reader.stop()
