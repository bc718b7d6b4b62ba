"""streams.replay: the plan and the order gate without Kafka; the replay against the real broker,
with a stand-in worker that is slow on browses, to show what ``--order strict`` guarantees."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from streamrec.model.events import Interaction, by_user
from streamrec.model.synth import CSV_COLUMNS, write_csv
from streamrec.streams.replay import (
    Message,
    OrderGate,
    Topics,
    event_id,
    parse_event_id,
    plan,
    source_of,
)
from tests.factories import small_events

REPO = Path(__file__).resolve().parents[2]


def streamrec(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamrec.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


# ---- plan -----------------------------------------------------------------------------------
EVENTS = [
    Interaction("u1", "a", "browse", 3000),
    Interaction("u2", "b", "click", 1000),
    Interaction("u1", "c", "click", 1000),
    Interaction("u1", "d", "cart", 3000),  # same ts as the first u1 event: file order breaks the tie
    Interaction("u:3", "e", "browse", 2000),
]


def test_plan_sends_in_timestamp_order_routes_types_and_names_events_by_their_place():
    msgs = plan(EVENTS, Topics("c", "b"))
    assert [json.loads(m.value)["item_id"] for m in msgs] == ["b", "c", "e", "a", "d"]
    assert [m.topic for m in msgs] == ["c", "c", "b", "b", "c"]
    assert [m.seq for m in msgs] == list(range(5))
    cart = json.loads(msgs[-1].value)
    assert cart == {"user_id": "u1", "item_id": "d", "ts": 3000, "event_type": "cart", "event_id": "u1:2"}
    assert all(m.key == m.user_id.encode() for m in msgs)
    # the event id is the place in by_user's history: the evaluator's targets use the same index
    for user, seq in by_user(EVENTS).items():
        mine = [json.loads(m.value) for m in msgs if m.user_id == user]
        assert [(d["item_id"], d["event_id"]) for d in mine] == [(e.item_id, event_id(user, i))
                                                                 for i, e in enumerate(seq)]


def test_plan_from_ts_keeps_later_events_and_their_ids():
    msgs = plan(EVENTS, Topics(), from_ts=3000)
    assert [m.event_id for m in msgs] == ["u1:1", "u1:2"]
    assert plan(EVENTS, Topics(), from_ts=3001) == []


def test_event_ids_round_trip_also_with_colons_in_the_user_id():
    assert parse_event_id(event_id("u:3", 17)) == ("u:3", 17)
    assert parse_event_id("no-index") is None and parse_event_id(":4") is None and parse_event_id("u:x") is None


def test_source_of_reads_outputs_and_dead_letters():
    assert source_of(b'{"source": {"topic": "c", "partition": 2, "offset": 9}, "items": []}') == ("c", 2, 9)
    assert source_of(b"not json") is None and source_of(b'{"items": []}') is None and source_of(None) is None


# ---- the order gate -------------------------------------------------------------------------
class FakeSent:
    def __init__(self, coords=None, failed=False):
        self._coords, self.failed = coords, failed

    def coords(self):
        return self._coords


def msg(seq: int, user: str, topic: str) -> Message:
    return Message(seq, user, topic, user.encode(), b"{}", event_id(user, seq), seq)


def test_strict_holds_a_switch_of_topic_until_the_previous_event_is_processed():
    gate = OrderGate(strict=True)
    a = msg(0, "u", "browses")
    assert gate.offer(a)
    gate.sent(a, FakeSent(("browses", 3, 10)))
    same = msg(1, "u", "browses")
    assert gate.offer(same)  # same topic, same partition: Kafka keeps the order
    gate.sent(same, FakeSent(("browses", 3, 11)))
    switch, after, other = msg(2, "u", "clicks"), msg(3, "u", "browses"), msg(4, "v", "clicks")
    assert not gate.offer(switch)
    assert not gate.offer(after)  # later events of that user queue behind it, in order
    assert gate.offer(other)  # other users keep flowing
    assert gate.waiting == 2 and gate.releasable() == []
    gate.processed("browses", 3, 10)  # not yet the last one sent
    assert gate.releasable() == []
    gate.processed("clicks", 3, 99)  # another partition says nothing about this one
    assert gate.releasable() == []
    gate.processed("browses", 3, 12)  # a later offset of the partition: 11 is done too
    assert gate.releasable() == [switch]
    gate.sent(switch, FakeSent(None))  # not acknowledged yet: its coordinates are unknown
    assert gate.releasable() == []
    gate.sent(switch, FakeSent(("clicks", 3, 0)))
    gate.processed("clicks", 3, 0)
    assert gate.releasable() == [after] and gate.waiting == 0
    assert gate.held == 2 and gate.timeouts == 0


def test_a_failed_send_or_the_timeout_releases_a_hold_and_none_never_holds():
    now = [0.0]
    gate = OrderGate(strict=True, hold_timeout=5.0, clock=lambda: now[0])
    gate.sent(msg(0, "u", "a"), FakeSent(failed=True))
    assert gate.offer(msg(1, "u", "b"))  # nothing to wait for
    gate.sent(msg(1, "u", "b"), FakeSent(("b", 0, 0)))
    held = msg(2, "u", "a")
    assert not gate.offer(held)
    now[0] = 4.9
    assert gate.releasable() == []
    now[0] = 5.0
    assert gate.releasable() == [held] and gate.timeouts == 1

    free = OrderGate(strict=False)
    free.sent(msg(0, "u", "a"), FakeSent(("a", 0, 0)))
    assert free.offer(msg(1, "u", "b")) and free.held == 0


# ---- against the broker ---------------------------------------------------------------------
def read_all(broker: str, topics: list[str], expect: int, timeout: float = 60.0) -> list:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False, check_crcs=False)
    tps = [TopicPartition(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or ())]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=200).values():
            out.extend(records)
    c.close()
    return out


def test_replay_cli_order_none_sends_everything_keyed_and_logs_coordinates(kafka_broker, tmp_path):
    events = small_events(users=40, items=60, seed=2)
    data = write_csv(events, tmp_path / "events.csv")
    tag = uuid.uuid4().hex[:8]
    clicks, browses = f"r{tag}-clicks", f"r{tag}-browses"
    log = tmp_path / "sent.jsonl"
    run = streamrec("replay", "--data", data, "--format", "csv", "--columns", CSV_COLUMNS,
                    "--brokers", kafka_broker.bootstrap, "--clicks-topic", clicks, "--browses-topic", browses,
                    "--partitions", 3, "--order", "none", "--max-speed", "--log", log, "--json", "--no-progress")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    n_clicks = sum(e.event_type == "click" for e in events)
    assert summary["sent"] == summary["events"] == len(events) and summary["failures"] == 0
    assert summary["per_topic"] == {clicks: n_clicks, browses: len(events) - n_clicks}
    assert summary["rate"] > 0 and summary["held"] == 0
    records = read_all(kafka_broker.bootstrap, [clicks, browses], len(events))
    assert len(records) == len(events)
    sent = {(d["topic"], d["partition"], d["offset"]): d for d in map(json.loads, log.read_text().splitlines())}
    partition_of: dict[tuple[str, str], set[int]] = defaultdict(set)
    per_user: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        value = json.loads(r.value)
        assert r.key.decode() == value["user_id"]
        assert sent[(r.topic, r.partition, r.offset)]["event_id"] == value["event_id"]  # the log's coordinates
        assert (r.topic == browses) == (value["event_type"] == "browse")
        partition_of[(r.topic, value["user_id"])].add(r.partition)
        per_user[(r.topic, value["user_id"])].append(value)
    assert all(len(p) == 1 for p in partition_of.values())  # keyed: one partition per user and topic
    for values in per_user.values():  # within a topic, a user's events keep their time order
        idx = [parse_event_id(v["event_id"])[1] for v in values]
        assert idx == sorted(idx)


class StandInWorker(threading.Thread):
    """Consumes both input topics; applies clicks at once but browses only ``lag`` seconds after they
    were produced (as a busy partition would); publishes {"source": ...} for each; records the order
    in which it applied each user's events."""

    def __init__(self, broker: str, topics: Topics, lag: float):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self.topics, self.lag, self.halt = topics, lag, threading.Event()
        self.applied: dict[str, list[int]] = defaultdict(list)
        self.consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False,
                                      check_crcs=False, fetch_max_wait_ms=20)
        deadline = time.monotonic() + 30
        while not all(self.consumer.partitions_for_topic(t) for t in topics.inputs) and time.monotonic() < deadline:
            time.sleep(0.1)
        tps = [TopicPartition(t, p) for t in topics.inputs for p in sorted(self.consumer.partitions_for_topic(t))]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.producer = KafkaProducer(bootstrap_servers=broker, linger_ms=1)

    def run(self) -> None:
        due: list = []  # browses not yet due, in arrival order (FIFO per partition)
        while not self.halt.is_set():
            for records in self.consumer.poll(timeout_ms=20).values():
                for r in records:
                    if r.topic == self.topics.browses:
                        due.append(r)
                    else:
                        self.apply(r)
            now_ms = time.time() * 1000
            while due and now_ms - due[0].timestamp >= self.lag * 1000:
                self.apply(due.pop(0))
        self.producer.flush()
        self.consumer.close()
        self.producer.close()

    def apply(self, r) -> None:
        value = json.loads(r.value)
        self.applied[value["user_id"]].append(parse_event_id(value["event_id"])[1])
        source = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
        self.producer.send(self.topics.output, key=r.key, value=json.dumps({"source": source}).encode())


@pytest.mark.parametrize("order", ["strict", "none"])
def test_strict_order_makes_each_users_processing_order_the_time_order(kafka_broker, order):
    from kafka.admin import KafkaAdminClient, NewTopic

    from streamrec.streams.replay import ReplayConfig, replay

    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"o{tag}-clicks", f"o{tag}-browses", f"o{tag}-recs", f"o{tag}-dlq")
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(t, 2, 1) for t in (topics.clicks, topics.browses, topics.output, topics.dlq)])
    admin.close()
    events = [e for e in small_events(users=12, items=40, seed=4)][:400]
    worker = StandInWorker(kafka_broker.bootstrap, topics, lag=0.15)
    worker.start()
    try:
        summary = replay(plan(events, topics), ReplayConfig(brokers=kafka_broker.bootstrap, topics=topics,
                                                             order=order, hold_timeout=30), progress=False)
        deadline = time.monotonic() + 30
        while sum(map(len, worker.applied.values())) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.halt.set()
        worker.join(10)
    assert summary.sent == len(events) and summary.failures == 0
    assert sum(map(len, worker.applied.values())) == len(events)
    in_order = sum(idx == sorted(idx) for idx in worker.applied.values())
    if order == "strict":
        assert in_order == len(worker.applied), "strict: every user's events applied in time order"
        assert summary.held > 0 and summary.order_timeouts == 0
    else:  # the slow browses let later clicks overtake them
        assert in_order < len(worker.applied)


def test_strict_without_a_worker_stops_with_a_reason(kafka_broker):
    from kafka.admin import KafkaAdminClient, NewTopic

    from streamrec.streams.replay import ReplayConfig, ReplayError, replay

    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"s{tag}-clicks", f"s{tag}-browses", f"s{tag}-recs", f"s{tag}-dlq")
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(t, 1, 1) for t in (topics.clicks, topics.browses, topics.output)])
    admin.close()
    events = [Interaction("u", "a", "browse", 1000), Interaction("u", "a", "click", 2000)]
    start = time.monotonic()
    with pytest.raises(ReplayError, match="is the worker running"):
        replay(plan(events, topics), ReplayConfig(brokers=kafka_broker.bootstrap, topics=topics, hold_timeout=1.5),
               progress=False)
    assert time.monotonic() - start < 30
