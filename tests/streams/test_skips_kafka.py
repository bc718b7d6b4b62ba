"""A consumer that skipped records, against the real broker: the worker finds them and applies them.

faust-streaming can, around restarts and rebalances, commit an input offset past records its
agent never received (its issues #216, #221; seen here as 1-6 events of 50,000 after a SIGKILL,
and 5 of 6,000 after a rebalance). This reproduces the outcome deterministically: while the worker
is stopped, the consumer group's offsets are committed to the end of the input topics, past
records nobody processed. Kafka's committed offset then says "done"; the worker's own record of
each partition (streams/progress.py) says otherwise:

- later records reveal the hole: the worker seeks back and applies the skipped ones first;
- nothing comes after the skipped records (the tail of a stream): the stall check seeks back.

Either way every event has its recommendation, each user's lists come in production order and
equal the uninterrupted run, and the final states equal it too.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamrec.export.runtime import Bundle
from tests.streams.workers import (PARTITIONS, Distinct, Names, Reader, check_complete, one_topic_per_user, produce,
                                   sorted_by_production, start_worker)


def commit_to_end(broker: str, names: Names) -> int:
    """Commit the worker's consumer group at the end of both input topics (the worker is stopped);
    returns how many records that skipped past the group's previous position."""
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=names.app, enable_auto_commit=False)
    tps = [TopicPartition(t, p) for t in (names.clicks, names.browses) for p in range(PARTITIONS)]
    consumer.assign(tps)
    before = {tp: consumer.committed(tp) or 0 for tp in tps}
    ends = consumer.end_offsets(tps)
    consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    consumer.close()
    return sum(ends[tp] - before[tp] for tp in tps)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_records_committed_past_are_applied(kafka_broker, tmp_path: Path, bundle_dir: Path, bundle: Bundle,
                                            by_hand: Callable, guarantee: str) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = one_topic_per_user(users=120, seed=41)[:2500]
    done, hidden, later, tail = events[:800], events[800:1400], events[1400:2000], events[2000:]
    state, flags = tmp_path / "state", ("--guarantee", guarantee)
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    isolation = {"isolation_level": "read_committed"} if guarantee == "exactly-once" else {}
    worker = start_worker(broker, bundle_dir, names, state, *flags)
    worker.wait_ready()  # it creates the topics
    out = Reader(broker, names.recs, **isolation)
    sent = produce(producer, names, done)
    out.read_until(Distinct(len(done)), timeout=120)
    assert worker.stop() == 0, worker.tail()

    # 1. skipped records, then later ones that reveal the hole
    sent.update(produce(producer, names, hidden))
    assert commit_to_end(broker, names) == len(hidden)
    sent.update(produce(producer, names, later))
    worker = start_worker(broker, bundle_dir, names, state, *flags)
    worker.wait_ready(timeout=120)
    out.read_until(Distinct(len(sent)), timeout=180)
    _, health = worker.get("/health")
    assert worker.stop() == 0, worker.tail()
    assert health["counts"].get("rewound", 0) >= 1, health
    assert health["counts"]["emitted"] == len(hidden) + len(later), health

    # 2. skipped records at the tail: nothing after them, only the stall check can find them
    sent.update(produce(producer, names, tail))
    assert commit_to_end(broker, names) == len(tail)
    worker = start_worker(broker, bundle_dir, names, state, *flags)
    worker.wait_ready(timeout=120)
    recs = out.read_until(Distinct(len(sent)), timeout=180)
    _, health = worker.get("/health")
    assert worker.stop() == 0, worker.tail()
    assert health["counts"].get("rewound", 0) >= 1 and health["counts"]["emitted"] == len(tail), health
    assert health["counts"].get("absent", 0) == 0, health

    duplicates = check_complete(bundle, by_hand, sorted_by_production(recs, sent), sent, broker, names, **isolation)
    if guarantee == "exactly-once":
        assert duplicates == 0
    print(f"\n[skips] {guarantee}: {len(events)} events, {len(hidden)} + {len(tail)} committed past and applied; "
          f"{duplicates} duplicates")
    out.close()
    producer.close()
