"""The worker's side of ``streams/progress.py``: the finished offsets, the rewinds, the stalls.

``Sequencer`` reads and writes each input partition's last finished offset in the state table
itself (key ``b"\x00progress\x00<topic>:<partition>"``, which no user id can be: ids have no control
characters; value the offset as 8 little-endian bytes). It is written after the event's own state,
in the event's partition: one changelog partition holds both in order, so whatever part of it
survives a crash never has an event finished without its state, and it moves with that
partition's user states in a rebalance. It seeks the consumer back when ``PartitionGuard`` or
``stalled`` say so. ``streams/worker.py`` calls ``admit`` for every record it takes (in fetch
order), ``rewind`` when ``admit`` says so (after it queued the records admitted before),
``progress`` when it writes the state of a partition's last record of a batch, and runs
``unstall`` on a timer.

Batches are pipelined (``streams/pipeline.py``): an admitted record may still have its writes in
flight while the next ones are admitted. ``admit`` therefore sequences against the last *admitted*
offset of a partition, and every seek first drains the pipeline (``drain``), so that a partition is
only ever sought back to the record after its last finished one. Faust's private bookkeeping is
reset through ``streams/faust_adapter.py``.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from streamrec.streams import faust_adapter
from streamrec.streams.progress import APPLY, REPLAYED, REWIND, Decision, PartitionGuard, stalled

log = logging.getLogger("streamrec.worker")

PREFIX = b"\x00progress\x00"
WARM_PREFIX = PREFIX + b"warm\x00"  # + "<topic>:<partition>": a warm-up's end offset (streams/warm.py)


def key_of(tp: Any) -> bytes:
    return PREFIX + f"{tp.topic}:{tp.partition}".encode()


def warm_key(topic: str, partition: int) -> bytes:
    """The table key of a warm-up's end offset in input partition ``topic:partition``."""
    return WARM_PREFIX + f"{topic}:{partition}".encode()


def is_progress_key(key: bytes) -> bool:
    """Whether a key of the state table is a partition's progress, not a user."""
    return key.startswith(PREFIX)


class Sequencer:
    """Applies each input partition's records contiguously (see ``streams/progress.py``)."""

    def __init__(self, app: Any, table: Any, counts: Counter[str], inputs: Collection[str],
                 stall_s: float = 15.0,
                 drain: Callable[[], Awaitable[None]] | None = None) -> None:
        self.app, self.table, self.counts, self.inputs = app, table, counts, set(inputs)
        self.stall_s = stall_s
        self.drain = drain  # waits until every admitted event is finished (the worker's pipeline)
        self.guard = PartitionGuard()
        self._finished: dict[Any, int | None] = {}  # cache of the table, for one consumer generation
        self._stored: dict[bytes, bytes | None] = {}  # the same for other per-partition records (stored())
        self._admitted: dict[Any, int] = {}  # partition -> last offset admitted (finished or in flight)
        self._generation = -1
        self._last_seen: dict[Any, float] = {}  # partition -> monotonic time its last record arrived
        self._stall_end: dict[Any, int] = {}  # partition -> its end offset when last sought back

    def finished(self, tp: Any) -> int | None:
        """The last offset finished in input partition ``tp`` (None before its first record). Cached
        per consumer generation: a rebalance may move partitions, whose tables are then recovered."""
        self._check_generation()
        if tp not in self._finished:
            blob = self.table.get(key_of(tp))
            self._finished[tp] = int.from_bytes(blob, "little", signed=True) if blob else None
        return self._finished[tp]

    def warm_end(self, tp: Any) -> int:
        """The offset before which ``tp``'s records are a warm-up's (stepped, not published;
        ``streams/warm.py``), -1 without a warm-up."""
        blob = self.stored(warm_key(tp.topic, tp.partition))
        return int.from_bytes(blob, "little", signed=True) if blob else -1

    def stored(self, key: bytes) -> bytes | None:
        """A value of the table's per-partition records (warm-up ends, routes: keys under the progress
        prefix), read once per consumer generation like ``finished``."""
        self._check_generation()
        if key not in self._stored:
            self._stored[key] = self.table.get(key)
        return self._stored[key]

    def _check_generation(self) -> None:
        """Forget what was read of the table in an earlier consumer generation."""
        if self._generation != self.app.consumer_generation_id:
            self._generation = self.app.consumer_generation_id
            self._finished.clear()
            self._stored.clear()
            self._admitted.clear()
            self.guard.forget()

    def position(self, tp: Any) -> int | None:
        """The last offset admitted in ``tp``: finished, or with its writes still in flight."""
        finished = self.finished(tp)
        return self._admitted.get(tp, finished)

    def admit(self, msg: Any) -> Decision:
        """What to do with ``msg`` (``streams.progress``): ``APPLY`` (the next record of its partition:
        counted as admitted), ``REPLAYED`` (finished before: acknowledge it, in order; counted as
        ``redelivered``), ``REWIND`` (the consumer skipped records before it: call ``rewind``) or
        ``STALE``. A record not applied or replayed is let go unacknowledged: it comes again."""
        self._last_seen[msg.tp] = time.monotonic()
        decision = self.guard.check(msg.tp, msg.offset, self.position(msg.tp))
        if decision.action == APPLY:
            self._admitted[msg.tp] = msg.offset
            if decision.absent:
                first, end = decision.absent
                self.counts["absent"] += end - first
                log.warning("%s:%d: offsets %d..%d do not exist (retention, compaction or transaction markers)",
                            msg.topic, msg.partition, first, end - 1)
            return decision
        if decision.action == REPLAYED:
            self.counts["redelivered"] += 1
            return decision
        faust_adapter.skip_unacked(self.app, msg)  # it comes again: its offset must not count as done
        if decision.action != REWIND:  # STALE: fetched before the seek; the fetch loop may have moved past the hole
            faust_adapter.forget_read_offset(self.app, msg.tp)
        return decision

    async def rewind(self, msg: Any, decision: Decision) -> None:
        """Seek ``msg``'s partition back to ``decision.seek_to`` (after ``admit`` said ``REWIND``)."""
        self.counts["rewound"] += 1
        log.warning("%s:%d: got offset %d after finishing %d: the consumer skipped records, seeking back",
                    msg.topic, msg.partition, msg.offset, decision.seek_to - 1)
        await self._seek(msg.tp, decision.seek_to)

    async def _seek(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` back to ``offset`` once every admitted record finished (``offset - 1`` is then the
        last finished one), with faust's bookkeeping reset to it (``faust_adapter.seek_back``)."""
        if self.drain is not None:
            await self.drain()
        await faust_adapter.seek_back(self.app, tp, offset)

    def progress(self, tp: Any, offset: int) -> tuple[bytes, bytes]:
        """Mark ``offset`` as ``tp``'s last finished record; returns the progress record (key, value) that
        the caller writes to the table, after the states of the records up to it (at-least-once: once
        their recommendations and dead letters are acknowledged; exactly-once: together with their
        other writes, in the same transaction)."""
        self._finished[tp] = offset
        return key_of(tp), offset.to_bytes(8, "little", signed=True)

    async def unstall(self) -> int:
        """Seek back each assigned input partition that Kafka holds records for past the last finished
        offset but that delivered none for ``stall_s`` seconds (a consumer skip at the tail of a stream
        leaves no later record to reveal it); once per end offset. Returns how many it sought back."""
        app = self.app
        if app.rebalancing:
            self._last_seen.clear()
            return 0
        now, n = time.monotonic(), 0
        for tp in app.assignor.assigned_actives():
            if tp.topic not in self.inputs:
                continue
            position, end = self.position(tp), app.consumer.highwater(tp)
            idle = now - self._last_seen.setdefault(tp, now)
            # once per end offset (the tail may be transaction markers), but always while a rewind waits
            if stalled(position, end, idle, self.stall_s) and (self.guard.rewinding(tp) or self._stall_end.get(tp) != end):
                self._stall_end[tp], self._last_seen[tp] = end, now
                self.counts["rewound"] += 1
                n += 1
                log.warning("%s:%d: finished offset %d of %d, nothing arrived for %.0f s: seeking back",
                            tp.topic, tp.partition, position, end, idle)
                await self._seek(tp, position + 1)
        return n
