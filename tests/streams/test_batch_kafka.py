"""The micro-batch path against the real broker: a backlog produced before the worker starts, so that
its batches are large, span partitions and both topics, and hold several events of one user, bad
records and repeated event ids; under both guarantees (and with the Kafka consumer on its own thread, as
Faust runs it) the lists equal the offline ones, every event is answered once and the counters reconcile."""
from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from streamrec.export.runtime import Bundle
from tests.factories import small_events
from tests.streams.workers import (PARTITIONS, Names, Reader, assert_equal_to_offline, final_states, malformed, reference,
                                   source_of, start_worker)


@pytest.mark.parametrize("guarantee, consumer", [("at-least-once", "loop"), ("exactly-once", "loop"),
                                                ("at-least-once", "thread")])
def test_a_preloaded_backlog_in_large_batches(kafka_broker, bundle_dir: Path, bundle: Bundle, by_hand: Callable,
                                              tmp_path: Path, guarantee: str, consumer: str) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = small_events(users=30, items=120, seed=21)[:1500]  # ~50 events per user, clicks and browses
    bad = malformed(names)
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (names.clicks, names.browses)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, max_request_size=2 << 20)
    futures, repeats, bad_sent = [], 0, []
    for n, e in enumerate(events):
        topic = names.clicks if e.event_type == "click" else names.browses
        value = json.dumps({"user_id": e.user_id, "item_id": e.item_id, "ts": e.ts, "event_id": f"ev-{n}"}).encode()
        copies = 2 if n % 7 == 3 else 1  # a producer's retry, right behind the first copy
        for _ in range(copies):
            futures.append((producer.send(topic, key=e.user_id.encode(), value=value), e))
        repeats += copies - 1
        if n % 50 == 25 and len(bad_sent) < len(bad):  # bad records in the middle of the backlog
            topic, key, value, reason = bad[len(bad_sent)]
            producer.send(topic, key=key, value=value)
            bad_sent.append(reason)
    producer.flush()
    assert len(bad_sent) == len(bad)
    coords = [(md.topic, md.partition, md.offset) for f, _ in futures for md in [f.get(timeout=30)]]
    sent = {c: e for c, (_, e) in zip(coords, futures)}
    produced = len(futures) + len(bad)

    worker = start_worker(broker, bundle_dir, names, tmp_path / "state", "--guarantee", guarantee, "--consumer", consumer)
    worker.wait_ready()
    isolation = {"isolation_level": "read_committed"} if guarantee == "exactly-once" else {}
    out = Reader(broker, names.recs, **isolation)
    recs = out.read_until(lambda rs: len(rs) >= len(events), timeout=120)
    deadline = time.monotonic() + 60
    while worker.get("/health")[1]["counts"].get("received", 0) < produced and time.monotonic() < deadline:
        time.sleep(0.3)
    out.read_until(lambda rs: False, timeout=2)  # nothing more may come
    dlq = Reader(broker, names.dlq, **isolation).read_until(lambda rs: len(rs) >= len(bad), timeout=30)
    _, health = worker.get("/health")
    assert worker.stop() == 0, worker.tail()

    sizes = {int(size): n for size, n in health["batch_sizes"].items()}
    assert max(sizes) >= 64, sizes  # the backlog went through in large batches
    assert sum(sizes.values()) < produced / 8, sizes
    counts = health["counts"]
    assert counts["received"] == produced
    assert (counts["emitted"], counts["duplicate"], counts["rejected"]) == (len(events), repeats, len(bad))
    assert counts["processed"] + counts["rejected"] == produced
    sources = Counter(source_of(r) for r in recs)
    assert len(recs) == len(events) and max(sources.values()) == 1  # one recommendation per event
    assert sorted(json.loads(r.value)["reason"] for r in dlq) == sorted(reason for *_, reason in bad)
    assert_equal_to_offline(reference(bundle, by_hand, recs, sent), bundle.version)
    # the stored states hold every event once
    states = final_states(broker, names, bundle.version, **isolation)
    per_user = Counter(e.user_id for e in events)
    assert {u: s.count for u, s in states.items() if s is not None} == dict(per_user)
    producer.close()
    out.close()
