"""``riskengine snapshot list|restore``: the table snapshots workers upload (riskengine.worker.snapshots)."""

from __future__ import annotations

import argparse
from pathlib import Path

from riskengine.cli.unreachable import ServiceUnreachable, reaching, report
from riskengine.settings import Settings
from riskengine.worker.snapshots import (
    SnapshotError,
    iso_time,
    latest,
    refuse_existing,
    restore_partition,
    snapshot_store,
    table_path,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``snapshot`` command."""
    parser = subparsers.add_parser(
        "snapshot",
        help="list table snapshots or seed a worker's datadir from the latest ones",
        description="Snapshots are in RISKENGINE_S3_BUCKET, or in RISKENGINE_WORKER_SNAPSHOT_DIR when "
        "the bucket is empty; RISKENGINE_WORKER_APP_ID selects the deployment.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print every snapshot: table, partition, offset, time, size")
    listing.add_argument("--table", help="only this table (e.g. user-state)")
    listing.set_defaults(handler=list_snapshots)
    restore = actions.add_parser(
        "restore",
        help="write the latest snapshot of each partition into a (stopped) worker's datadir",
    )
    restore.add_argument("--datadir", type=Path, required=True, help="the worker's --datadir")
    restore.add_argument("--table", help="only this table (default: every table)")
    restore.add_argument(
        "--partitions", type=int, nargs="+", metavar="N", help="only these partitions (default: all)"
    )
    restore.add_argument(
        "--force", action="store_true", help="replace partition DBs that already exist in the datadir"
    )
    restore.set_defaults(handler=restore_snapshots)


def list_snapshots(args: argparse.Namespace, settings: Settings) -> int:
    """Print the snapshots of the configured app id, oldest first per partition."""
    store = snapshot_store(settings)
    try:
        manifests = reaching(store.manifests(settings.worker_app_id, args.table), settings)
    except ServiceUnreachable as exc:
        return report("snapshot", exc)
    except SnapshotError as exc:
        print(f"riskengine snapshot: {exc}")
        return 1
    print(f"snapshots of {settings.worker_app_id} in {store.location}: {len(manifests)}")
    if manifests:
        print(f"{'table':16} {'partition':>9} {'offset':>10} {'created (UTC)':24} {'bytes':>10}  snapshot")
    for m in sorted(manifests, key=lambda m: (m.table, m.partition, m.created_at_ms, m.changelog_offset)):
        print(
            f"{m.table:16} {m.partition:>9} {m.changelog_offset:>10} {iso_time(m.created_at_ms):24} "
            f"{m.size:>10}  {m.snapshot_id}"
        )
    return 0


def restore_snapshots(args: argparse.Namespace, settings: Settings) -> int:
    """Restore the latest snapshot of every selected partition; exit 1 with the reason on failure."""
    try:
        return reaching(_restore(args, settings), settings)
    except ServiceUnreachable as exc:
        return report("snapshot restore", exc)
    except SnapshotError as exc:
        print(f"riskengine snapshot restore: {exc}")
        return 1


async def _restore(args: argparse.Namespace, settings: Settings) -> int:
    store = snapshot_store(settings)
    newest = latest(await store.manifests(settings.worker_app_id, args.table))
    chosen = [m for key, m in sorted(newest.items()) if args.partitions is None or key[1] in args.partitions]
    missing = sorted(set(args.partitions or ()) - {m.partition for m in chosen})
    if missing:
        raise SnapshotError(
            f"no snapshot of partition(s) {', '.join(map(str, missing))} of {settings.worker_app_id} "
            f"in {store.location}"
        )
    if not chosen:
        raise SnapshotError(f"no snapshots of {settings.worker_app_id} in {store.location}")
    # Check every target first, so a refusal does not leave a half-restored datadir behind.
    if not args.force:
        for m in chosen:
            refuse_existing(table_path(args.datadir, m.table, m.partition))
    for m in chosen:
        path = await restore_partition(store, m, args.datadir, args.force)
        print(
            f"restored {m.table}/{m.partition} at changelog offset {m.changelog_offset} "
            f"(snapshot {m.snapshot_id}, {iso_time(m.created_at_ms)}) -> {path}"
        )
    print(f"{len(chosen)} partition(s) restored; the worker replays only the changelog after these offsets")
    return 0
