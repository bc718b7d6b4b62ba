"""streams.progress: the contiguity rule of input partitions, no Kafka.

``_Partition`` plays a consumer over one partition's log that can skip records and be sought back,
with records already fetched before a seek still arriving (a stream buffer); the worker's loop is
``check`` -> apply / seek. Whatever the consumer skips, every existing offset is applied exactly
once and in order.
"""
from __future__ import annotations

import random

import pytest

from streamrec.streams.progress import APPLY, REPLAYED, REWIND, STALE, PartitionGuard, stalled


class _Partition:
    def __init__(self, offsets: list[int], buffered: int = 3) -> None:
        self.log, self.pos, self.buffer, self.buffered = offsets, 0, [], buffered

    def seek(self, offset: int) -> None:  # what was fetched before stays in the buffer
        self.pos = next((i for i, o in enumerate(self.log) if o >= offset), len(self.log))

    def next(self, rng: random.Random, skip_p: float) -> int | None:
        while len(self.buffer) < self.buffered and self.pos < len(self.log):
            if rng.random() < skip_p:  # the consumer loses a run of records
                self.pos += rng.randint(1, 5)
                continue
            self.buffer.append(self.log[self.pos])
            self.pos += 1
        return self.buffer.pop(0) if self.buffer else None


def _drive(log: list[int], skip_p: float, seed: int, finished: int | None = None) -> tuple[list[int], list]:
    rng, part, guard = random.Random(seed), _Partition(log), PartitionGuard()
    applied, absent = [], []
    for _ in range(20 * len(log)):
        offset = part.next(rng, skip_p)
        if offset is None:
            if finished is not None and finished + 1 <= log[-1]:  # the tail went missing: a stall
                part.seek(finished + 1)
                continue
            break
        d = guard.check("tp", offset, finished)
        if d.action == APPLY:
            applied.append(offset)
            finished = offset
            if d.absent:
                absent.append(d.absent)
        elif d.action == REWIND:
            part.seek(d.seek_to)
    return applied, absent


@pytest.mark.parametrize("seed", range(20))
def test_every_record_once_in_order_whatever_the_consumer_skips(seed: int) -> None:
    log = list(range(500))
    applied, absent = _drive(log, skip_p=0.05, seed=seed, finished=-1)
    assert applied == log
    assert absent == []


def test_offsets_that_do_not_exist_are_passed_once_and_counted() -> None:
    # transaction markers every 10 offsets and a deleted stretch: those offsets never arrive
    log = [o for o in range(300) if o % 10 != 9 and not 100 <= o < 140]
    applied, absent = _drive(log, skip_p=0.0, seed=0, finished=-1)
    assert applied == log
    assert (99, 140) in absent  # 99 is a marker, 100..139 deleted
    assert sum(b - a for a, b in absent) == log[-1] + 1 - len(log)  # every hole before the last record


def test_absent_offsets_and_consumer_skips_together() -> None:
    log = [o for o in range(400) if o % 7 != 6]
    for seed in range(10):
        applied, _ = _drive(log, skip_p=0.05, seed=seed, finished=-1)
        assert applied == log, seed


def test_replays_are_skipped_and_a_partition_without_record_trusts_kafka() -> None:
    guard = PartitionGuard()
    assert guard.check("tp", 50, None).action == APPLY  # nothing recorded yet: start where Kafka says
    assert guard.check("tp", 41, 45).action == REPLAYED
    assert guard.check("tp", 45, 45).action == REPLAYED
    assert guard.check("tp", 46, 45).action == APPLY


def test_rewind_then_stale_records_then_resume() -> None:
    guard = PartitionGuard()
    d = guard.check("tp", 10, 5)
    assert (d.action, d.seek_to) == (REWIND, 6)
    assert guard.rewinding("tp")
    assert guard.check("tp", 11, 5).action == STALE  # fetched before the seek
    assert guard.check("tp", 6, 5).action == APPLY
    assert not guard.rewinding("tp")
    assert guard.check("tp", 9, 6).action == REWIND  # a new hole: 7, 8
    guard.forget()  # a rebalance
    assert not guard.rewinding("tp")
    assert guard.check("other", 3, 2).action == APPLY  # partitions are independent


def test_stalled() -> None:
    assert stalled(finished=9, end=20, idle_s=16, stall_s=15)
    assert not stalled(finished=9, end=10, idle_s=100, stall_s=15)  # everything finished
    assert not stalled(finished=9, end=20, idle_s=5, stall_s=15)  # records still arriving
    assert not stalled(finished=None, end=20, idle_s=100, stall_s=15)
    assert not stalled(finished=9, end=None, idle_s=100, stall_s=15)
