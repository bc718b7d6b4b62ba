"""Warm start of a new model version against the real broker (``streamrec worker --warm-from``, issue 10).

The input topics hold history: events before the warm-up's start time, then the warm window. A
worker of the new version starts with ``--warm-from <that time>`` under a fresh app id and is killed
with SIGKILL midway through the warm-up, then restarted. It must publish nothing for the history,
answer every event produced after it started, and end with the states of an uninterrupted run of
the bundle over the warm window and the live events (the bundle stepped by hand, per user, in
production order: one input topic per user keeps that order for every run).
"""
from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.structs import TopicPartition

from streamrec.export.runtime import Bundle
from streamrec.streams.config import WorkerConfig
from streamrec.streams.topics import ensure_topics
from streamrec.streams.warm import prepare
from tests.streams.workers import (PARTITIONS, Distinct, Names, Reader, final_states, one_topic_per_user, produce,
                                   reference, source_of, start_worker)

OLD, WARM, LIVE = 1_500, 20_000, 2_000


@pytest.mark.slow
@pytest.mark.kafka
def test_warm_start_killed_midway_ends_with_exact_states(kafka_broker, bundle_dir: Path, bundle: Bundle,
                                                         by_hand: Callable, tmp_path: Path) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = one_topic_per_user(users=1000, seed=41, n=OLD + WARM + LIVE)
    assert len(events) == OLD + WARM + LIVE
    old, window, live = events[:OLD], events[OLD:OLD + WARM], events[OLD + WARM:]
    ensure_topics(_config(names, broker, bundle_dir))  # with the table's partitions, before the history goes in
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, batch_size=1 << 18)
    produce(producer, names, old)
    time.sleep(0.05)
    since = int(time.time() * 1000)  # Kafka's record timestamps: the producer's clock at send
    time.sleep(0.05)
    warm_sent = produce(producer, names, window)

    worker = start_worker(broker, bundle_dir, names, tmp_path / "state", "--warm-from", str(since))
    health = _wait_for(worker, lambda h: h["counts"].get("warmed", 0) >= 2_000, timeout=180)
    worker.proc.send_signal(signal.SIGKILL)  # midway: states, progress and warm-up ends are in the changelog only
    worker.proc.wait(30)
    assert health["counts"].get("warmed", 0) < WARM, "the warm-up ended before the kill: make WARM larger"
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state", "--warm-from", str(since))
    worker.wait_ready(timeout=180)
    assert "has committed offsets already" in worker.log.read_text()  # resumed, not planned again

    live_sent = produce(producer, names, live)
    producer.close()
    out = Reader(broker, names.recs)
    recs = out.read_until(Distinct(LIVE), timeout=300)
    out.read_until(lambda rs: False, timeout=3)  # anything that would still come
    out.close()
    _, health = worker.get("/health")
    assert worker.stop() == 0, worker.tail()

    sources = {source_of(r) for r in recs}
    assert sources == set(live_sent), (f"{len(sources & set(warm_sent))} warm-up events answered, "
                                       f"{len(set(live_sent) - sources)} live events not")
    assert len(recs) == LIVE  # no duplicates either: nothing came again
    dead = Reader(broker, names.dlq)
    assert dead.read_until(lambda rs: False, timeout=3) == []  # warm-up publishes no dead letters either
    dead.close()

    # every live recommendation equals the bundle stepped by hand over the warm window and the live events
    sent = warm_sent | live_sent
    pairs = reference(bundle, by_hand, _with_history(recs, window, warm_sent), sent)
    worst_list = 0.0
    for user, steps in pairs.items():
        for msg, step, event in steps:
            if "items" not in msg:  # a warm-up event: no message
                continue
            assert msg["items"] == step.items, (user, msg["source"])
            worst_list = max(worst_list, float(np.max(np.abs(np.subtract(msg["scores"], step.scores)))))
    states = final_states(broker, names, bundle.version)
    assert set(states) == {e.user_id for e in window + live}
    worst = 0.0
    for user, steps in pairs.items():
        state, (_, step, _) = states[user], steps[-1]
        assert state is not None and state.count == len(steps), (user, state and state.count, len(steps))
        worst = max(worst, float(np.max(np.abs(state.h - step.h))), float(np.max(np.abs(state.c - step.c))))
    print(f"\n[warm] {WARM:,} events warmed (killed once), {LIVE:,} answered; max |state - by hand| {worst:.2e}, "
          f"max |score - by hand| {worst_list:.2e}; counts after the restart {health['counts']}")
    assert worst == 0.0


def _with_history(recs: list, window: list, warm_sent: dict) -> list:
    """The live recommendations preceded, per user, by placeholders for the warm-up events (no message):
    ``reference`` then steps each user's whole sequence by hand, in production order."""
    class Placeholder:
        def __init__(self, source: tuple, user: str) -> None:
            self.key = user.encode()
            self.value = json.dumps({"source": dict(zip(("topic", "partition", "offset"), source))}).encode()
    by_offset = sorted(warm_sent.items(), key=lambda kv: kv[0])
    return [Placeholder(src, e.user_id) for src, e in by_offset] + sorted(recs, key=lambda r: (r.partition, r.offset))


def _config(names: Names, broker: str, bundle_dir: Path) -> WorkerConfig:
    return WorkerConfig(bundle=bundle_dir, brokers=broker, clicks_topic=names.clicks, browses_topic=names.browses,
                        output_topic=names.recs, dlq_topic=names.dlq, partitions=PARTITIONS, app_id=names.app)


def _wait_for(worker, done: Callable[[dict], bool], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.tail()
        try:
            status, body = worker.get("/health")
            if status == 200 and done(body):
                return body
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout} s:\n{worker.tail()}")


@pytest.mark.kafka
def test_a_warm_window_past_retention_says_how_much_history_there_is(kafka_broker, bundle_dir: Path) -> None:
    """Records deleted from the front of the input topics (as retention does) and a warm-up asked to start
    before them: it plans what is left and says so, with the oldest time kept; a second plan for the same
    group, which has committed, plans nothing."""
    names, broker = Names(), kafka_broker.bootstrap
    config = _config(names, broker, bundle_dir)
    ensure_topics(config)
    since = int(time.time() * 1000) - 3_600_000
    producer = KafkaProducer(bootstrap_servers=broker)
    sent = produce(producer, names, one_topic_per_user(users=40, seed=5, n=400))
    producer.close()
    ends = defaultdict(int)
    for topic, partition, offset in sent:
        ends[(topic, partition)] = max(ends[(topic, partition)], offset + 1)
    cut = {TopicPartition(t, p): end // 2 for (t, p), end in ends.items()}
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.delete_records(cut)
    admin.close()

    plan = prepare(config, f"{names.app}-user-state-test-changelog", since)
    assert plan is not None
    by_tp = {(p.topic, p.partition): p for p in plan.partitions}
    for tp, first in cut.items():
        p = by_tp[(tp.topic, tp.partition)]
        assert (p.start, p.end, p.earliest) == (first, ends[(tp.topic, tp.partition)], first) and p.truncated
    assert plan.events == sum(end - end // 2 for end in ends.values())
    text = plan.describe()
    assert "keep less history than asked" in text and f"{plan.events:,} events of history" in text
    assert "the oldest record kept is from" in text
    assert prepare(config, f"{names.app}-user-state-test-changelog", since) is None  # the group has committed
