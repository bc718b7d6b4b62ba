"""Helpers of the worker tests against the real broker: names, a worker subprocess, topic readers,
producing events, and the offline reference (the bundle stepped by hand in the worker's order)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction
from streamrec.streams import codec
from streamrec.streams.broker import free_port
from streamrec.streams.sequencer import is_progress_key
from streamrec.streams.state import UserState

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
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "streamrec.cli.main"]
    port = free_port()
    args = ["worker", "--bundle", str(bundle_dir), "--brokers", broker, "--clicks-topic", names.clicks,
            "--browses-topic", names.browses, "--output-topic", names.recs, "--dlq-topic", names.dlq,
            "--partitions", str(PARTITIONS), "--data-dir", str(data_dir), "--web-host", "127.0.0.1",
            "--web-port", str(port), "--app-id", names.app,
            "--session-timeout", "10", *extra]  # a crashed worker's partitions move after 10 s, not 60
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"worker-{time.time_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | {"PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd + args, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir, env=env)
    return Worker(proc, log, port)


SASL_USER, SASL_PASSWORD = "streamrec", "s3cret-pw"


def sasl_listener(sasl_port: int) -> dict[str, str]:
    """Broker settings (``start_broker(extra_config=...)``) that add a SASL_PLAINTEXT listener on
    ``sasl_port`` (mechanism PLAIN, one client user: SASL_USER with SASL_PASSWORD) beside the
    PLAINTEXT one, through which a test can still look at the topics."""
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" '
            f'password="admin-pw" user_admin="admin-pw" user_{SASL_USER}="{SASL_PASSWORD}";')
    return {
        "listeners": f"PLAINTEXT://127.0.0.1:{{port}},CONTROLLER://127.0.0.1:{{controller_port}},"
                     f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{{port}},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas}


class Reader:
    """Reads a topic from the beginning, all partitions, incrementally.

    A record whose (partition, offset) it already holds is not kept again: Kafka gives every record
    one offset, so a second copy at the same offset is the client reading it twice, never a second
    record a worker wrote (``repeats`` counts them, so a test can show it)."""

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
        self.repeats = 0
        self._next: dict[int, int] = {}  # partition -> the offset after the last record kept

    def read_until(self, done: Callable[[list], bool], timeout: float = 90.0) -> list:
        deadline = time.monotonic() + timeout
        while not done(self.records) and time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=300).values():
                for r in batch:
                    if r.offset < self._next.get(r.partition, 0):
                        self.repeats += 1
                        continue
                    self._next[r.partition] = r.offset + 1
                    self.records.append(r)
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
            (names.clicks, b"bad1", b" " * (codec.MAX_MESSAGE_BYTES + 1), codec.TOO_LARGE),
            (names.clicks, b"bad1", json.dumps({"item_id": "i1", "ts": ok["ts"]}).encode(), codec.MISSING_FIELD),
            (names.browses, b"bad1", json.dumps({"user_id": "bad1", "item_id": "i1"}).encode(), codec.MISSING_FIELD),
            (names.clicks, b"bad1", j(item_id=42), codec.WRONG_TYPE),
            (names.clicks, b"bad1", j(ts=0), codec.BAD_TS),
            (names.browses, b"bad1", j(ts=32_503_680_000_000), codec.BAD_TS),  # year 3000
            (names.clicks, b"bad1", j(item_id=""), codec.INVALID_ID),
            (names.browses, b"bad1", j(item_id="x" * 1_000_000), codec.TOO_LARGE)]  # a 1 MB string


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


def final_states(broker: str, names: Names, version: str, **consumer_kw: object) -> dict[str, UserState]:
    """The last value per user in the state table's changelog topic (None: a tombstone, the state was deleted).
    Pass ``isolation_level="read_committed"`` for an exactly-once worker's changelog."""
    reader = Reader(broker, f"{names.app}-user-state-{version}-changelog", **consumer_kw)
    tps = list(reader.consumer.assignment())
    ends = reader.consumer.end_offsets(tps)
    deadline = time.monotonic() + 60
    while any(reader.consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for batch in reader.consumer.poll(timeout_ms=300).values():
            reader.records.extend(batch)
    reader.close()
    return {r.key.decode(): None if r.value is None else UserState.unpack(r.value) for r in reader.records
            if not is_progress_key(r.key)}

class Distinct:
    """``read_until`` condition: at least ``n`` distinct sources among the records (incremental, so a
    long stream is not re-parsed on every poll)."""

    def __init__(self, n: int, stall_s: float = 90.0) -> None:
        self.n, self.seen, self.upto, self.stall_s = n, set(), 0, stall_s
        self.progress_at = time.monotonic()

    def __call__(self, records: list) -> bool:
        """True once ``n`` distinct sources arrived, or nothing new came for ``stall_s`` seconds (the
        caller's assertions then say what is missing, instead of a long timeout)."""
        before = len(self.seen)
        for r in records[self.upto:]:
            self.seen.add(source_of(r))
        self.upto = len(records)
        if len(self.seen) > before:
            self.progress_at = time.monotonic()
        return len(self.seen) >= self.n or time.monotonic() - self.progress_at > self.stall_s


def one_topic_per_user(users: int, seed: int, n: int | None = None) -> list[Interaction]:
    """Synthetic events in time order (the first ``n``) where each user's events are all clicks or all
    browses: one input topic per user, so every run of the worker sees a user's events in production
    order, and an uninterrupted run is the bundle stepped by hand in that order."""
    from tests.factories import small_events

    events = sorted(small_events(users=users, items=120, seed=seed), key=lambda e: e.ts)[:n]
    kind = {u: ("click", "browse")[i % 2] for i, u in enumerate(sorted({e.user_id for e in events}))}
    return [Interaction(e.user_id, e.item_id, kind[e.user_id], e.ts) for e in events]


def check_complete(bundle: Bundle, by_hand: Callable, recs: list, sent: dict, broker: str, names: Names,
                   **consumer_kw: object) -> int:
    """Every input has a recommendation, duplicates repeat their source and list, lists and final
    states (the changelog, read with ``consumer_kw``) equal the uninterrupted run. Returns the number
    of duplicates."""
    by_source: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        by_source[source_of(r)].append(json.loads(r.value))
    assert set(by_source) == set(sent), f"{len(set(sent) - set(by_source))} input events lack a recommendation"
    for copies in by_source.values():
        assert all((c["items"], c["scores"]) == (copies[0]["items"], copies[0]["scores"]) for c in copies)
    seen: set[tuple] = set()
    firsts = [r for r in recs if (src := source_of(r)) not in seen and not seen.add(src)]  # first copies, in order
    pairs = reference(bundle, by_hand, firsts, sent)
    assert_equal_to_offline(pairs, bundle.version)
    states = final_states(broker, names, bundle.version, **consumer_kw)
    for user, steps in pairs.items():
        state, (_, step, _) = states[user], steps[-1]
        assert state is not None and state.count == len(steps), user
        np.testing.assert_allclose(state.h, step.h, atol=1e-6, rtol=0)
        np.testing.assert_allclose(state.c, step.c, atol=1e-6, rtol=0)
    return sum(len(v) - 1 for v in by_source.values())


def sorted_by_production(recs: list, sent: dict) -> list:
    """Recommendations ordered per user as produced (the worker may have answered a user's events
    from several processes: the per-partition output order is then not the input order)."""
    return sorted(recs, key=lambda r: (r.key, sent[source_of(r)].ts, source_of(r)))
