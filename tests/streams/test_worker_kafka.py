"""The worker end to end, against the real Kafka broker (fixture ``kafka_broker``), run as ``streamrec worker``.

Every test uses its own topics, app id and data dir. The offline reference is the bundle stepped by
hand (conftest.py ``by_hand``) over each user's events in the order the worker processed them, which
the output topic records (keyed by user: one partition per user, in order; ``source`` names the
input message).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction, by_user
from streamrec.streams import codec
from tests.factories import small_events
from tests.streams.workers import (ATOL, PARTITIONS, Names, Reader, assert_equal_to_offline, final_states, malformed,
                                   produce, reference, source_of, start_worker)

REPO = Path(__file__).resolve().parents[2]


# ---- tests -----------------------------------------------------------------------------------
def test_stream_restart_dead_letters_and_http(kafka_broker, bundle_dir: Path, bundle: Bundle, by_hand: Callable,
                                              tmp_path: Path) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    # 250 users' first 16 events, in time order (users interleave, as in a live stream)
    events = sorted((e for seq in by_user(small_events(users=250, items=120, seed=11)).values() for e in seq[:16]),
                    key=lambda e: e.ts)
    users = {e.user_id for e in events}
    assert len(users) >= 200
    first, second = events[:2400], events[2400:]
    bad = malformed(names)

    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    out = Reader(broker, names.recs)
    started = time.monotonic()
    sent: dict = {}
    # Paced (about 400 events/s) so that the worker, faster than that, is stopped while events still arrive.
    pacer = threading.Thread(target=lambda: [sent.update(produce(producer, names, first[i:i + 20])) or time.sleep(0.05)
                                             for i in range(0, len(first), 20)])
    pacer.start()
    # Stop mid-stream: SIGTERM once a quarter of the first part came out.
    out.read_until(lambda rs: len(rs) >= 600)
    rate1 = len(out.records) / (time.monotonic() - started)
    assert worker.stop() == 0, worker.tail()
    assert "Kafka consumer on the event loop, torch imported: False" in worker.log.read_text()  # the defaults
    pacer.join()
    stopped_at = len(out.read_until(lambda rs: False, timeout=3))
    assert 600 <= stopped_at < len(first), "the worker was not stopped mid-stream"

    # While it is down: the rest of the stream, with bad messages interleaved.
    for n, (topic, key, value, _) in enumerate(bad):
        sent.update(produce(producer, names, second[n * 100:(n + 1) * 100]))
        producer.send(topic, key=key, value=value)
    sent.update(produce(producer, names, second[len(bad) * 100:]))
    assert len(sent) == len(events)

    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    worker.wait_ready()
    restarted = time.monotonic()
    recs = out.read_until(lambda rs: len(rs) >= len(events))
    rate2 = (len(recs) - stopped_at) / (time.monotonic() - restarted)
    out.read_until(lambda rs: False, timeout=2)  # nothing more may come (no duplicates)
    dlq = Reader(broker, names.dlq).read_until(lambda rs: len(rs) >= len(bad), timeout=30)

    # Exactly one recommendation per input event, equal to the bundle stepped offline in the worker's order.
    sources = Counter(source_of(r) for r in out.records)
    assert max(sources.values()) == 1, [s for s, n in sources.items() if n > 1][:5]
    assert set(sources) == set(sent)
    assert all(r.key == json.loads(r.value)["user_id"].encode() for r in out.records)
    pairs = reference(bundle, by_hand, out.records, sent)
    assert set(pairs) == users
    assert_equal_to_offline(pairs, bundle.version)

    # Dead letters: each bad message once, with its reason and its original bytes; counters per reason.
    assert sorted(json.loads(r.value)["reason"] for r in dlq) == sorted(reason for *_, reason in bad)
    for r in dlq:
        letter = codec.decode_dead_letter(r.value)
        topic, key, value, reason = next(b for b in bad if b[3] == letter["reason"] and b[2][: codec.MAX_DEAD_LETTER_COPY] == letter["value"])
        assert letter["key"] == key and letter["source"]["topic"] == topic and r.key == key
    status, health = worker.get("/health")
    assert status == 200 and health["torch_imported"] is False and health["model_version"] == bundle.version
    assert health["rejected"] == dict(Counter(reason for *_, reason in bad))
    assert health["counts"]["emitted"] == len(events) - stopped_at

    # HTTP: the latest list per user, 404 before any event, 400 for a malformed id.
    for user in sorted(users)[:5]:
        status, body = worker.get(f"/recommendations/{user}")
        msg, step, _ = pairs[user][-1]
        assert status == 200 and body["items"] == msg["items"] == step.items
        np.testing.assert_allclose(body["scores"], step.scores, atol=ATOL, rtol=0)
        assert body["events"] == len(pairs[user]) and body["model_version"] == bundle.version
    assert worker.get("/recommendations/nobody-yet")[0] == 404
    assert worker.get("/recommendations/a%01b")[0] == 400
    assert worker.get("/recommendations/" + "u" * 300)[0] == 400
    assert worker.stop() == 0, worker.tail()

    # The final states (read back from the table's changelog) equal the offline ones.
    states = final_states(broker, names, bundle.version)
    assert set(states) == users
    for user, steps in pairs.items():
        state, (_, step, _) = states[user], steps[-1]
        np.testing.assert_allclose(state.h, step.h, atol=ATOL, rtol=0)
        np.testing.assert_allclose(state.c, step.c, atol=ATOL, rtol=0)
        assert (state.count, list(state.seen), state.last_ts) == (len(steps), step.seen, step.last_ts)
        assert [bundle.items.token(i) for i in state.top_items] == step.items
    out.close()
    producer.close()
    print(f"\n[worker] {len(events)} events, {len(users)} users: {rate1:.0f} events/s before the stop, "
          f"{rate2:.0f} events/s after the restart (incl. catching up)")


def test_exactly_once(kafka_broker, bundle_dir: Path, bundle: Bundle, by_hand: Callable, tmp_path: Path) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = small_events(users=60, items=120, seed=12)[:400]
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state", "--guarantee", "exactly-once")
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    sent = produce(producer, names, events)
    out = Reader(broker, names.recs, isolation_level="read_committed")
    recs = out.read_until(lambda rs: len(rs) >= len(events))
    out.read_until(lambda rs: False, timeout=2)
    assert worker.stop() == 0, worker.tail()
    sources = Counter(source_of(r) for r in recs)
    assert len(recs) == len(events) and max(sources.values()) == 1
    assert set(sources) == set(sent)
    assert_equal_to_offline(reference(bundle, by_hand, recs, sent), bundle.version)
    out.close()
    producer.close()


def test_input_topics_with_another_partition_count_are_refused(kafka_broker, bundle_dir: Path,
                                                               tmp_path: Path) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(names.clicks, num_partitions=PARTITIONS + 1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker)
    produce(producer, names, [Interaction("u1", "i3", "click", 1_700_000_000_000)])
    producer.close()
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    try:
        code = worker.proc.wait(90)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        raise AssertionError(f"the worker kept running:\n{worker.tail()}") from None
    assert code != 0
    assert f"has {PARTITIONS + 1} partitions, the state table {PARTITIONS}" in worker.log.read_text()


def test_worker_cli_errors_are_clear(bundle_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    run = lambda *a: subprocess.run([sys.executable, "-c", "import sys; from streamrec.cli.main import main; sys.exit(main())",  # noqa: E731
                                     "worker", *a], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    r = run()
    assert r.returncode == 2 and "no bundle: pass --bundle DIR or set STREAMREC_BUNDLE" in r.stderr
    r = run("--bundle", str(tmp_path))
    assert r.returncode == 2 and "is not a bundle" in r.stderr
    r = run("--bundle", str(tmp_path), "--partitions", "zero")
    assert r.returncode == 2 and "--partitions/STREAMREC_PARTITIONS must be an integer" in r.stderr
    r = run("--bundle", str(tmp_path), "--guarantee", "maybe")
    assert r.returncode == 2 and "at-least-once" in r.stderr
    r = run("--bundle", str(bundle_dir), "--k", "99")
    assert r.returncode == 2 and "--k/STREAMREC_K=99 exceeds the bundle's k=10" in r.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    (tampered / "items.json").write_text((tampered / "items.json").read_text().replace("i1", "i01", 1))
    r = run("--bundle", str(tampered))
    assert r.returncode == 2 and "items.json: sha256 differs" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "STREAMREC_BROKERS" in r.stdout and "events.dlq" in r.stdout


def test_config_flags_win_over_the_environment_and_round_trip(tmp_path: Path) -> None:
    from streamrec.streams.config import ConfigError, WorkerConfig

    env = {"STREAMREC_BUNDLE": str(tmp_path), "STREAMREC_PARTITIONS": "3", "STREAMREC_GUARANTEE": "exactly-once",
           "STREAMREC_BROKERS": "a:1,b:2", "STREAMREC_K": "", "STREAMREC_CONSUMER": "Thread"}
    config = WorkerConfig.from_env(env, partitions="5", web_port=None)
    assert (config.partitions, config.guarantee, config.k, config.web_port) == (5, "exactly_once", None, 6066)
    assert config.consumer == "thread" and WorkerConfig(bundle=tmp_path).consumer == "loop"
    assert config.broker_urls == ["kafka://a:1", "kafka://b:2"]
    assert WorkerConfig.from_env(config.to_env()) == config
    with pytest.raises(ConfigError, match="must differ"):
        WorkerConfig.from_env(env, output_topic="clicks")
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        WorkerConfig.from_env(env, brokers="localhost")
    with pytest.raises(ConfigError, match=r"--consumer/STREAMREC_CONSUMER: 'fiber' is not one of \['loop', 'thread'\]"):
        WorkerConfig.from_env(env, consumer="fiber")


def test_reconciliation_duplicate_event_ids_and_read_only_http(kafka_broker, bundle_dir: Path, bundle: Bundle,
                                                               by_hand: Callable, tmp_path: Path) -> None:
    """Every kind of bad message and repeated event ids, interleaved with valid events: produced =
    processed (applied + duplicates dropped) + dead-lettered, each repeat dropped once, the worker
    keeps going, and its lists equal the offline ones."""
    names, broker = Names(), kafka_broker.bootstrap
    events = small_events(users=40, items=120, seed=13)[:300]
    bad = malformed(names)
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5, max_request_size=2 << 20)
    futures, repeats = [], 0
    for n, e in enumerate(events):
        topic = names.clicks if e.event_type == "click" else names.browses
        value = json.dumps({"user_id": e.user_id, "item_id": e.item_id, "ts": e.ts, "event_id": f"ev-{n}"}).encode()
        for _ in range(2 if n % 10 == 0 else 1):  # every 10th event twice: a producer's retry
            futures.append((producer.send(topic, key=e.user_id.encode(), value=value), e))
        repeats += n % 10 == 0
        if n % 15 == 0 and bad[n // 15:]:
            topic, key, value, _ = bad[n // 15]
            producer.send(topic, key=key, value=value)
    assert 300 // 15 >= len(bad)
    producer.flush()
    coords = [(md.topic, md.partition, md.offset) for f, _ in futures for md in [f.get(timeout=30)]]
    sent = {c: e for c, (_, e) in zip(coords, futures)}
    produced = len(futures) + len(bad)

    out = Reader(broker, names.recs)
    recs = out.read_until(lambda rs: len(rs) >= len(events))
    deadline = time.monotonic() + 60
    while (counts := worker.get("/health")[1]["counts"]).get("received", 0) < produced and time.monotonic() < deadline:
        time.sleep(0.5)
    out.read_until(lambda rs: False, timeout=2)
    dlq = Reader(broker, names.dlq).read_until(lambda rs: len(rs) >= len(bad), timeout=30)
    _, health = worker.get("/health")
    counts = health["counts"]
    assert counts["received"] == produced
    assert counts["processed"] + counts["rejected"] == produced  # reconciliation
    assert (counts["emitted"], counts["duplicate"], counts["rejected"]) == (len(events), repeats, len(bad))
    assert len(out.records) == len(events) and len({source_of(r) for r in out.records}) == len(events)
    assert sorted(json.loads(r.value)["reason"] for r in dlq) == sorted(reason for *_, reason in bad)
    assert health["rejected"] == dict(Counter(reason for *_, reason in bad))
    for r in dlq:  # each dead letter carries its original bytes (a prefix of the 1 MB one, with its size)
        letter = codec.decode_dead_letter(r.value)
        original = next(v for _, _, v, reason in bad if reason == letter["reason"] and
                        v[: codec.MAX_DEAD_LETTER_COPY] == letter["value"])
        assert letter["value_bytes"] == len(original) and letter["truncated"] == (len(original) > len(letter["value"]))
    assert_equal_to_offline(reference(bundle, by_hand, recs, sent), bundle.version)

    # The HTTP endpoint is read-only: other methods than GET are refused.
    for path in (f"/recommendations/{events[0].user_id}", "/health"):
        request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 405
    assert worker.stop() == 0, worker.tail()
    out.close()
    producer.close()
