"""A micro-batch's writes and their completion: the worker's publishing side.

``Worker`` (``streams/worker.py``) plans a batch and hands the plan to ``Publisher.write``, which
sends it and returns the batch's completion, a coroutine the worker's ordered ``Pipeline`` runs
(batches complete in arrival order)::

    completion = await publisher.write(admitted, fresh, plan)   # outputs sent (both guarantees)
    await completion                                             # delivered; records acknowledged

At-least-once: recommendations and dead letters go out first; the completion then sends the users'
states and the partitions' progress to the table's changelog, and only once Kafka acknowledged
those (``_store_when_written``, batch after batch) are they stored in the local RocksDB copy and
the batch's records acknowledged to Faust. Until then a user's newest state is in ``pending``,
where the next batch reads it. Exactly-once: each batch's outputs, states and progress are
written in the open transaction of their source partition, back to back under its lock, and the
records are acknowledged once delivered.

It reaches Faust's producers, transaction locks and RocksDB store only through
``streams/faust_adapter.py``.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from streamrec.streams import faust_adapter
from streamrec.streams.batch import EMITTED, WARMED, Plan
from streamrec.streams.config import WorkerConfig
from streamrec.streams.logic import DUPLICATE, REDELIVERED
from streamrec.streams.partitioner import KeyPartitioner
from streamrec.streams.sequencer import Sequencer
from streamrec.streams.writer import Outbox

log = logging.getLogger("streamrec.worker")


class Publisher:
    """Writes each planned batch and completes it (see the module docstring)."""

    def __init__(self, app: Any, states: Any, sequencer: Sequencer, config: WorkerConfig, counts: Counter[str],
                 rejected: Counter[str], publish_latency: Any, partitioner: KeyPartitioner,
                 on_failure: Callable[[BaseException], Awaitable[None]]) -> None:
        self.app, self.states, self.sequencer, self.config = app, states, sequencer, config
        self.changelog = states.changelog_topic.get_topic_name()
        self.exactly_once = config.guarantee == "exactly_once"
        self.counts, self.rejected = counts, rejected  # the worker's counters (GET /health)
        self.publish_latency = publish_latency  # histogram: Kafka timestamp of a record -> its writes acknowledged
        self.on_failure = on_failure  # a write failed: the worker stops with it
        self.partitioner = partitioner  # the worker's (its cache of key partitions)
        # At-least-once: user key -> packed state whose events' recommendations Kafka has not acknowledged
        # yet; the table gets it only then, the user's next events read it from here.
        self.pending: dict[bytes, bytes] = {}
        # At-least-once: the last batch's _store_when_written (each awaits the one before: stored in order)
        self._stored: asyncio.Future[bool] | None = None
        self._partition_counts: dict[str, int] = {}

    async def stored(self) -> None:
        """Until every batch completed so far is also stored (at-least-once; nothing to wait for else)."""
        if self._stored is not None:
            await asyncio.wait([self._stored])

    async def write(self, admitted: list[Any], fresh: list[Any], plan: Plan) -> Any:
        """Start the batch's writes; returns its completion (a coroutine the pipeline runs in order).

        At-least-once: recommendations and dead letters are sent now; the states and the partitions'
        progress go to the table (and its changelog) in the completion, once Kafka acknowledged them:
        after a crash an event the state includes always has its recommendation in the topic.
        Exactly-once: everything (outputs, states, progress) is written now, grouped per source
        partition, in that partition's open transaction, back to back under its lock; the records count
        as done once delivered (Faust then commits their offsets in a transaction that holds their writes
        or follows one that committed them)."""
        counts = plan.counts()
        for reason, n in counts.items():
            if reason not in (EMITTED, DUPLICATE, REDELIVERED, WARMED):
                self.rejected[reason] += n
                self.counts["rejected"] += n
                log.info("%d dead letter(s): %s", n, reason)
            elif reason != EMITTED:
                self.counts[reason] += n
        blobs = {key: (i, partition, state.pack()) for key, (i, partition, state) in plan.states.items()}
        last = {}  # (topic, partition) -> its last new record's offset (replayed ones are finished already)
        for m in fresh:
            last[m.tp] = m.offset
        if self.exactly_once:
            futures = await self._write_in_transactions(fresh, plan, blobs, last)
            return self._complete(admitted, futures, counts[EMITTED], None, None, fresh)
        for key, (_, _, blob) in blobs.items():
            self.pending[key] = blob
        box = self._outbox(faust_adapter.plain_producer(self.app), join_queued=True)
        for _, topic, key, value in plan.outputs:
            box.add(topic, key, value)
        futures = await box.send()
        return self._complete(admitted, futures, counts[EMITTED], blobs, last, fresh)

    def _outbox(self, producer: Any, join_queued: bool = False) -> Outbox:
        """At-least-once (``join_queued``): records join the batches the producer has queued (streams/writer.py).
        Not in transactions: a queued batch may belong to one that is committing."""
        return Outbox(producer, self._partitions_of, self.partitioner, join_queued)

    def _partitions_of(self, topic: str) -> int:
        """Partitions of an output topic (cached: where a key's records go must not change)."""
        n = self._partition_counts.get(topic)
        if n is None:
            found = faust_adapter.plain_producer(self.app).client.cluster.partitions_for_topic(topic)
            n = len(found) if found else self.config.partitions
            if found:
                self._partition_counts[topic] = n
        return n

    async def _write_in_transactions(self, fresh: list[Any], plan: Plan, blobs: dict[bytes, tuple[int, int, bytes]],
                                     last: dict[Any, int]) -> list[Any]:
        """Exactly-once: the batch's writes grouped by the transaction of their source partition (both
        input topics' partition p share one when Faust puts them in one partition group), each group in
        arrival order: outputs, then states, then progress; local RocksDB first, then Kafka under the
        transaction's lock."""
        producers: dict[Any, tuple[Any, Any]] = {}  # source tp -> (sender, lock)
        for tp in last:
            producers[tp] = faust_adapter.transactional_producer(self.app, tp.topic, tp.partition)
        group: dict[int, list[tuple[str, bytes | None, bytes, int | None]]] = defaultdict(list)
        lock_of: dict[int, tuple[Any, Any]] = {}

        def add(tp: Any, record: tuple[str, bytes | None, bytes, int | None]) -> None:
            sender, lock = producers[tp]
            lock_of[id(sender)] = (sender, lock)
            group[id(sender)].append(record)

        for i, topic, key, value in plan.outputs:
            add(fresh[i].tp, (topic, key, value, None))
        for key, (i, partition, blob) in blobs.items():
            add(fresh[i].tp, (self.changelog, key, blob, partition))
        for tp, offset in last.items():
            add(tp, (self.changelog, *self.sequencer.progress(tp, offset), tp.partition))
        futures: list[Any] = []
        for sid, records in group.items():
            local: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
            for topic, key, value, partition in records:
                if topic == self.changelog:
                    local[partition].append((key, value))  # type: ignore[index]
            self.put_local(local)
            sender, lock = lock_of[sid]
            box = self._outbox(sender)
            for topic, key, value, partition in records:
                box.add(topic, key, value, partition)
            async with lock:
                sent = await box.send()
            futures += sent
            self._track_changelog(sent, records)
        return futures

    def _track_changelog(self, futures: list[Any], records: list[Any]) -> None:
        if any(topic == self.changelog for topic, *_ in records):
            done = faust_adapter.changelog_written(self.app, self.states, self.exactly_once)
            for future in futures:
                future.add_done_callback(lambda f: _if_changelog(f, self.changelog, done))

    def put_local(self, by_partition: dict[int, list[tuple[bytes, bytes]]]) -> None:
        """Write ``(key, value)`` pairs to the table's local RocksDB copy of each partition."""
        for partition, pairs in by_partition.items():
            db = faust_adapter.partition_db(self.states, partition)
            for key, value in pairs:
                db[key] = value
            faust_adapter.index_keys(self.states, (key for key, _ in pairs), partition)

    async def _complete(self, admitted: list[Any], futures: list[Any], emitted: int,
                        blobs: dict[bytes, tuple[int, int, bytes]] | None, last: dict[Any, int] | None,
                        fresh: list[Any]) -> None:
        """Run by the pipeline, in arrival order: wait for the batch's writes; count it. Exactly-once:
        acknowledge every record to Faust. At-least-once: send its states and its partitions' progress
        to the changelog (in this order: one changelog partition holds both) and leave the rest to
        ``_store_when_written``."""
        for future in futures:
            await future
        if fresh:  # Kafka timestamps (seconds) of the new records -> their writes acknowledged
            stamps = np.fromiter((m.timestamp for m in fresh), dtype=np.float64, count=len(fresh))
            self.publish_latency.observe_many(time.time() - stamps)
        self.counts["emitted"] += emitted
        if blobs is None or last is None:
            self._acknowledge(admitted)
            return
        local: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        box = self._outbox(faust_adapter.plain_producer(self.app), join_queued=True)
        for key, (_, partition, blob) in blobs.items():
            local[partition].append((key, blob))
            box.add(self.changelog, key, blob, partition)
        for tp, offset in last.items():
            finished = self.sequencer.finished(tp)
            if finished is None or offset > finished:  # (redelivered records are acknowledged only)
                key, value = self.sequencer.progress(tp, offset)
                local[tp.partition].append((key, value))
                box.add(self.changelog, key, value, tp.partition)
        sent = await box.send()
        self._stored = asyncio.ensure_future(self._store_when_written(self._stored, sent, local, blobs, admitted))

    async def _store_when_written(self, previous: asyncio.Future[bool] | None, futures: list[Any],
                                  local: dict[int, list[tuple[bytes, bytes]]],
                                  blobs: dict[bytes, tuple[int, int, bytes]], admitted: list[Any]) -> bool:
        """At-least-once, after the previous batch's (in arrival order, so the local table never goes
        back): once Kafka has acknowledged the batch's changelog writes, store its states and progress
        in the local table, then acknowledge its records to Faust. Returns whether it did.

        Neither may come earlier. Faust commits the offsets of acknowledged records: a crash after such
        a commit but before the changelog had the states would lose them, as the records never come
        again. And a local table ahead of its changelog survives a SIGKILL (RocksDB's log is on disk):
        the worker would count the redelivered records as finished and never write their states to
        the changelog. Behind is safe: those records come again and are stepped again, to the same
        states. Runs beside the pipeline: the next batch's completion does not wait for this round trip."""
        if previous is not None and not await previous:
            return False  # the worker is stopping with that batch's error
        try:
            for future in futures:
                await future
        except Exception as exc:  # noqa: BLE001 - the worker stops with it; the records come again
            await self.on_failure(exc)
            return False
        self.put_local(local)
        for key, (_, _, blob) in blobs.items():
            if self.pending.get(key) is blob:  # no later event of the user is in flight
                del self.pending[key]
        done = faust_adapter.changelog_written(self.app, self.states, False)
        for future in futures:
            done(future)
        self._acknowledge(admitted)
        return True

    def _acknowledge(self, admitted: list[Any]) -> None:
        ack = self.app.consumer.ack
        for m in admitted:
            ack(m)


def _if_changelog(future: Any, changelog: str, done: Any) -> None:
    if not future.cancelled() and future.exception() is None and future.result().topic_partition.topic == changelog:
        done(future)
