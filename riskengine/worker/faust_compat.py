"""The worker's Kafka transport: Faust's aiokafka driver, with its post-rebalance seek corrected.

After every rebalance Faust seeks each stream partition back to its committed offset
(:meth:`~faust.transport.consumer.Consumer.perform_seek`), because records fetched during the
rebalance may have been dropped. Two faults in that step lost trades in the crash tests; both are
corrected in :meth:`Consumer.perform_seek`:

1. *The seek did not stop the flow.* Faust resumes the stream partitions, then seeks, then clears
   the agents' input queues. Records fetched before the seek kept reaching the queue while it ran,
   the clear dropped those, and the same fetch then went on with the records after them: the
   agent saw offset 202 and then 222 of one partition, and 203-221 were never analyzed. The flow
   is now stopped for the seek; Faust resumes it after the clear, from the new positions.
2. *A partition without a committed offset was not moved.* aiokafka's ``seek_to_committed`` skips a
   partition whose committed offset is missing or 0. When a worker died before its first commit on
   a partition, the worker that took it over had fetched it from the start, dropped those records
   during the rebalance, and went on from the end of that fetch (944 of 3,000 trades in one crash
   test). Such partitions are now sought to their beginning, which is where ``auto_offset_reset``
   (``earliest``, see :func:`riskengine.worker.app.app_options`) put them.

A trade read again after the seek is recognized by its offset and not applied twice (see
:mod:`riskengine.worker.agents.trade_analysis`).
"""

from __future__ import annotations

import logging

from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer with the corrected :meth:`perform_seek`."""

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


class Transport(driver.Transport):
    """Faust's aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer
