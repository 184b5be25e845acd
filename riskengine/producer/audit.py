"""The audit trail: every event the producer sends, with its delivery status, in SQLite.

One row per (topic, event id): the record as JSON, its key, scenario label, and the status of the
latest attempt: ``pending`` (handed to the Kafka client, no answer yet), ``acked`` (with the
partition and offset the broker assigned) or ``failed`` (with the error; the publisher retries).
A row that is not ``acked`` when the process stops is sent again at the next start, so no event
is lost silently (a ``pending`` one may then reach the broker twice: delivery is at-least-once).
Scenario labels are kept in a second table as runs finish.

Writes never block the event loop: callers enqueue operations, and one writer thread applies
them in batches (one transaction per batch) on its own connection. Readers use their own
connections in a worker thread; the database is in WAL mode, so they do not wait for the writer.
:meth:`AuditLog.flush` waits until everything enqueued before it is committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .events import Label

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS produced (
    topic TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_name TEXT NOT NULL,
    message_key TEXT NOT NULL,
    order_id TEXT,
    event_ts INTEGER NOT NULL,
    scenario TEXT,
    scenario_id TEXT,
    record TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'acked', 'failed')),
    attempts INTEGER NOT NULL,
    partition INTEGER,
    "offset" INTEGER,
    error TEXT,
    first_attempt_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (topic, event_id)
);
CREATE INDEX IF NOT EXISTS produced_event ON produced (event_id);
CREATE INDEX IF NOT EXISTS produced_order ON produced (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS produced_unacked ON produced (status) WHERE status != 'acked';
CREATE TABLE IF NOT EXISTS labels (
    scenario_id TEXT NOT NULL,
    pattern TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (scenario_id, pattern)
);
"""

_ATTEMPT = """
INSERT INTO produced (topic, event_id, kind, record_name, message_key, order_id, event_ts, scenario,
                      scenario_id, record, status, attempts, first_attempt_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 1, ?, ?)
ON CONFLICT (topic, event_id) DO UPDATE SET
    status = 'pending', attempts = produced.attempts + 1, record = excluded.record,
    updated_at = excluded.updated_at
"""
_ACKED = """UPDATE produced SET status = 'acked', partition = ?, "offset" = ?, error = NULL, updated_at = ?
WHERE topic = ? AND event_id = ?"""
_FAILED = "UPDATE produced SET status = 'failed', error = ?, updated_at = ? WHERE topic = ? AND event_id = ?"
_COMMIT_ATTEMPTS = 40
_LABEL = "INSERT OR REPLACE INTO labels (scenario_id, pattern, label) VALUES (?, ?, ?)"
_COLUMNS = (
    "topic, event_id, kind, record_name, message_key, order_id, event_ts, scenario, scenario_id, record, "
    'status, attempts, partition, "offset", error, first_attempt_at, updated_at'
)


@dataclass(frozen=True)
class Outgoing:
    """One message to produce: its record, where it goes, and what the audit trail keeps of it."""

    kind: str
    record_name: str
    topic: str
    key: str
    event_id: str
    event_ts: int
    record: dict[str, Any]
    scenario: str | None = None
    scenario_id: str | None = None
    order_id: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers: the scenario label of injected events; none for normal traffic."""
        if self.scenario is None:
            return []
        return [("scenario", self.scenario.encode()), ("scenario-id", (self.scenario_id or "").encode())]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditLog:
    """The SQLite audit trail (see the module docstring). Call :meth:`open` before use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.write_errors = 0

    def open(self) -> None:
        """Create the database if needed and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        self._thread = threading.Thread(target=self._write_loop, name="producer-audit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Commit what is queued and stop the writer thread."""
        if self._thread is not None:
            self._queue.put(("stop", None))
            self._thread.join()
            self._thread = None

    # -- writes (enqueued) -----------------------------------------------------------------

    def attempt(self, message: Outgoing) -> None:
        """A send attempt begins: the row is (again) ``pending``."""
        now = _now_ms()
        self._queue.put(
            (
                _ATTEMPT,
                (
                    message.topic,
                    message.event_id,
                    message.kind,
                    message.record_name,
                    message.key,
                    message.order_id,
                    message.event_ts,
                    message.scenario,
                    message.scenario_id,
                    json.dumps(message.record, separators=(",", ":")),
                    now,
                    now,
                ),
            )
        )

    def acked(self, message: Outgoing, partition: int, offset: int) -> None:
        """The broker acknowledged the message at ``partition``/``offset``."""
        self._queue.put((_ACKED, (partition, offset, _now_ms(), message.topic, message.event_id)))

    def failed(self, message: Outgoing, error: str) -> None:
        """The attempt failed with ``error`` (the publisher will retry)."""
        self._queue.put((_FAILED, (error[:500], _now_ms(), message.topic, message.event_id)))

    def label(self, label: Label) -> None:
        """Keep a finished scenario's label."""
        record = json.dumps(label.to_record(), separators=(",", ":"))
        self._queue.put((_LABEL, (label.scenario_id, label.pattern, record)))

    async def flush(self) -> None:
        """Wait until every write enqueued so far is committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        self._queue.put(("flush", lambda: loop.call_soon_threadsafe(resolve)))
        await done

    def _write_loop(self) -> None:
        conn = sqlite3.connect(self.path, timeout=1.0)
        try:
            stopping = False
            while not stopping:
                batch = [self._queue.get()]
                # Take whatever else is queued: under load a transaction carries many writes.
                while len(batch) < 5_000:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                writes = [(sql, parameters) for sql, parameters in batch if sql not in ("stop", "flush")]
                self._commit(conn, writes)
                for statement, parameters in batch:
                    if statement == "stop":
                        stopping = True
                    elif statement == "flush":
                        parameters()
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, writes: list[tuple[str, Any]]) -> None:
        # A locked database (a reader's checkpoint, an operator's shell) is waited out rather
        # than losing the batch; only a batch failing for a minute is given up, and counted.
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                with conn:
                    for statement, parameters in writes:
                        conn.execute(statement, parameters)
                return
            except sqlite3.OperationalError as exc:
                if attempt == _COMMIT_ATTEMPTS - 1:
                    self.write_errors += 1
                    log.error("audit trail: gave up on %d writes: %s", len(writes), exc)
                    return
                time.sleep(min(2.0, 0.05 * 2**attempt))
            except sqlite3.Error:
                self.write_errors += 1
                log.exception("audit trail: %d writes failed", len(writes))
                return

    # -- reads -----------------------------------------------------------------------------

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.path)
        try:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(sql, parameters).fetchall()
        finally:
            conn.close()
        result = []
        for row in rows:
            item = dict(row)
            item["record"] = json.loads(item["record"])
            result.append(item)
        return result

    async def trade(self, trade_id: str) -> list[dict[str, Any]]:
        """The trade's rows (one per topic it went to) and the rows of its order's events."""
        await self.flush()
        sql = (
            f"SELECT {_COLUMNS} FROM produced WHERE (kind = 'trade' AND event_id = ?) OR (kind = 'order' "
            "AND order_id IN (SELECT order_id FROM produced WHERE kind = 'trade' AND event_id = ?)) "
            "ORDER BY event_ts, kind, event_id"
        )
        return await asyncio.to_thread(self._read, sql, (trade_id, trade_id))

    async def find(
        self,
        event_id: str | None = None,
        status: str | None = None,
        scenario_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Rows by event id, status or scenario id (all given filters apply), newest first."""
        await self.flush()
        clauses, parameters = [], []
        for column, value in (("event_id", event_id), ("status", status), ("scenario_id", scenario_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM produced {where} ORDER BY updated_at DESC, event_id LIMIT ?"
        return await asyncio.to_thread(self._read, sql, (*parameters, limit))

    async def unacked(self) -> list[Outgoing]:
        """Every message not acknowledged yet, oldest first (for sending again)."""
        await self.flush()
        sql = f"SELECT {_COLUMNS} FROM produced WHERE status != 'acked' ORDER BY first_attempt_at, event_ts"
        rows = await asyncio.to_thread(self._read, sql, ())
        return [
            Outgoing(
                kind=row["kind"],
                record_name=row["record_name"],
                topic=row["topic"],
                key=row["message_key"],
                event_id=row["event_id"],
                event_ts=row["event_ts"],
                record=row["record"],
                scenario=row["scenario"],
                scenario_id=row["scenario_id"],
                order_id=row["order_id"],
            )
            for row in rows
        ]

    async def status_counts(self) -> dict[str, int]:
        """Rows by status."""
        await self.flush()

        def count() -> dict[str, int]:
            conn = sqlite3.connect(self.path)
            try:
                return dict(conn.execute("SELECT status, COUNT(*) FROM produced GROUP BY status").fetchall())
            finally:
                conn.close()

        return await asyncio.to_thread(count)
