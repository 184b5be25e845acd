"""The recovery row of ``riskengine bench-e2e``: how long a worker takes to get a state of N users back.

1. ``users`` trades, one per user, go to the run's trades topic; a worker processes them (its user
   state table then holds ``users`` users, in RocksDB and in the changelog), takes a snapshot
   (``POST /admin/snapshot``, to the stack's S3) and stops.
2. *From the changelog*: a worker with an empty data folder starts; the time from its start until
   ``/health`` answers 200 (table recovery complete).
3. *From a snapshot*: ``riskengine snapshot restore`` writes the snapshot into another empty data
   folder, then a worker starts on it; the time from the restore's start until ``/health`` answers
   200 (the worker replays only the changelog after the snapshot's offset).

Both workers start the same way (process start, imports and group join included), so the
difference between the two is what the snapshot saves.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from riskengine_devtools import DevtoolsError

#: Give up on a recovery after this long.
RECOVERY_TIMEOUT_S = 600.0
RISKENGINE = Path(sys.executable).parent / "riskengine"


class RecoveryFailed(DevtoolsError):
    """A step of the recovery row did not complete."""


@dataclass(frozen=True)
class Recovery:
    """The recovery row: users in the state, and the seconds each way took."""

    users: int
    from_changelog_s: float
    from_snapshot_s: float
    #: of from_snapshot_s, the restore command's part
    restore_s: float


async def wait_healthy(url: str, alive: Callable[[], None]) -> float:
    """Seconds until ``url``/health answers 200 (at most :data:`RECOVERY_TIMEOUT_S`); ``alive`` raises
    when the worker has exited."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < RECOVERY_TIMEOUT_S:
            alive()
            try:
                async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise RecoveryFailed(f"{url}/health did not answer 200 within {RECOVERY_TIMEOUT_S:.0f} s")


async def take_snapshot(url: str) -> int:
    """Snapshot the worker's table partitions now; how many partition snapshots it took."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/admin/snapshot", json={}, timeout=aiohttp.ClientTimeout(total=300)) as response,
    ):
        body = await response.json()
        if response.status != 200:
            raise RecoveryFailed(f"POST /admin/snapshot answered {response.status}: {body}")
        return len(body["snapshots"])


def restore(settings_env: dict[str, str], datadir: Path) -> float:
    """``riskengine snapshot restore`` of every table into ``datadir``; the seconds it took."""
    started = time.monotonic()
    done = subprocess.run(
        [str(RISKENGINE), "snapshot", "restore", "--datadir", str(datadir)],
        env=settings_env,
        capture_output=True,
        text=True,
        timeout=RECOVERY_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RecoveryFailed(f"snapshot restore exited with {done.returncode}: {done.stderr[-2000:]}")
    return time.monotonic() - started


def report(recovery: Recovery) -> None:
    """Print the recovery row."""
    print()
    print(f"recovery: a worker's state of {recovery.users:,} users, from an empty data folder to /health 200")
    print(f"{'from the changelog':<20} {recovery.from_changelog_s:>8.1f} s")
    print(
        f"{'from a snapshot':<20} {recovery.from_snapshot_s:>8.1f} s"
        f"   (of which the restore {recovery.restore_s:.1f} s)"
    )


def user_count_ok(users: int) -> bool:
    """The recovery row's user count: 0 (no row) or 1 to 10,000,000."""
    return users == 0 or 1 <= users <= 10_000_000
