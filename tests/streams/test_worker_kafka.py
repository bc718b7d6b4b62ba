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
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from export.runtime import Bundle
from model.events import Interaction, by_user
from streams import codec
from streams.broker import free_port
from streams.state import UserState
from tests.factories import small_events

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4
ATOL = 1e-5


# ---- helpers ---------------------------------------------------------------------------------
@dataclass
class Names:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __getattr__(self, kind: str) -> str:  # clicks, browses, recs, dlq, app
        return f"t{self.tag}-{kind}"


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n{self.tail()}"
            try:
                status, body = self.get("/health")
                if status == 200 and body["ready"]:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker ignored SIGTERM for {timeout}s:\n{self.tail()}") from None


def start_worker(broker: str, bundle_dir: Path, names: Names, data_dir: Path, *extra: str) -> Worker:
    exe = Path(sys.executable).with_name("streamrec")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cli.main"]
    port = free_port()
    args = ["worker", "--bundle", str(bundle_dir), "--brokers", broker, "--clicks-topic", names.clicks,
            "--browses-topic", names.browses, "--output-topic", names.recs, "--dlq-topic", names.dlq,
            "--partitions", str(PARTITIONS), "--data-dir", str(data_dir), "--web-host", "127.0.0.1",
            "--web-port", str(port), "--app-id", names.app, *extra]
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"worker-{time.time_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | {"PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd + args, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir, env=env)
    return Worker(proc, log, port)


class Reader:
    """Reads a topic from the beginning, all partitions, incrementally."""

    def __init__(self, broker: str, topic: str, **kw: object) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False, **kw)
        deadline = time.monotonic() + 30
        while not (parts := self.consumer.partitions_for_topic(topic)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert parts, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list = []

    def read_until(self, done: Callable[[list], bool], timeout: float = 90.0) -> list:
        deadline = time.monotonic() + timeout
        while not done(self.records) and time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=300).values():
                self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def _message(e: Interaction) -> bytes:
    return json.dumps({"user_id": e.user_id, "item_id": e.item_id, "ts": e.ts}).encode()


def produce(producer: KafkaProducer, names: Names, events: list[Interaction]) -> dict[tuple, Interaction]:
    """Send events keyed by user, clicks and browses to their topics; (topic, partition, offset) -> event."""
    futures = [(producer.send(names.clicks if e.event_type == "click" else names.browses,
                              key=e.user_id.encode(), value=_message(e)), e) for e in events]
    producer.flush()
    return {(md.topic, md.partition, md.offset): e for f, e in futures for md in [f.get(timeout=30)]}


def malformed(names: Names) -> list[tuple[str, bytes | None, bytes, str]]:
    """(topic, key, value, expected reason) for each kind of bad message."""
    ok = {"user_id": "bad1", "item_id": "i1", "ts": 1_700_000_000_000}
    j = lambda **kw: json.dumps({**ok, **kw}).encode()  # noqa: E731
    return [(names.clicks, b"bad1", b"{not json", codec.INVALID_JSON),
            (names.browses, b"bad1", b"\xff\xfe\x00", codec.NOT_UTF8),
            (names.clicks, b"bad1", b'["bad1", "i1"]', codec.NOT_AN_OBJECT),
            (names.clicks, b"bad1", json.dumps({"user_id": "bad1", "ts": 1}).encode(), codec.MISSING_FIELD),
            (names.browses, b"bad1", j(ts="1700000000000"), codec.WRONG_TYPE),
            (names.clicks, b"bad1", j(event_type="purchase"), codec.UNKNOWN_EVENT_TYPE),
            (names.clicks, b"bad1", j(ts=-5), codec.BAD_TS),
            (names.browses, b"bad1", j(ts=5_000_000_000_000), codec.BAD_TS),
            (names.clicks, b"someone-else", j(), codec.KEY_MISMATCH),
            (names.clicks, None, j(), codec.MISSING_KEY),
            (names.browses, b"", j(user_id=""), codec.INVALID_ID),
            (names.clicks, b"bad1", b" " * (codec.MAX_MESSAGE_BYTES + 1), codec.TOO_LARGE)]


def source_of(record) -> tuple[str, int, int]:  # type: ignore[no-untyped-def]
    """The input message an output message answers: (topic, partition, offset)."""
    src = json.loads(record.value)["source"]
    return src["topic"], src["partition"], src["offset"]


def reference(bundle: Bundle, by_hand: Callable, recs: list, sent: dict[tuple, Interaction]) -> dict[str, list]:
    """Per user: (output message, by-hand step) pairs, over the user's events in the worker's order."""
    per_user: dict[str, list] = defaultdict(list)
    for r in recs:
        per_user[r.key.decode()].append(json.loads(r.value))
    out = {}
    for user, msgs in per_user.items():
        events = [sent[(m["source"]["topic"], m["source"]["partition"], m["source"]["offset"])] for m in msgs]
        out[user] = list(zip(msgs, by_hand(bundle, events), events))
    return out


def assert_equal_to_offline(pairs: dict[str, list], version: str) -> None:
    for user, steps in pairs.items():
        for msg, step, event in steps:
            assert msg["user_id"] == user == event.user_id and msg["event_ts"] == event.ts
            assert msg["model_version"] == version
            assert msg["items"] == step.items, (user, msg["source"])
            np.testing.assert_allclose(msg["scores"], step.scores, atol=ATOL, rtol=0)


def final_states(broker: str, names: Names, version: str) -> dict[str, UserState]:
    """The last value per user in the state table's changelog topic."""
    reader = Reader(broker, f"{names.app}-user-state-{version}-changelog")
    end = sum(reader.consumer.end_offsets(list(reader.consumer.assignment())).values())
    records = reader.read_until(lambda rs: len(rs) >= end, timeout=30)
    reader.close()
    return {r.key.decode(): UserState.unpack(r.value) for r in records}


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
    sent = produce(producer, names, first)
    # Stop mid-stream: SIGTERM once a quarter of the first part came out.
    out.read_until(lambda rs: len(rs) >= 600)
    rate1 = len(out.records) / (time.monotonic() - started)
    assert worker.stop() == 0, worker.tail()
    assert "torch imported: False" in worker.log.read_text()
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
        topic, key, value, reason = next(b for b in bad if b[3] == letter["reason"] and b[2] == letter["value"])
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
    run = lambda *a: subprocess.run([sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",  # noqa: E731
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
    from streams.config import ConfigError, WorkerConfig

    env = {"STREAMREC_BUNDLE": str(tmp_path), "STREAMREC_PARTITIONS": "3", "STREAMREC_GUARANTEE": "exactly-once",
           "STREAMREC_BROKERS": "a:1,b:2", "STREAMREC_K": ""}
    config = WorkerConfig.from_env(env, partitions="5", web_port=None)
    assert (config.partitions, config.guarantee, config.k, config.web_port) == (5, "exactly_once", None, 6066)
    assert config.broker_urls == ["kafka://a:1", "kafka://b:2"]
    assert WorkerConfig.from_env(config.to_env()) == config
    with pytest.raises(ConfigError, match="must differ"):
        WorkerConfig.from_env(env, output_topic="clicks")
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        WorkerConfig.from_env(env, brokers="localhost")
