"""A worker on a two-stage bundle (export --index hnsw) against the real broker: the streaming contract
holds unchanged. A backlog (so the worker steps it in large batches, as in tests/streams/test_batch_kafka.py)
with bad records; every event has one recommendation, the lists equal the bundle stepped by hand one
event at a time (tests/streams/conftest.py ``step_by_hand``), the stored states count every event once
and the worker never imports torch."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from streamrec.export.ann import IndexSpec
from streamrec.export.onnx_export import export_bundle
from streamrec.export.runtime import Bundle
from tests.factories import small_events, train_small
from tests.streams.conftest import step_by_hand
from tests.streams.workers import (PARTITIONS, Names, Reader, assert_equal_to_offline, final_states, malformed, reference,
                                   source_of, start_worker)


def test_worker_on_an_indexed_bundle(kafka_broker, tmp_path: Path) -> None:
    ckpt, _ = train_small(small_events(users=200, items=300, seed=7), epochs=2)
    bundle_dir = tmp_path / "bundle"
    export_bundle(ckpt, bundle_dir, k=10, m=20, index=IndexSpec("hnsw", {"M": 16, "ef_search": 64}))
    bundle = Bundle.load(bundle_dir)
    assert bundle.indexed

    names, broker = Names(), kafka_broker.bootstrap
    events = small_events(users=30, items=300, seed=21)[:1200]  # ~30 events per user
    bad = malformed(names)
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (names.clicks, names.browses)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, max_request_size=2 << 20)
    futures, n_bad = [], 0
    for n, e in enumerate(events):
        topic = names.clicks if e.event_type == "click" else names.browses
        value = json.dumps({"user_id": e.user_id, "item_id": e.item_id, "ts": e.ts, "event_id": f"ev-{n}"}).encode()
        futures.append((producer.send(topic, key=e.user_id.encode(), value=value), e))
        if n % 100 == 50 and n_bad < len(bad):  # bad records in the middle of the backlog
            topic, key, value, _ = bad[n_bad]
            producer.send(topic, key=key, value=value)
            n_bad += 1
    producer.flush()
    coords = [(md.topic, md.partition, md.offset) for f, _ in futures for md in [f.get(timeout=30)]]
    sent = {c: e for c, (_, e) in zip(coords, futures)}

    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    worker.wait_ready()
    out = Reader(broker, names.recs)
    recs = out.read_until(lambda rs: len(rs) >= len(events), timeout=120)
    deadline = time.monotonic() + 60
    while worker.get("/health")[1]["counts"].get("received", 0) < len(events) + n_bad and time.monotonic() < deadline:
        time.sleep(0.3)
    out.read_until(lambda rs: False, timeout=2)  # nothing more may come
    _, health = worker.get("/health")
    assert worker.stop() == 0, worker.tail()
    assert "torch imported: False" in worker.log.read_text()

    counts = health["counts"]
    assert (counts["received"], counts["emitted"], counts["rejected"]) == (len(events) + n_bad, len(events), n_bad)
    assert max(int(s) for s in health["batch_sizes"]) >= 32  # the backlog went through in batches
    assert len(recs) == len(events) and max(Counter(source_of(r) for r in recs).values()) == 1
    assert_equal_to_offline(reference(bundle, step_by_hand, recs, sent), bundle.version)
    states = final_states(broker, names, bundle.version)
    assert {u: s.count for u, s in states.items() if s is not None} == dict(Counter(e.user_id for e in events))
    producer.close()
    out.close()
