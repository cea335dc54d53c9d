"""What the notifier changes in faust-streaming 0.15 and aiokafka 0.12:
faults the crash tests found (tests/test_notifier_faults.py, with the
notifiers' logs kept in test-artifacts/notifier-faults/), each worked
around where faust lets one in, and a setting faust ties to exactly_once.
docs/notifications.md ("faults of faust-streaming") lists them; check each
again on an upgrade of faust or aiokafka.

- `SeekFirstRecovery` (through `SeekFirstTableManager`): the agents wait
  for the seek at the end of a recovery (faust-streaming issue 596), and a
  changelog partition whose recovery stalls is fetched again.
- `read_committed`: the consumer reads the publisher's transactions
  committed only, which faust asks for only under exactly_once.
- `seek_every_partition`: a partition the group never committed is read
  from its beginning after a rebalance, not from a stale position.

They reach into faust's and aiokafka's private state where no setting
exists (faust gives no setting for the consumer class, for instance); the
names used are the ones of the versions pinned in pyproject.toml.
"""
from __future__ import annotations

import logging
from time import monotonic
from typing import Any

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from mode import Service

logger = logging.getLogger("accrual.notifier")

# a changelog partition under recovery that delivers nothing for this long is fetched again (SeekFirstRecovery)
STALL_CHECK_EVERY_S, STALLED_AFTER_S = 2.0, 10.0


class SeekFirstRecovery(Recovery):  # type: ignore[misc]
    """faust's recovery of the tables, with two faults of it worked around.

    The agents wait for the seek. At the end of a recovery faust resumes
    the stream partitions, then seeks them to the committed offsets, then
    resumes the flow, which empties the agents' queues. Records fetched in
    between reach the agent (some are handled) and the rest are emptied
    from the queues after the consumer's read offset has passed them:
    skipped for as long as the process runs (their notifications never
    decided, the member's state missing them), and the commit stops at the
    first of them for good (a gap in the acknowledged offsets;
    faust-streaming issue 596). Suspending the flow first keeps every
    fetched record waiting until after the seek: the records after it are
    then delivered in order, from the committed offset on.

    A stalled changelog partition is fetched again (`_unstall_changelogs`
    says when and why)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refetched: dict[Any, int] = {}  # changelog partition -> the generation it was fetched again in

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.flow_control.suspend()
        await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        self.app.flow_control.suspend()
        await super()._resume_streams(generation_id)

    @Service.timer(STALL_CHECK_EVERY_S)
    async def _unstall_changelogs(self) -> None:
        """Takes a changelog partition whose recovery has stalled through it.

        faust's recovery reads each changelog partition until it has
        applied the partition's highwater (its last offset), and waits for
        ever otherwise. Two ways it waited, the agent with it:

        1. faust drops records it fetched while its flow was stopped (a
           batch that arrives during a rebalance, or one cut short by it)
           and seeks back only the stream partitions. A changelog
           partition under recovery whose records were dropped so is never
           read again: its fetch position is past them. Seen in about one
           run in twenty-five of tests/test_notifier_faults.py: the
           survivor of a kill read nothing of the six changelog partitions
           it took over (nothing applied, the fetch position one past the
           highwater, not paused, the flow running; "No event received for
           active tp … since recovery start") and its partitions stayed
           unhandled. With this watch, the same run fetched them again 10 s
           later and recovered them in 0.2 s.
        2. A partition that ends in a transaction marker (a changelog
           written under exactly_once, as the notifier ran before): the
           highwater is the marker's offset, which is never delivered.
           faust handles this only when it runs exactly_once itself.

        So, every few seconds during a recovery, a partition with records
        still to apply that has delivered none for `STALLED_AFTER_S` is
        fetched again from the last record applied (the recovery skips
        what it has seen, by offset), and resumed if it was left paused.
        If it stalls again in the same generation, with the fetch past the
        highwater, the flow running and nothing waiting in the changelog
        queue, everything up to the highwater was fetched and nothing more
        came: the rest is not data (markers, aborted records), and the
        partition is taken as recovered. Each step logs a warning."""
        if not self.in_recovery:
            return
        consumer, generation = self.app.consumer, self.app.consumer_generation_id
        now = monotonic()
        for tp, remaining in list(self.active_remaining().items()):
            heard = self._active_events_received_at.get(tp) or self._recovery_started_at
            if remaining <= 0 or heard is None or now - heard < STALLED_AFTER_S:
                continue
            applied, highwater = self.active_offsets[tp], self.active_highwaters[tp]
            position = await consumer.position(tp)
            fields = {"partition": f"{tp.topic}/{tp.partition}", "applied": applied, "highwater": highwater,
                      "position": position, "silent_s": round(now - heard, 1)}
            if not consumer.flow_active or not self.app.flow_control.is_active():
                # a rebalance under way (the next recovery seeks every partition anew); said, in case it lasts
                logger.warning("a changelog partition's recovery has stalled while the flow is stopped",
                               extra={"fields": {**fields, "flow_active": consumer.flow_active,
                                                 "flow_control_active": self.app.flow_control.is_active()}})
                self._active_events_received_at[tp] = now
                continue
            if (self._refetched.get(tp) == generation and position is not None and position > highwater
                    and not self.tables.changelog_queue.qsize()):
                logger.warning("a changelog partition fetched again to its end brought nothing more; "
                               "what is left is not data (transaction markers), so it is recovered",
                               extra={"fields": fields})
                self.active_offsets[tp] = highwater
                continue
            paused = tp in consumer._paused_partitions
            logger.warning("a changelog partition's recovery has stalled; fetching it again",
                           extra={"fields": {**fields, "paused": paused}})
            try:
                if paused:
                    consumer.resume_partitions({tp})
                await consumer.seek_wait({tp: max(applied, 0)})
            except Exception as error:  # revoked meanwhile: the next recovery seeks it anew
                logger.warning("a stalled changelog partition could not be sought", extra={"fields": {
                    **fields, "reason": f"{type(error).__name__}: {error}"}})
                continue
            self._refetched[tp] = generation
            self._active_events_received_at[tp] = now  # the fetch gets its time before the next look


class SeekFirstTableManager(TableManager):  # type: ignore[misc]
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def read_committed(app: faust.App) -> None:
    """The consumer reads `read_committed`, as every subscriber of the
    publisher's transactions must (an aborted record is never news).
    faust sets that isolation only under exactly_once; the notifier runs at
    least once, so the consumer faust builds is told before it starts
    (aiokafka makes its fetcher, which filters, in `start`)."""
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_read_committed(transport: Any) -> Any:
        consumer = create(transport)
        consumer._isolation_level = "read_committed"
        return consumer

    thread._create_worker_consumer = create_read_committed


def seek_every_partition(app: faust.App, topics: set[str]) -> None:
    """faust's seek to the committed offsets, with the partitions the
    group never committed (or committed at 0) seeked to their beginning.

    After every rebalance faust seeks each assigned partition to its
    committed offset and forgets where it had read. aiokafka's
    `seek_to_committed` seeks only a partition whose committed offset is
    above 0: one without leaves the fetch where the consumer had it, and
    faust, with no committed offset to hold against, commits whatever the
    agent acknowledges next. In about one crash run in ten
    (tests/test_notifier_faults.py, two instances, one killed before its
    first commit on its partitions) the survivor took those partitions
    over and either committed past their records without handling them
    (their messages lost) or never delivered them at all (the group stuck
    behind). Seeking such partitions to their beginning (the group's
    `earliest`) handles them from the first record; the keys make any
    repeat harmless."""
    consumer = app.consumer
    faust_seek = consumer.perform_seek

    async def perform_seek() -> None:
        committed = await consumer.seek_to_committed()
        unread = [tp for tp, offset in committed.items() if not offset and tp.topic in topics]
        if unread:
            logger.info("partitions without a committed offset read from their beginning", extra={"fields": {
                "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in unread)}})
            await consumer.seek_wait({tp: 0 for tp in unread})  # below the log's start: aiokafka resets to earliest
        consumer._read_offset.update({tp: offset if offset else None for tp, offset in committed.items()})
        consumer._committed_offset.update({tp: offset for tp, offset in committed.items() if offset})

    perform_seek.__doc__ = faust_seek.__doc__
    consumer.perform_seek = perform_seek
