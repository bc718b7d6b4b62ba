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

aiokafka keeps one produce request in flight per broker, and ``send_batch`` waits while the
topic-partition still has a batch queued behind it: a loop that sends each micro-batch itself waits
a broker round trip whenever the last one's records have not gone yet. ``Sender`` hands records
over from a task of its own, in the order they were given, and merges what queued up meanwhile into
one builder per topic-partition (fewer, larger requests exactly when the broker is behind)::

    sender = Sender(lambda: producer, partitions_of, partitioner)
    handed = sender.send([("recommendations", key, value, None), ...])  # queued, in order
    futures = await handed                                               # their builders' delivery futures
"""
from __future__ import annotations

import asyncio
from collections import deque
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
        self._parts: list[dict[int, None]] = [{}]  # per part (``part``): ids of the builders holding its records
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
        self._parts[-1][id(builder)] = None
        self.n += 1

    def part(self) -> None:
        """The records added from now on belong to the next part (``send_parts``)."""
        self._parts.append({})

    async def send(self) -> list[Any]:
        """Hand every builder to the producer (in the order they filled, then the open ones); returns the
        delivery futures. Kafka keeps records in order per partition."""
        return [future for part in await self.send_parts(whole=True) for future in part]

    async def send_parts(self, whole: bool = False) -> list[list[Any]]:
        """``send``, with the delivery futures of each part's builders (a builder shared by two parts is in
        both), or (``whole``) of every builder once."""
        batches = self._full + [(topic, partition, b) for (topic, partition), b in self._open.items()]
        parts = [[id(b) for _, _, b in batches]] if whole else [list(p) for p in self._parts]
        self._full, self._open, self._parts, self.n = [], {}, [{}], 0
        futures = {}
        for topic, partition, builder in batches:
            futures[id(builder)] = await self.producer.send_batch(builder, topic, partition=partition)
        return [[futures[i] for i in part] for part in parts]


Record = tuple[str, "bytes | None", "bytes | None", "int | None"]  # topic, key, value, partition (None: the key's)


class Sender:
    """Records handed to a producer from a task of its own, in the order given (see the module docstring)."""

    def __init__(self, producer_of: Callable[[], Any], partitions_of: Callable[[str], int],
                 partitioner: KeyPartitioner) -> None:
        self.producer_of, self.partitions_of, self.partitioner = producer_of, partitions_of, partitioner
        self._queue: deque[tuple[list[Record], asyncio.Future[list[Any]]]] = deque()
        self._task: asyncio.Future[None] | None = None
        self.handovers = 0  # hand-overs so far (each: one send_batch per topic-partition)
        self.merged = 0  # sends that went with an earlier one's hand-over, as it waited for the broker

    def send(self, records: list[Record]) -> asyncio.Future[list[Any]]:
        """Queue ``records``; the future resolves to the delivery futures of the builders holding them once
        they are handed over (or fails with the producer's error)."""
        handed: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((records, handed))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return handed

    async def _run(self) -> None:
        while self._queue:
            taken = list(self._queue)
            self._queue.clear()
            box = Outbox(self.producer_of(), self.partitions_of, self.partitioner)
            try:
                for records, _ in taken:
                    for topic, key, value, partition in records:
                        box.add(topic, key, value, partition)
                    box.part()
                parts = await box.send_parts()
            except Exception as exc:  # noqa: BLE001 - each send's owner gets it (the worker stops with it)
                for _, handed in taken:
                    if not handed.done():
                        handed.set_exception(exc)
                continue
            self.handovers += 1
            self.merged += len(taken) - 1
            for (_, handed), futures in zip(taken, parts):
                if not handed.done():
                    handed.set_result(futures)
