"""The chaos verifier's decisions, as pure functions over records already read (no services).

Given what was produced and what came out, each check says what was delivered, lost, duplicated or
different; :func:`verdict` turns the checks into the one line a run ends with:

* ``RECORDS-LOST`` when any expected record has no output (an input, an analyzed trade, an alert, a
  dead letter, a final state);
* ``MISMATCH`` when nothing is lost but something differs: two copies of one output that are not
  byte-identical, an output nobody expects, a final state unlike the one-process run's;
* ``ALL-RECORDS-DELIVERED`` otherwise. Byte-identical duplicates are allowed (at-least-once delivery
  re-sends the same pending bytes after a crash) and counted.

The Kafka side (reading the topics, decoding, the one-process run) is in
:mod:`riskengine_devtools.chaos.scenarios`; these functions only compare.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DELIVERED = "ALL-RECORDS-DELIVERED"
LOST = "RECORDS-LOST"
MISMATCH = "MISMATCH"

#: How many example ids a report line shows.
EXAMPLES = 5


def _examples(ids: Iterable[object]) -> str:
    shown = sorted(str(i) for i in ids)
    more = f" (+{len(shown) - EXAMPLES} more)" if len(shown) > EXAMPLES else ""
    return ", ".join(shown[:EXAMPLES]) + more


@dataclass(frozen=True)
class Delivery:
    """One kind of output checked against the ids that must each have one."""

    name: str
    #: distinct ids that must each have an output
    expected: int
    #: output records read (duplicates included)
    received: int
    #: expected ids without any output
    lost: frozenset[str] = frozenset()
    #: extra copies that are byte-identical to the first one
    duplicated: int = 0
    #: ids with two copies that differ
    differing: frozenset[str] = frozenset()
    #: ids with an output that nothing expects
    unexpected: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """True when every expected id has exactly one distinct output and there is nothing else."""
        return not (self.lost or self.differing or self.unexpected)

    def line(self) -> str:
        """One report line: ``OK``/``FAIL``, the counts, and examples of what is wrong."""
        text = (
            f"{'OK  ' if self.ok else 'FAIL'} {self.name}: expected {self.expected}, "
            f"received {self.received} records, lost {len(self.lost)}, "
            f"duplicated {self.duplicated} (byte-identical)"
        )
        if self.differing:
            text += f", {len(self.differing)} with differing copies: {_examples(self.differing)}"
        if self.unexpected:
            text += f", {len(self.unexpected)} unexpected: {_examples(self.unexpected)}"
        if self.lost:
            text += f"; lost e.g. {_examples(self.lost)}"
        return text


def check_delivery(name: str, expected: Iterable[str], outputs: Iterable[tuple[str, bytes]]) -> Delivery:
    """Compare the (id, value) output records with the ``expected`` ids.

    Every expected id must have an output; several outputs of one id must be byte-identical (the
    extra ones are counted as duplicates); an output of an id not expected is unexpected.
    """
    wanted = set(expected)
    copies: dict[str, list[bytes]] = defaultdict(list)
    received = 0
    for ident, value in outputs:
        copies[ident].append(value)
        received += 1
    differing = frozenset(i for i, values in copies.items() if len(set(values)) > 1)
    duplicated = sum(len(values) - 1 for i, values in copies.items() if i not in differing)
    return Delivery(
        name=name,
        expected=len(wanted),
        received=received,
        lost=frozenset(wanted - set(copies)),
        duplicated=duplicated,
        differing=differing,
        unexpected=frozenset(set(copies) - wanted),
    )


@dataclass(frozen=True)
class StateCheck:
    """Final states (the last changelog value per key) against the one-process run's."""

    name: str
    expected: int
    #: keys the one-process run has and the changelog has not
    missing: frozenset[str] = frozenset()
    #: keys in the changelog that the one-process run has not
    extra: frozenset[str] = frozenset()
    #: keys whose final state differs
    different: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """True when the two sets of states are equal."""
        return not (self.missing or self.extra or self.different)

    def line(self) -> str:
        """One report line."""
        text = (
            f"{'OK  ' if self.ok else 'FAIL'} final {self.name}: {self.expected} keys as in one process"
            if self.ok
            else f"FAIL final {self.name}: {self.expected} keys expected"
        )
        for label, keys in (("missing", self.missing), ("extra", self.extra), ("different", self.different)):
            if keys:
                text += f", {len(keys)} {label}: {_examples(keys)}"
        return text


def check_states(name: str, expected: Mapping[str, object], actual: Mapping[str, object]) -> StateCheck:
    """Compare final states key by key (values compared with ``==``: decoded states or bytes)."""
    return StateCheck(
        name=name,
        expected=len(expected),
        missing=frozenset(set(expected) - set(actual)),
        extra=frozenset(set(actual) - set(expected)),
        different=frozenset(k for k in set(expected) & set(actual) if expected[k] != actual[k]),
    )


def last_values(
    records: Iterable[tuple[int, int, bytes, bytes]], skip: Iterable[bytes] = ()
) -> dict[str, bytes]:
    """The last value per key of a changelog's (partition, offset, key, value) records.

    Offsets order the records of one partition; a key lives in one partition. Keys in ``skip``
    (the repartition clock's) are not states.
    """
    skipped = set(skip)
    last: dict[str, bytes] = {}
    for _, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        if key not in skipped:
            last[key.decode()] = value
    return last


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as read back: where its headers say the original was, and its bytes."""

    source_topic: str
    source_partition: int
    source_offset: int
    #: the dead letter's value and headers, for the byte-identical check of duplicates
    content: bytes


def source_id(topic: str, partition: int, offset: int) -> str:
    """The id of an input message: ``topic/partition/offset``."""
    return f"{topic}/{partition}/{offset}"


def check_dead_letters(garbage: Iterable[tuple[str, int, int]], letters: Iterable[DeadLetter]) -> Delivery:
    """Every garbage input (topic, partition, offset) has its dead letter, pointing at that offset.

    A dead letter for any other offset (a good input dead-lettered, or a wrong ``source-offset``)
    is unexpected.
    """
    return check_delivery(
        "dead letters (one per garbage input, at its source-offset)",
        (source_id(*g) for g in garbage),
        ((source_id(d.source_topic, d.source_partition, d.source_offset), d.content) for d in letters),
    )


@dataclass(frozen=True)
class Check:
    """Any other yes/no check of a scenario (an ES index count, a snapshot listing ...)."""

    name: str
    ok: bool
    detail: str = ""
    #: True when a failure means records are missing (else it is a mismatch)
    loss: bool = True

    def line(self) -> str:
        """One report line."""
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Verification:
    """Every check of one scenario run, and the verdict they add up to."""

    deliveries: list[Delivery] = field(default_factory=list)
    states: list[StateCheck] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """See :func:`verdict`."""
        return verdict(self.deliveries, self.states, self.checks)

    def lines(self) -> list[str]:
        """One line per check, in order."""
        return (
            [d.line() for d in self.deliveries]
            + [s.line() for s in self.states]
            + [c.line() for c in self.checks]
        )


def verdict(
    deliveries: Iterable[Delivery], states: Iterable[StateCheck], checks: Iterable[Check] = ()
) -> str:
    """``RECORDS-LOST`` if anything expected is missing, else ``MISMATCH`` if anything differs, else
    ``ALL-RECORDS-DELIVERED``."""
    deliveries, states, checks = list(deliveries), list(states), list(checks)
    if (
        any(d.lost for d in deliveries)
        or any(s.missing for s in states)
        or any(not c.ok and c.loss for c in checks)
    ):
        return LOST
    if not (all(d.ok for d in deliveries) and all(s.ok for s in states) and all(c.ok for c in checks)):
        return MISMATCH
    return DELIVERED


@dataclass(frozen=True)
class Recovery:
    """How long the run took to get over each fault (seconds), and the latency threshold used."""

    #: per fault, in order: seconds from the fault until the backlog it caused was cleared (None:
    #: some input sent before the next fault never got its output)
    per_fault: tuple[float | None, ...]
    #: end-to-end latency (ms) above which an output counts as held up by a fault
    threshold_ms: float

    @property
    def worst(self) -> float | None:
        """The longest recovery; None when one never recovered; 0.0 without faults."""
        if any(r is None for r in self.per_fault):
            return None
        return max((r for r in self.per_fault if r is not None), default=0.0)


def latency_threshold(baseline_ms: Iterable[float], floor_ms: float = 2_000.0) -> float:
    """The latency above which an output is late: 3 x the 95th percentile of the latencies before
    any fault, at least ``floor_ms`` (a 2-core machine shared with the broker has pauses of its own)."""
    values = sorted(baseline_ms)
    if len(values) < 2:
        return floor_ms
    p95 = statistics.quantiles(values, n=20)[-1]
    return max(floor_ms, 3 * p95)


def recovery_times(
    timings: Mapping[str, tuple[int, int | None]], faults_ms: Iterable[int], floor_ms: float = 2_000.0
) -> Recovery:
    """Recovery time of each fault from each input's (sent at, first output at) wall-clock ms.

    The threshold is :func:`latency_threshold` of the latencies of inputs answered before the first
    fault. An input sent before the next fault (or the end) whose output came after this fault and
    more than the threshold after it was sent was held up by this fault; the fault's recovery time
    is from the fault to the last such output (0 when the fault held nothing up). An input sent
    between this fault and the next without any output makes it None (never recovered).
    """
    faults = sorted(faults_ms)
    first = faults[0] if faults else None
    baseline = [
        out - sent for sent, out in timings.values() if out is not None and (first is None or out < first)
    ]
    threshold = latency_threshold(baseline, floor_ms)
    per_fault: list[float | None] = []
    for index, fault in enumerate(faults):
        until = faults[index + 1] if index + 1 < len(faults) else None
        last_late: int | None = None
        lost = False
        for sent, out in timings.values():
            if until is not None and sent >= until:
                continue
            if out is None:
                lost = lost or sent >= fault
                continue
            if out >= fault and out - sent > threshold:
                last_late = out if last_late is None else max(last_late, out)
        per_fault.append(None if lost else (0.0 if last_late is None else (last_late - fault) / 1000))
    return Recovery(tuple(per_fault), threshold)
