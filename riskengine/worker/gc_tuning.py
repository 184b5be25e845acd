"""Garbage-collector tuning of a worker process: freeze the long-lived heap, collect rarely.

A worker holds a few hundred thousand long-lived objects (Faust, the per-user states); with
CPython's defaults a full collection walked all of them every few seconds under load and paused
the event loop for 130-290 ms. :func:`tune_garbage_collector` fixes that once the app has started.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import faust

log = logging.getLogger(__name__)

#: Garbage-collector thresholds of a worker process, instead of CPython's (700, 10, 10). A worker
#: holds a few hundred thousand long-lived objects (Faust, the per-user states); with the defaults a
#: full collection walked all of them every few seconds under load, pausing the event loop for
#: 130-290 ms each time. Young collections free next to nothing (what a worker allocates lives on in
#: the states until frozen, below), so they are pure pause: with a first threshold of 20,000 each
#: walked that many survivors and paused the worker 23-50 ms, ten times in a 25 s latency run at
#: 1,000 trades/s (0 objects freed). With 2,000 they pause a tenth of that; the second threshold
#: keeps the middle generation from being collected between two freezes; a full collection runs
#: after some 200 million allocations.
GC_THRESHOLDS = (2_000, 1_000, 100)
#: Seconds between two freezes of the objects that have survived so far. Without it the per-user
#: states accumulate in the oldest generation, and each full collection walked them all: 203-259 ms
#: per collection in the benchmark, freeing 0-16 objects, and p99 latency up to 230 ms whenever one
#: fell into the 20 s latency phase.
FREEZE_INTERVAL_S = 10.0
#: A collection that stops the worker at least this long is logged as a warning.
SLOW_COLLECTION_MS = 20.0


def tune_garbage_collector(app: faust.App) -> None:
    """Once ``app`` has started (tables recovered): collect, freeze what exists, set :data:`GC_THRESHOLDS`.

    Frozen objects (modules, Faust's services, everything built at start-up) are left out of every
    later collection; reference counting still frees them when they are dropped. From then on the
    survivors are frozen again every :data:`FREEZE_INTERVAL_S` seconds, so a full collection only
    walks what is new since. The price is that a reference cycle which became garbage and was not
    yet collected when it was frozen is never freed; the full collections measured before freed
    0-16 objects each, so the worker's long-lived heap has next to no cycles. Collections that stop
    the worker for :data:`SLOW_COLLECTION_MS` or more are logged.
    """

    async def tune_garbage_collector() -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        gc.callbacks.append(_report_slow_collections())
        log.info(
            "garbage collector: %d start-up objects frozen, thresholds %s",
            gc.get_freeze_count(),
            GC_THRESHOLDS,
        )

    async def freeze_survivors() -> None:
        gc.freeze()

    # App tasks and timers start once table recovery has completed.
    app.task(tune_garbage_collector)
    app.timer(FREEZE_INTERVAL_S, name="freeze-survivors")(freeze_survivors)


def _report_slow_collections() -> Callable[[str, dict[str, int]], None]:
    """A ``gc.callbacks`` entry that logs every collection that stops the worker for long."""
    started = 0.0

    def on_collection(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        paused_ms = (time.perf_counter() - started) * 1000
        if paused_ms >= SLOW_COLLECTION_MS:
            log.warning(
                "garbage collection of generation %d paused the worker for %.0f ms (%d objects freed)",
                info["generation"],
                paused_ms,
                info["collected"],
            )

    return on_collection
