"""``Outbox`` against aiokafka's own accumulator (no broker: the producer is never started, nothing leaves)."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from streamrec.streams.partitioner import KeyPartitioner
from streamrec.streams.writer import Outbox


def _values(buffer: bytes) -> list[bytes]:
    return [record.value for record in MemoryRecords(bytes(buffer)).next_batch()]


def test_records_join_the_batch_the_producer_has_queued_and_leave_with_it() -> None:
    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")  # never started
        queue = producer._message_accumulator._batches
        tp = TopicPartition("recs", 1)
        earlier = producer.create_batch()
        earlier.append(key=b"u0", value=b"first", timestamp=None)
        await producer._message_accumulator.add_batch(earlier, tp, timeout=1.0)  # queued behind a request

        box = Outbox(producer, lambda topic: 2, KeyPartitioner(), join_queued=True)
        box.add("recs", b"u1", b"second", partition=1)
        box.add("recs", b"u2", b"third", partition=1)
        assert box.joined == 2
        futures = await box.send()
        assert len(futures) == 1 and len(queue[tp]) == 1  # no batch of its own: nothing to wait for
        again = Outbox(producer, lambda topic: 2, KeyPartitioner(), join_queued=True)
        again.add("recs", b"u1", b"fourth", partition=1)
        (waiting,) = await again.send()
        waiting.cancel()  # a worker stopping while it waits: aiokafka's own future goes on
        await asyncio.sleep(0)
        assert not queue[tp][0].future.cancelled()

        batch = queue[tp].popleft()  # the producer's sender takes it and builds its bytes
        assert _values(batch.get_data_buffer()) == [b"first", b"second", b"third", b"fourth"]  # in order
        batch.done(base_offset=40)
        assert (await futures[0]).offset == 40  # the joined records are acknowledged with it

        # once it has gone, records start a builder of their own; without join_queued they always do
        for join in (True, False):
            box = Outbox(producer, lambda topic: 2, KeyPartitioner(), join_queued=join)
            box.add("recs", b"u3", b"fifth", partition=1)
            assert box.joined == 0 and len(box._open) == 1
        later = producer.create_batch()
        await producer._message_accumulator.add_batch(later, tp, timeout=1.0)
        box = Outbox(producer, lambda topic: 2, KeyPartitioner(), join_queued=False)
        box.add("recs", b"u4", b"sixth", partition=1)
        assert box.joined == 0 and later.record_count() == 0

    asyncio.run(main())


def test_a_full_queued_batch_is_not_joined() -> None:
    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=1024)
        tp = TopicPartition("recs", 0)
        queued = producer.create_batch()
        while queued.append(key=b"u", value=b"x" * 100, timestamp=None) is not None:
            pass
        await producer._message_accumulator.add_batch(queued, tp, timeout=1.0)
        n = queued.record_count()
        box = Outbox(producer, lambda topic: 1, KeyPartitioner(), join_queued=True)
        box.add("recs", b"u", b"y" * 100, partition=0)
        assert queued.record_count() == n and box.joined == 0  # the record went to a builder of its own
        assert [b.record_count() for b in box._open.values()] == [1] and box._full == []  # nor waited for

    asyncio.run(main())
