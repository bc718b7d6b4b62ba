"""Reliability against real brokers: a broker restart mid-stream, a second worker joining and the
first leaving, idle states expiring through changelog tombstones, and SASL authentication.

Tests that restart or reconfigure a broker start their own (the ``own_broker`` fixture, which stops
it at teardown, pass or fail), so the session's broker stays undisturbed; they carry the ``kafka``
marker by hand, since the suite's hook only sees the session fixtures. As in test_crash_kafka.py, a
user's events all go to one input topic, so the uninterrupted run's order is the production order,
and the reference is the bundle stepped by hand.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction, by_user
from streamrec.streams.broker import Broker, free_port, start_broker
from tests.factories import small_events
from tests.streams.workers import (ATOL, SASL_PASSWORD, SASL_USER, Distinct, Names, Reader, Worker,
                                   assert_equal_to_offline, check_complete, final_states, one_topic_per_user, produce,
                                   reference, sasl_listener, sorted_by_production, start_worker)


@pytest.fixture
def own_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """``own_broker(extra_config=None)`` starts a broker of the test's own (to restart or reconfigure it);
    each one started is stopped at teardown, whether the test passed or failed."""
    if request.node.get_closest_marker("kafka") is None:
        pytest.fail("a test that starts its own broker needs @pytest.mark.kafka (so -m 'not kafka' runs without Java)")
    started: list[Broker] = []

    def start(extra: dict[str, str] | None = None) -> Broker:
        broker = start_broker(data_dir=tmp_path / f"kafka-{len(started)}", name=None, record_state=False,
                              extra_config=extra, die_with_parent=True, timeout=180)
        started.append(broker)
        return broker

    try:
        yield start
    finally:
        for broker in started:
            broker.stop()


def kill_if_running(*workers: Worker) -> None:
    """For a test's ``finally``: a worker a failed assertion left running does not outlive the test."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(30)


@pytest.mark.kafka
def test_broker_restart_mid_stream(own_broker: Callable[..., Broker], tmp_path: Path, bundle_dir: Path,
                                   bundle: Bundle, by_hand: Callable) -> None:
    kafka = own_broker()
    names, broker = Names(), kafka.bootstrap
    events = one_topic_per_user(users=150, seed=31)[:4000]
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    try:
        worker.wait_ready()
        producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
        sent = produce(producer, names, events[:2000])
        out = Reader(broker, names.recs)
        out.read_until(lambda rs: len(rs) >= 700)
        producer.close()
        out.close()
        kafka.restart()  # SIGTERM, then the same ports and data: the worker must find its way back alone
        assert worker.proc.poll() is None, worker.tail()
        producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
        sent.update(produce(producer, names, events[2000:]))
        out = Reader(broker, names.recs)
        recs = out.read_until(Distinct(len(events)), timeout=300)
        assert worker.proc.poll() is None, worker.tail()
        assert worker.stop() == 0, worker.tail()
        duplicates = check_complete(bundle, by_hand, sorted_by_production(recs, sent), sent, broker, names)
        print(f"\n[broker restart] {len(events)} events, {duplicates} duplicates")
        out.close()
        producer.close()
    finally:
        kill_if_running(worker)  # before own_broker's teardown stops the broker


def test_second_worker_joins_then_first_leaves(kafka_broker, tmp_path: Path, bundle_dir: Path, bundle: Bundle,
                                               by_hand: Callable) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = one_topic_per_user(users=200, seed=32)[:6000]
    thirds = [events[:2000], events[2000:4000], events[4000:]]
    first = start_worker(broker, bundle_dir, names, tmp_path / "state-1")
    first.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    out = Reader(broker, names.recs)
    sent = produce(producer, names, thirds[0])
    out.read_until(lambda rs: len(rs) >= 1500)
    second = start_worker(broker, bundle_dir, names, tmp_path / "state-2")  # joins: partitions are shared
    sent.update(produce(producer, names, thirds[1]))
    second.wait_ready(timeout=180)
    out.read_until(Distinct(3500), timeout=300)
    _, health2 = second.get("/health")
    assert first.stop() == 0, first.tail()  # leaves: the second takes over every partition
    sent.update(produce(producer, names, thirds[2]))
    recs = out.read_until(Distinct(len(events)), timeout=300)
    _, health2_end = second.get("/health")
    assert second.stop() == 0, second.tail()
    assert health2_end["counts"].get("emitted", 0) > 0
    duplicates = check_complete(bundle, by_hand, sorted_by_production(recs, sent), sent, broker, names)
    print(f"\n[rebalance] {len(events)} events; second worker emitted {health2['counts'].get('emitted', 0)} "
          f"while both ran, {health2_end['counts'].get('emitted', 0)} in all; {duplicates} duplicates")
    out.close()
    producer.close()


def test_idle_states_expire_with_tombstones(kafka_broker, tmp_path: Path, bundle_dir: Path, bundle: Bundle,
                                            by_hand: Callable) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    day = 86_400_000
    events = small_events(users=60, items=120, seed=33)
    seqs = {u: seq[:5] for u, seq in by_user(events).items()}
    users = sorted(seqs)
    idle, active = users[: len(users) // 2], users[len(users) // 2:]
    t0 = min(e.ts for seq in seqs.values() for e in seq)
    # idle users act at t0 only; active users at t0 + 1.5 days and t0 + 3 days. With a TTL of 2 days
    # nobody expires until the t0 + 3 days events come, then exactly the idle users do.
    day0 = [Interaction(e.user_id, e.item_id, e.event_type, t0 + (0 if u in idle else 3 * day // 2) + n)
            for u in users for n, e in enumerate(seqs[u][:2])]
    day3 = [Interaction(e.user_id, e.item_id, e.event_type, t0 + 3 * day + n) for u in active
            for n, e in enumerate(seqs[u][2:])]
    original, seqs = seqs, {u: [e for e in day0 + day3 if e.user_id == u] for u in users}
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state", "--state-ttl", "2d", "--ttl-sweep", "1")
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    out = Reader(broker, names.recs)
    sent = produce(producer, names, sorted(day0, key=lambda e: e.ts))
    out.read_until(lambda rs: len(rs) >= len(day0))
    assert len(out.records) >= len(day0), f"{len(out.records)} of {len(day0)} recommendations"
    # Every day0 event is applied. A sweep already running now may have begun before the last of
    # them, so wait for two more to finish: the second began after this point. Nobody is idle for
    # 2 days yet, so none of them expired anyone.
    sweeps = worker.get("/health")[1]["counts"].get("ttl_sweeps", 0)
    counts = wait_for_sweeps(worker, sweeps + 2)
    assert counts.get("ttl_sweeps", 0) >= sweeps + 2, f"no expiry sweep finished within 30 s (1 s apart): {counts}"
    assert counts.get("expired", 0) == 0
    sent.update(produce(producer, names, day3))
    out.read_until(lambda rs: len(rs) >= len(day0) + len(day3))
    deadline = time.monotonic() + 30
    while worker.get("/health")[1]["counts"].get("expired", 0) < len(idle) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.get("/health")[1]["counts"].get("expired", 0) == len(idle)
    assert all(worker.get(f"/recommendations/{u}")[0] == 404 for u in idle)
    assert all(worker.get(f"/recommendations/{u}")[0] == 200 for u in active)
    # an expired user who comes back starts afresh, exactly like a new user
    back = idle[0]
    comeback = Interaction(back, original[back][2].item_id, original[back][2].event_type, t0 + 3 * day + 999)
    sent.update(produce(producer, names, [comeback]))
    recs = out.read_until(lambda rs: len(rs) >= len(day0) + len(day3) + 1)
    assert worker.stop() == 0, worker.tail()
    last = next(json.loads(r.value) for r in reversed(recs) if r.key == back.encode())
    fresh = by_hand(bundle, [comeback])[-1]
    assert last["items"] == fresh.items
    np.testing.assert_allclose(last["scores"], fresh.scores, atol=ATOL, rtol=0)
    states = final_states(broker, names, bundle.version)  # the changelog: tombstones for the idle users
    assert all(states[u] is None for u in idle[1:])
    assert states[back] is not None and states[back].count == 1
    assert all(states[u] is not None and states[u].count == len(seqs[u]) for u in active)
    out.close()
    producer.close()


def wait_for_sweeps(worker: Worker, at_least: int, timeout: float = 30.0) -> dict[str, int]:
    """The worker's ``/health`` counts once ``ttl_sweeps`` (finished expiry sweeps) reaches ``at_least``,
    or at the deadline (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = worker.get("/health")[1]["counts"]
        if counts.get("ttl_sweeps", 0) >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


@pytest.mark.kafka
def test_sasl_settings_pass_through(own_broker: Callable[..., Broker], tmp_path: Path, bundle_dir: Path,
                                    bundle: Bundle, by_hand: Callable) -> None:
    sasl_port = free_port()
    kafka = own_broker(sasl_listener(sasl_port))
    names, sasl = Names(), f"127.0.0.1:{sasl_port}"
    auth = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN", "--sasl-username", SASL_USER]

    workers: list[Worker] = []
    try:
        wrong = start_worker(sasl, bundle_dir, names, tmp_path / "wrong", *auth, "--sasl-password", "nope")
        workers.append(wrong)
        code = wrong.proc.wait(120)
        assert code != 0 and "check the credentials" in wrong.log.read_text(), wrong.tail()

        worker = start_worker(sasl, bundle_dir, names, tmp_path / "state", *auth, "--sasl-password", SASL_PASSWORD)
        workers.append(worker)
        worker.wait_ready()
        events = small_events(users=30, items=120, seed=34)[:300]
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)  # the test itself uses PLAINTEXT
        sent = produce(producer, names, events)
        recs = Reader(kafka.bootstrap, names.recs).read_until(lambda rs: len(rs) >= len(events))
        assert worker.stop() == 0, worker.tail()
        assert len(recs) == len(events)
        assert_equal_to_offline(reference(bundle, by_hand, recs, sent), bundle.version)
        producer.close()
    finally:
        kill_if_running(*workers)  # before own_broker's teardown stops the broker


@pytest.mark.parametrize("bad, message", [
    ({"--security-protocol": "SASL_SSL"}, "needs --sasl-username and a password"),
    ({"--security-protocol": "TLS"}, "is not one of"),
    ({"--ssl-cafile": "/nonexistent/ca.pem"}, "is not a file"),
    ({"--state-ttl": "soon"}, "is not a duration"),
])
def test_security_and_ttl_flags_are_checked(bad: dict, message: str, tmp_path: Path) -> None:
    from streamrec.streams.config import ConfigError, WorkerConfig

    fields = {"--security-protocol": "security_protocol", "--ssl-cafile": "ssl_cafile", "--state-ttl": "state_ttl"}
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.from_env({"STREAMREC_BUNDLE": str(tmp_path)}, **{fields[k]: v for k, v in bad.items()})
    config = WorkerConfig.from_env({"STREAMREC_BUNDLE": str(tmp_path), "STREAMREC_STATE_TTL": "30d",
                                    "STREAMREC_SASL_PASSWORD": "pw"}, security_protocol="sasl-plaintext",
                                   sasl_username="u")
    assert (config.state_ttl, config.security_protocol) == (30 * 86400.0, "SASL_PLAINTEXT")
    assert WorkerConfig.from_env(config.to_env()) == config
