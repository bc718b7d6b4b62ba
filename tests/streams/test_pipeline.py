"""``streams.pipeline.Pipeline``: completions run one at a time, in the order put, bounded, errors kept."""
from __future__ import annotations

import asyncio

import pytest

from streamrec.streams.pipeline import Pipeline


def test_completions_run_in_order_even_when_later_writes_finish_first() -> None:
    async def main() -> list[int]:
        done: list[int] = []
        pipeline = Pipeline(depth=8)

        async def complete(i: int, delay: float) -> None:
            await asyncio.sleep(delay)
            done.append(i)

        for i in range(20):  # early completions are the slow ones
            await pipeline.put(complete(i, 0.02 if i % 5 == 0 else 0.0))
        await pipeline.drain()
        return done

    assert asyncio.run(main()) == list(range(20))


def test_put_waits_while_depth_completions_wait() -> None:
    async def main() -> tuple[list[int], list[int]]:
        pipeline, gate = Pipeline(depth=2), asyncio.Event()
        waiting_at_put: list[int] = []

        async def blocked() -> None:
            await gate.wait()

        async def noop() -> None:
            return None

        await pipeline.put(blocked())  # taken by the runner at once
        await pipeline.put(noop())
        await pipeline.put(noop())  # the queue now holds depth = 2
        third = asyncio.ensure_future(pipeline.put(noop()))
        await asyncio.sleep(0.05)
        waiting_at_put.append(int(not third.done()))
        gate.set()
        await third
        await pipeline.drain()
        return waiting_at_put, [len(pipeline)]

    assert asyncio.run(main()) == ([1], [0])


def test_a_failed_completion_stops_the_pipeline_and_is_reported() -> None:
    async def main() -> tuple[list[int], list[str], str, str]:
        ran: list[int] = []
        told: list[str] = []

        async def on_error(exc: BaseException) -> None:
            told.append(str(exc))

        pipeline = Pipeline(depth=10, on_error=on_error)

        async def complete(i: int) -> None:
            if i == 3:
                raise RuntimeError("delivery failed")
            ran.append(i)

        for i in range(6):
            await pipeline.put(complete(i))
        with pytest.raises(RuntimeError, match="delivery failed") as at_drain:
            await pipeline.drain()
        with pytest.raises(RuntimeError) as at_put:
            await pipeline.put(complete(7))
        return ran, told, str(at_drain.value), str(at_put.value)

    ran, told, at_drain, at_put = asyncio.run(main())
    assert ran == [0, 1, 2]  # nothing after the failed one ran
    assert told == ["delivery failed"] and at_drain == at_put == "delivery failed"


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Pipeline(depth=0)
