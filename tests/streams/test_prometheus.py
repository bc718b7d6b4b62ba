"""GET /metrics (issue 14 item 1): the batch-filled histogram against prometheus_client's own, the key
count, and a real worker's exposition parsed with prometheus_client's parser against what was sent."""
from __future__ import annotations

import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rocksdict
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.streams.metrics import STEP_BOUNDS, BatchHistogram, count_users
from streamrec.streams.sequencer import PREFIX
from tests.streams.workers import Distinct, Names, Reader, malformed, one_topic_per_user, produce, start_worker


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of one family."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families(text)[name].samples}


def test_batch_histogram_equals_prometheus_clients() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(-7, 2, 5000), np.array(STEP_BOUNDS), [0.0, 1e9]])  # bounds exactly too
    mine = BatchHistogram("step_seconds", "doc", STEP_BOUNDS)
    theirs = Histogram("step_seconds", "doc", buckets=STEP_BOUNDS, registry=(registry := CollectorRegistry()))
    for chunk in np.array_split(values, 37):
        mine.observe_many(chunk)
    mine.observe(0.003)
    for v in [*values, 0.003]:
        theirs.observe(float(v))
    ours = CollectorRegistry()
    ours.register(type("C", (), {"collect": lambda self: [mine.family()]})())
    a = samples(generate_latest(ours).decode(), "step_seconds")
    b = {k: v for k, v in samples(generate_latest(registry).decode(), "step_seconds").items()
         if k[0] != "step_seconds_created"}
    assert a.keys() == b.keys() and len(a) == len(STEP_BOUNDS) + 3  # every bucket, +Inf, count, sum
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9), k


def test_count_users_leaves_progress_and_faust_keys_out() -> None:
    dbs = []
    for p in range(3):
        db = rocksdict.Rdict(tempfile.mkdtemp())
        for u in range(10 * (p + 1)):
            for _ in range(3):  # overwrites count once (RocksDB's own estimate would say 3x before a flush)
                db[f"user-{p}-{u}".encode()] = b"state"
        db[PREFIX + f"clicks:{p}".encode()] = (5).to_bytes(8, "little")
        db[b"__faust\x00offset__"] = b"17"  # faust's own key in each partition's store
        dbs.append(db)
    assert count_users(dbs) == 10 + 20 + 30
    for db in dbs:
        db.close()


@pytest.mark.kafka
def test_a_real_workers_metrics(kafka_broker, tmp_path: Path, bundle_dir: Path) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = one_topic_per_user(users=50, seed=17)[:1500]
    users = {e.user_id for e in events}
    bad = malformed(names)
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    try:
        worker.wait_ready(timeout=180)
        producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5, max_request_size=2 << 20)
        sent = produce(producer, names, events)
        for topic, key, value, _ in bad:
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()
        Reader(broker, names.recs).read_until(Distinct(len(sent)), timeout=180)
        Reader(broker, names.dlq).read_until(lambda rs: len(rs) >= len(bad), timeout=60)
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline:  # the user count comes from a count the first scrape starts
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=10) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = r.read().decode()
            done = samples(text, "streamrec_events").get(("streamrec_events_total", (("outcome", "processed"),)))
            lag = sum(samples(text, "streamrec_consumer_lag").values())
            if "streamrec_state_users" in families(text) and done == len(events) and lag == 0:
                break
            time.sleep(0.5)
        _, health = worker.get("/health")
    finally:
        assert worker.stop() == 0, worker.tail()
    fam = families(text)
    events_total = {dict(k[1])["outcome"]: v for k, v in samples(text, "streamrec_events").items()}
    assert events_total["emitted"] == events_total["processed"] == len(events)
    assert events_total["received"] == len(events) + len(bad) and events_total["rejected"] == len(bad)
    dead = {dict(k[1])["reason"]: v for k, v in samples(text, "streamrec_dead_letters").items()}
    assert dead == dict(Counter(reason for *_, reason in bad)) == health["rejected"]
    hist = lambda name: samples(text, name)  # noqa: E731
    batches = sum(health["batch_sizes"].values())
    assert hist("streamrec_batch_size")[("streamrec_batch_size_count", ())] == batches
    assert hist("streamrec_batch_size")[("streamrec_batch_size_sum", ())] == len(events) + len(bad)
    assert hist("streamrec_freshness_seconds")[("streamrec_freshness_seconds_count", ())] == len(events)
    assert hist("streamrec_publish_latency_seconds")[("streamrec_publish_latency_seconds_count", ())] == \
        len(events) + len(bad)
    onnx_rows = hist("streamrec_onnx_step_rows")
    assert onnx_rows[("streamrec_onnx_step_rows_sum", ())] == len(events)  # every valid event stepped once
    assert hist("streamrec_onnx_step_seconds")[("streamrec_onnx_step_seconds_count", ())] == \
        onnx_rows[("streamrec_onnx_step_rows_count", ())] > 0
    assert hist("streamrec_batch_step_seconds")[("streamrec_batch_step_seconds_count", ())] >= 1
    lag = samples(text, "streamrec_consumer_lag")
    assert len(lag) == 8 and set(lag.values()) == {0.0}  # both topics x 4 partitions, all caught up
    assert fam["streamrec_state_users"].samples[0].value == len(users)
    info = (fam.get("streamrec_model") or fam["streamrec_model_info"]).samples[0].labels  # info: a gauge in text 0.0.4
    assert info["model_version"] == health["model_version"] and info["guarantee"] == "at-least-once"
    assert fam["streamrec_ready"].samples[0].value == 1.0
