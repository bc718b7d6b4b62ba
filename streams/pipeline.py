"""Micro-batches whose writes are in flight, finished strictly in arrival order.

Waiting for Kafka to acknowledge a batch's recommendations before stepping the next batch costs a
broker round trip per batch. The worker instead steps batch after batch and hands each batch's
*completion* (wait for its deliveries, then store its states, record its offsets, acknowledge its
records to Faust) to a ``Pipeline``: one task that runs the completions one at a time, in the order
they were put. A record therefore counts as done exactly when its writes are, only the next batches
no longer wait for it. ``depth`` bounds how many completions may wait (backpressure: ``put`` waits
when it is full).

    pipeline = Pipeline(depth=4)
    await pipeline.put(complete(batch))   # a coroutine object: it starts when its turn comes
    await pipeline.drain()                # every completion put so far has run

A completion that raises stops the pipeline: the next ``put`` or ``drain`` raises that error (the
worker then stops with it, as it did when it awaited the write itself); later completions never run.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class Pipeline:
    """A bounded FIFO of completions run one at a time, in order, by one task."""

    def __init__(self, depth: int, on_error: Callable[[BaseException], Awaitable[Any]] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._queue: asyncio.Queue[Coroutine[Any, Any, Any]] = asyncio.Queue(maxsize=depth)
        self._task: asyncio.Task[None] | None = None
        self._on_error = on_error  # told at once (the worker crashes the app with it)
        self.error: BaseException | None = None

    def __len__(self) -> int:
        return self._queue.qsize()

    async def put(self, completion: Coroutine[Any, Any, Any]) -> None:
        """Queue ``completion`` behind the ones already put (waits while ``depth`` are waiting)."""
        if self.error is not None:
            completion.close()
            raise self.error
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="streamrec-completions")
        await self._queue.put(completion)
        if self.error is not None:  # it failed while this put waited for room: this one never runs
            completion.close()
            raise self.error

    async def drain(self) -> None:
        """Until every completion put so far has run; raises the error that stopped the pipeline."""
        if self._task is not None and self.error is None:
            waiter = asyncio.ensure_future(self._queue.join())
            await asyncio.wait([waiter, self._task], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if self.error is not None:
            raise self.error

    async def _run(self) -> None:
        while True:
            completion = await self._queue.get()
            try:
                if self.error is None:
                    await completion
                else:
                    completion.close()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - kept and raised by put/drain
                self.error = exc
                while not self._queue.empty():  # later completions must not run after a failed one
                    self._queue.get_nowait().close()
                    self._queue.task_done()
                if self._on_error is not None:
                    await self._on_error(exc)
                return
            finally:
                self._queue.task_done()
