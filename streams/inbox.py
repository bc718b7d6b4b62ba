"""``Inbox``: the input records the consumer fetched and the worker has not taken yet.

The consumer's fetch loop (``faust_adapter.install_batch_drain``) puts each fetch's records in
with one synchronous call; the worker takes micro-batches out::

    inbox = Inbox(batch_max=256, batch_wait=0.001)
    inbox.put(records)                 # from the fetch loop
    batch = await inbox.take()         # 1 .. batch_max records, in fetch order

``take`` returns as soon as ``batch_max`` records are there; with fewer, it waits at most
``batch_wait`` seconds for more (a lone record is never delayed longer). Under load the worker
comes back to a full inbox and the batches grow by themselves. ``put`` never blocks (the fetch loop
must keep serving Faust's other topics); ``space`` lets the fetch loop wait while the inbox holds
more than ``limit`` records (backpressure: Kafka keeps the rest).
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any


class Inbox:
    def __init__(self, batch_max: int, batch_wait: float, limit: int | None = None) -> None:
        if batch_max < 1 or batch_wait < 0:
            raise ValueError(f"batch_max must be >= 1 and batch_wait >= 0, got {batch_max}, {batch_wait}")
        self.batch_max, self.batch_wait = batch_max, batch_wait
        self.limit = limit if limit is not None else 4 * batch_max
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()  # something to take
        self._full = asyncio.Event()  # batch_max to take
        self._room = asyncio.Event()  # at most limit held
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: Iterable[Any]) -> None:
        self._items.extend(items)
        n = len(self._items)
        if n:
            self._ready.set()
        if n >= self.batch_max:
            self._full.set()
        if n > self.limit:
            self._room.clear()

    async def space(self) -> None:
        """Until the inbox holds at most ``limit`` records."""
        await self._room.wait()

    async def take(self) -> list[Any]:
        """The next 1 .. ``batch_max`` records in the order they were put (see the module docstring)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        if len(self._items) < self.batch_max and self.batch_wait > 0:
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), self.batch_wait)
            except asyncio.TimeoutError:
                pass
        n = min(self.batch_max, len(self._items))
        batch = [self._items.popleft() for _ in range(n)]
        self._after_take()
        return batch

    def discard(self, let_go: Callable[[Any], None]) -> int:
        """Drop every record held (a rebalance or a stop: they come again), calling ``let_go`` on each."""
        n = len(self._items)
        while self._items:
            let_go(self._items.popleft())
        self._after_take()
        return n

    def _after_take(self) -> None:
        n = len(self._items)
        if n < self.batch_max:
            self._full.clear()
        if not n:
            self._ready.clear()
        if n <= self.limit:
            self._room.set()
