"""The one place where the worker touches private attributes of faust-streaming and aiokafka.

The worker keeps Faust for what it is for (consumer group, partition assignment, tables, their
changelogs and recovery, offset commits and transactions) and goes around its per-record paths,
which cost ~100 us a record on this machine (a task pair per record in the fetch loop, the
conductor, the channel queue, the stream iterator):

- ``install_batch_drain`` gives the app a consumer whose fetch loop (``Consumer._drain_messages``)
  hands every fetched record of the input topics to the worker in one synchronous call per fetch,
  and every other record (changelogs during recovery) to Faust as before; its consumer (served on the
  worker's event loop, not on a thread of its own: ``LoopConsumer``) pauses in aiokafka the partitions
  Faust does not take records from (``hold_inactive``), so that their unconsumed fetches cannot hold
  back the next fetch of the input partitions, and seeks back what a fetch returned that Faust would
  drop, having been consumed in aiokafka (``put_back_undeliverable``: a rebalance during the fetch);
- records are sent with aiokafka batch builders (``streams/writer.py``'s ``Outbox``), through
  Faust's own producer (at-least-once) or the source partition's transactional producer
  (``plain_producer``, ``transactional_producer``); at-least-once, a topic-partition's records join
  the batch aiokafka has queued for it and not sent yet, if any (``queued_batch``);
- the contiguity guard (``streams/sequencer.py``) resets the consumer's offset bookkeeping when it
  seeks back; the state table is read and written per partition, straight in RocksDB.

``check(app)`` verifies at startup that every attribute used here exists in the installed
versions (pyproject pins them: faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0) and stops the worker with
a clear message otherwise, instead of failing on the first event.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

#: (what, how to get it) for every private attribute this module uses: of the classes (checked when the
#: worker is built, before Faust starts) and of the running consumer (checked when consuming starts).
_CLASSES: list[tuple[str, Callable[[Any], Any]]] = [
    ("faust Consumer._drain_messages / _add_gap / getmany",
     lambda app: [getattr(app.transport.Consumer, n) for n in ("_drain_messages", "_add_gap", "getmany",
                                                             "consumer_stopped_errors")]),
    ("faust Producer._producer / _transaction_producers / _trn_locks",
     lambda app: [getattr(app.transport.Producer, n) for n in ("_producer", "_transaction_producers", "_trn_locks")]),
    ("faust rocksdb Store._db_for_partition / _visible_items / set_persisted_offset",
     lambda app: [getattr(__import__("faust.stores.rocksdb", fromlist=["Store"]).Store, n)
                  for n in ("_db_for_partition", "_visible_items", "set_persisted_offset")]),
    ("faust aiokafka Consumer._new_consumer_thread / AIOKafkaConsumerThread._fetch_records",
     lambda app: [app.transport.Consumer._new_consumer_thread,
                  __import__("faust.transport.drivers.aiokafka", fromlist=["x"]).AIOKafkaConsumerThread._fetch_records]),
    ("mode ServiceThread._serve / _thread_running / _gather_remaining_tasks (the consumer on the worker's loop)",
     lambda app: [getattr(__import__("mode.threads", fromlist=["x"]).ServiceThread, n)
                  for n in ("_serve", "_thread_running", "_gather_remaining_tasks")]),
    ("aiokafka AIOKafkaProducer.create_batch / send_batch",
     lambda app: [getattr(__import__("aiokafka").AIOKafkaProducer, n) for n in ("create_batch", "send_batch")]),
]
_RUNNING: list[tuple[str, Callable[[Any], Any]]] = [
    ("faust Consumer._read_offset / _committed_offset / _acked / _acked_index / _gap / _unacked_messages / "
     "_active_partitions / _buffered_partitions",
     lambda app: [getattr(app.consumer, n) for n in ("_read_offset", "_committed_offset", "_acked", "_acked_index",
                                                    "_gap", "_unacked_messages", "suspend_flow", "callback",
                                                    "flow_active", "_active_partitions", "_buffered_partitions")]),
    ("faust Consumer.transactions", lambda app: app.consumer.transactions),
    ("mode ServiceThread._thread_started / parent_loop",
     lambda app: (app.consumer._thread._thread_started, app.consumer._thread.parent_loop)),
    ("aiokafka AIOKafkaProducer._message_accumulator._batches / MessageBatch._builder / future",
     lambda app: _check_queued_batch(plain_producer(app))),
    ("aiokafka Fetcher._records / _subscriptions.subscription",
     lambda app: [(f._records, f._subscriptions.subscription) for f in [app.consumer._thread._ensure_consumer()._fetcher]]),
]


class AdapterError(RuntimeError):
    """The installed faust-streaming / aiokafka lack what the worker relies on."""


def check(app: Any, running: bool = False) -> None:
    """Raise ``AdapterError`` naming every missing attribute (see the module docstring): of the classes,
    or with ``running`` of the started consumer too."""
    missing = []
    for what, get in _CLASSES + (_RUNNING if running else []):
        try:
            get(app)
        except (AttributeError, ImportError, KeyError) as exc:
            missing.append(f"{what} ({exc})")
    if missing:
        import aiokafka
        import faust
        raise AdapterError(
            f"this faust-streaming {faust.__version__} / aiokafka {aiokafka.__version__} lack what the worker relies "
            f"on: {'; '.join(missing)}. Install the versions pyproject.toml pins (pip install 'streamrec[serve]').")


# ---- consuming ------------------------------------------------------------------------------
def install_batch_drain(app: Any, inputs: Iterable[str], deliver: Callable[[list[Any]], None],
                        room: Callable[[], Awaitable[None]] | None = None, own_thread: bool = False) -> None:
    """Make the app's consumer (a subclass of faust's, set on the transport before Faust creates the
    consumer) fetch in batches: each fetch's records of ``inputs`` go to ``deliver`` (one call, in
    fetch order, each record tracked as unacknowledged by Faust); other records go to Faust's own
    per-record callback, as before. After a delivery the loop awaits ``room()`` (backpressure).

    Faust runs aiokafka's consumer on a thread of its own (``own_thread``); by default it runs here on
    the worker's event loop instead. On the thread, each fetch needed the GIL 3-4 times (the fetch
    response, the next request, the hand-over to the loop and back) and waited up to the 5 ms switch
    interval for each while the loop stepped a batch: at 10,000 events/s offered on ml-100k, records
    reached aiokafka's ``fetched_records`` 5.5-8.5 ms (p50) and 31-42 ms (p99) after they were produced
    on the thread, 4-6 ms (p50) on the loop (README, "Streaming figures"). On the loop a fetch waits at
    most for the batch being handled. The loop never blocks for long (slow steps run in the
    inference thread), so aiokafka's heartbeats keep their pace."""
    wanted = frozenset(inputs)
    transport = app.transport

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from mode import Service

    class HoldingThread(AIOKafkaConsumerThread):  # type: ignore[misc]
        async def _fetch_records(self, consumer: Any, active_partitions: Any, timeout: Any = None,
                                 max_records: Any = None) -> Any:
            if active_partitions is not None:
                hold_inactive(consumer, active_partitions)
            generation = app.consumer_generation_id
            got = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
            return put_back_undeliverable(consumer, app.consumer, got, generation != app.consumer_generation_id)

    class LoopConsumer(HoldingThread):  # type: ignore[misc,valid-type]
        """Faust's consumer "thread" served on the worker's own event loop (see ``install_batch_drain``)."""
        _serve_task: asyncio.Future[None] | None = None

        async def start(self) -> None:  # mode's ServiceThread.start, with a task where it starts a thread
            assert not self._thread_started.is_set()
            self._thread_started.set()
            self._thread_running = asyncio.Future(loop=self.parent_loop)
            self._serve_task = asyncio.ensure_future(self._serve())
            try:
                await self._thread_running
            finally:
                self._thread_running = None

        async def stop(self) -> None:  # ServiceThread.stop, with the task awaited where it joins the thread
            if self._started.is_set():
                await Service.stop(self)
                if self._serve_task is not None and not self._serve_task.done():
                    await asyncio.wait([self._serve_task], timeout=self.shutdown_timeout)

        async def _gather_remaining_tasks(self) -> None:
            return None  # mode cancels every task of the thread's loop here: this loop is the worker's

    class BatchConsumer(transport.Consumer):  # type: ignore[name-defined,misc]
        async def _drain_messages(self, fetcher: Any) -> None:
            await _drain(app, self, fetcher, wanted, deliver, room)

        def _new_consumer_thread(self) -> Any:
            if own_thread:
                return HoldingThread(self, loop=self.loop, beacon=self.beacon)
            return LoopConsumer(self, loop=self.loop, thread_loop=self.loop, beacon=self.beacon)

    transport.Consumer = BatchConsumer


def hold_inactive(consumer: Any, active: Any) -> None:
    """Pause, in aiokafka itself, every assigned partition that Faust does not take records from now
    (``active``: Faust's active partitions; the rest it "pauses" in its own bookkeeping only), drop
    what was fetched for them, and resume the ones Faust takes again. Runs where the consumer runs.

    Why: aiokafka's fetcher holds back a broker's next fetch (``prefetch_backoff``, 100 ms) while any
    partition has fetched records that were not consumed. Faust never consumes a recovered active
    changelog partition, yet aiokafka kept fetching it: the first state write to each changelog
    partition came back and held every input partition on that broker for 100 ms (p99 at 100
    events/s 70-90 ms instead of ~10); during recovery, fetched input records held the changelogs
    the same way. aiokafka moves a partition's position only when records are consumed, so what is
    dropped here is fetched again after a resume."""
    assignment = consumer._fetcher._subscriptions.subscription
    assignment = assignment.assignment if assignment is not None else None
    if assignment is None:
        return
    records = consumer._fetcher._records
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if tp in active:
            if state.paused:
                state.resume()
        else:
            if not state.paused:
                state.pause()
            records.pop(tp, None)


def undeliverable(fetched: Iterable[Any], flow_active: bool, new_generation: bool, active: Collection[Any] | None,
                  buffered: Collection[Any]) -> list[Any]:
    """The partitions of a fetch's records that Faust's ``getmany`` would drop after aiokafka consumed
    them: all of them when the flow stopped or the consumer generation changed while the fetch waited
    (a rebalance), else those no longer active (nor buffered). Pure."""
    if not flow_active or new_generation:
        return list(fetched)
    if active is None:
        return []
    return [tp for tp in fetched if tp not in active and tp not in buffered]


def put_back_undeliverable(consumer: Any, faust_consumer: Any, fetched: dict[Any, list[Any]],
                           new_generation: bool) -> dict[Any, list[Any]]:
    """Seek each ``undeliverable`` partition of a fetch back to its first fetched record (still assigned
    ones; the others' new owner reads from the committed offset) and return the rest of the fetch.

    Why: a fetch waits up to a second for records. When a rebalance happens during that wait, aiokafka
    can return records of the partitions just assigned, their positions already moved past them, while
    Faust's flow is still stopped for the recovery. Faust (0.15) drops them and "seeks back to the
    committed offsets", which for a partition nothing was ever committed on is no seek at all (aiokafka
    seeks only to a committed offset above 0): those records were never read. The two-worker test of
    ``tests/streams/test_wrong_partition_kafka.py`` lost the first 81-123 records of one or two
    partitions that way in 2 of 4 runs in a loop (none of 24 with this put-back)."""
    if not fetched:
        return fetched
    back = undeliverable(fetched, faust_consumer.flow_active, new_generation, faust_consumer._active_partitions,
                         faust_consumer._buffered_partitions)
    if not back:
        return fetched
    assigned = consumer.assignment()
    for tp in back:
        if tp in assigned:
            consumer.seek(tp, fetched[tp][0].offset)
    return {tp: records for tp, records in fetched.items() if tp not in back}


async def _drain(app: Any, consumer: Any, fetcher: Any, wanted: frozenset[str], deliver: Callable[[list[Any]], None],
                 room: Callable[[], Awaitable[None]] | None) -> None:
    """The fetch loop: faust 0.15's ``Consumer._drain_messages`` without its task pair per input record.
    As there, a record is dropped (its partition is read again from the committed offset after the
    rebalance) when the flow is suspended, and gaps in the offsets are recorded for the commit."""
    callback = consumer.callback
    consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
    read_offset = consumer._read_offset
    acks_enabled_for = app.topics.acks_enabled_for
    unacked = consumer._unacked_messages  # faust's track_message without its per-record sensor call
    suspended = consumer.suspend_flow.is_set
    while not (consumer_stopped() or fetcher_stopped()):
        batch: list[Any] = []
        try:
            async for tp, message in consumer.getmany(timeout=1.0):
                offset = message.offset
                r_offset = read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue  # before what was already read (faust drops these too)
                if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, r_offset + 1, offset)
                if message.topic not in wanted:
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                elif not suspended():
                    message.tracked = True
                    unacked.add(message)
                    batch.append(message)
                read_offset[tp] = offset
        except consumer.consumer_stopped_errors:
            if app.should_stop:  # stopping: faust returns here too
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:  # a stop cancels the fetch (faust: "Consumer shutting down for user cancel")
                return
            raise
        if batch:
            deliver(batch)
            if room is not None:
                await room()
        await asyncio.sleep(0)


def skip_unacked(app: Any, message: Any) -> None:
    """Let ``message`` go without acknowledging it: it comes again (after a seek or a rebalance), so its
    offset must not count as done for a commit, and a clean stop must not wait for it."""
    message.acked = True  # faust's ack() is a no-op for an acked message
    app.consumer._unacked_messages.discard(message)


def forget_read_offset(app: Any, tp: Any) -> None:
    """Let the fetch loop deliver ``tp``'s records again from wherever the consumer reads next."""
    app.consumer._read_offset[tp] = None


async def seek_back(app: Any, tp: Any, offset: int) -> None:
    """Seek ``tp`` back to ``offset`` and make faust's bookkeeping of it agree: faust (0.15) keeps the
    offset it last committed, the offsets acknowledged since and the last offset its fetch loop
    delivered, all past a hole the consumer skipped; reset to ``offset - 1`` (the last finished record)
    the next commits cover exactly the finished records."""
    consumer = app.consumer
    await consumer.seek(tp, offset)
    consumer._read_offset[tp] = None
    consumer._committed_offset[tp] = offset - 1
    for bookkeeping in (consumer._acked, consumer._acked_index, consumer._gap):
        bookkeeping.pop(tp, None)


# ---- the state table's RocksDB --------------------------------------------------------------
def partition_db(table: Any, partition: int) -> Any:
    """The table's local RocksDB (rocksdict ``Rdict``) of ``partition``."""
    return table.data._db_for_partition(partition)


def index_keys(table: Any, keys: Iterable[bytes], partition: int) -> None:
    """Tell faust's store which partition holds ``keys`` (its ``get`` looks there first)."""
    index = table.data._key_index
    for key in keys:
        index[key] = partition


def forget_key(table: Any, key: bytes) -> None:
    table.data._key_index.pop(key, None)


def visible_items(table: Any, db: Any) -> Iterable[tuple[bytes, bytes]]:
    return table.data._visible_items(db)


def changelog_written(app: Any, table: Any, exactly_once: bool) -> Callable[[Any], None]:
    """A done-callback for the delivery future of a changelog batch: record its offset as the one to
    restore from, as faust's own table writes do (exactly-once: once the transaction commits)."""
    def done(future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        if exactly_once:
            app.tables.persist_offset_on_commit(table.data, result.topic_partition, result.offset)
        else:
            table.data.set_persisted_offset(result.topic_partition, result.offset)
    return done


# ---- producing ------------------------------------------------------------------------------
def plain_producer(app: Any) -> Any:
    """The aiokafka producer Faust started (at-least-once writes)."""
    return app.producer._producer


def queued_batch(producer: Any, topic: str, partition: int) -> tuple[Any, asyncio.Future[Any]] | None:
    """The batch ``producer`` has queued for ``topic``/``partition`` and not handed to a request yet (the last
    one, if several): its builder (``append`` returns None once the batch is full or has gone) and its
    delivery future (aiokafka's own: shield it before awaiting); None when there is none. A record
    appended to that builder now leaves with the batch: aiokafka builds a batch's bytes only when it
    sends it, after taking it off this queue."""
    queued = producer._message_accumulator._batches.get((topic, partition))
    if not queued:
        return None
    batch = queued[-1]
    return batch._builder, batch.future


def _check_queued_batch(producer: Any) -> tuple[Any, Any]:
    """What ``queued_batch`` reads, on an empty batch of the running producer (never queued)."""
    from aiokafka.producer.message_accumulator import MessageBatch
    from aiokafka.structs import TopicPartition

    producer._message_accumulator._batches.get(("streamrec-check", 0))
    batch = MessageBatch(TopicPartition("streamrec-check", 0), producer.create_batch(), 1.0, 0.0)
    return batch._builder.append, batch.future


def transactional_producer(app: Any, topic: str, partition: int) -> tuple[Any, asyncio.Lock]:
    """Exactly-once: the aiokafka producer of the transaction open for input ``topic``/``partition``, and
    the lock that keeps Faust's commit from falling between writes that go together."""
    producer = app.consumer.transactions.producer
    transactional_id = f"{app.conf.id}-{app.assignor.group_for_topic(topic)}-{partition}"
    sender = producer._transaction_producers.get(transactional_id)
    if sender is None:
        raise RuntimeError(f"no transaction is open for {transactional_id} (partition revoked?)")
    return sender, producer._trn_locks[transactional_id]
