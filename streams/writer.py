"""Batched sends straight through aiokafka: records grouped per topic-partition, one builder each.

aiokafka's ``send`` costs tens of microseconds a record in Python (partitioner, serializer,
accumulator) and Faust's ``topic.send`` several times more. ``Outbox`` instead appends each
record to a ``BatchBuilder`` of its topic-partition and hands each builder to the producer with
one ``send_batch``; the delivery futures are per builder. Keys without an explicit partition go
where Kafka's default partitioner (murmur2, as the Java client and aiokafka) puts them.

    box = Outbox(producer, partitions_of)
    box.add("recommendations", key, value)            # the key's default partition
    box.add("worker-user-state-changelog", key, value, partition=3)
    futures = await box.send()                         # one future per builder, in order
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamrec.streams.partitioner import KeyPartitioner


class Outbox:
    """Records for one producer, batched per topic-partition until ``send``."""

    def __init__(self, producer: Any, partitions_of: Callable[[str], int], partitioner: KeyPartitioner) -> None:
        self.producer = producer
        self.partitions_of = partitions_of
        self.partitioner = partitioner
        self._open: dict[tuple[str, int], Any] = {}  # (topic, partition) -> the builder being filled
        self._full: list[tuple[str, int, Any]] = []  # builders that filled up, in order
        self.n = 0

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        if partition is None:
            partition = self.partitioner(key, self.partitions_of(topic)) if key is not None else 0
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self.producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:  # full: start another one
            self._full.append((topic, partition, builder))
            builder = self._open[tp] = self.producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'') + len(key or b'')} bytes does not fit in one "
                                 f"batch for {topic}")
        self.n += 1

    async def send(self) -> list[Any]:
        """Hand every builder to the producer (in the order they filled, then the open ones); returns the
        delivery futures. Kafka keeps records in order per partition."""
        batches = self._full + [(topic, partition, b) for (topic, partition), b in self._open.items()]
        self._full, self._open, self.n = [], {}, 0
        futures = []
        for topic, partition, builder in batches:
            futures.append(await self.producer.send_batch(builder, topic, partition=partition))
        return futures
