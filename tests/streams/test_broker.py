"""The real Kafka broker that ``streams.broker`` provisions and runs: clients, transactions, CLI, cluster."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streamrec.streams import broker as kb

REPO = Path(__file__).resolve().parents[2]


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _consume(bootstrap: str, topic: str, expected: int, **kwargs: object) -> list[bytes]:
    """Read ``topic`` from the start until ``expected`` messages came or 20 s of silence."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=_topic("g"), consumer_timeout_ms=20_000, **kwargs)
    try:
        values: list[bytes] = []
        for message in consumer:
            values.append(message.value)
            if len(values) >= expected:
                break
        return values
    finally:
        consumer.close()


def test_metadata_probe_and_handle(kafka_broker: kb.Broker) -> None:
    assert kafka_broker.is_running()
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    ids, controller = kb.metadata("127.0.0.1", kafka_broker.port)
    assert ids == [1] and controller == 1
    assert kafka_broker.log_path.exists() and "Kafka Server started" in kafka_broker.log_path.read_text()


def test_provision_is_idempotent(kafka_broker: kb.Broker) -> None:
    marker = kafka_broker.libs.parent / ".complete"
    before = marker.stat().st_mtime_ns
    started = time.monotonic()
    assert kb.provision(kafka_broker.version) == kafka_broker.libs
    assert time.monotonic() - started < 1.0 and marker.stat().st_mtime_ns == before
    assert (kafka_broker.libs / f"kafka_2.13-{kafka_broker.version}.jar").exists()


def test_clear_errors_without_a_jvm(kafka_broker: kb.Broker, tmp_path: Path) -> None:
    with pytest.raises(kb.BrokerError, match=f"port {kafka_broker.port} .* in use"):
        kb.start_broker(port=kafka_broker.port, data_dir=tmp_path, name=None, record_state=False)
    # A pid from a state file that is not our JVM (here: this test process) never counts as running.
    stale = kb.Broker(1, 1, 2, tmp_path / "node-1", kafka_broker.version, kafka_broker.libs, pid=os.getpid())
    assert not stale.is_running()
    stale.stop(timeout=1)  # and is never signalled
    assert kb.load("no-such-name", home=tmp_path) is None


def test_startup_failure_reports_the_log(kafka_broker: kb.Broker, tmp_path: Path) -> None:
    with pytest.raises(kb.BrokerError) as failure:
        kb.start_broker(data_dir=tmp_path, name=None, record_state=False, timeout=60,
                        extra_config={"num.network.threads": "0"})  # Kafka refuses it
    assert "num.network.threads" in str(failure.value)


def test_produce_consume_kafka_python(kafka_broker: kb.Broker) -> None:
    topic = _topic("plain")
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for i in range(50):
        producer.send(topic, key=f"user-{i % 5}".encode(), value=f"event-{i}".encode())
    producer.flush(timeout=30)
    producer.close()
    values = _consume(kafka_broker.bootstrap, topic, 50)
    assert sorted(values) == sorted(f"event-{i}".encode() for i in range(50))
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    assert len(consumer.partitions_for_topic(topic) or ()) == 8  # num.partitions default
    consumer.close()


def test_transactions_read_committed(kafka_broker: kb.Broker) -> None:
    topic = _topic("txn")
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, transactional_id=_topic("tx"))
    producer.init_transactions()
    for value, commit in [(b"committed-1", True), (b"aborted", False), (b"committed-2", True)]:
        producer.begin_transaction()
        producer.send(topic, key=b"k", value=value)  # one key: one partition, so order is kept
        producer.flush()  # the aborted record too reaches the log (abort would drop an unsent batch)
        producer.commit_transaction() if commit else producer.abort_transaction()
    producer.close()
    committed = _consume(kafka_broker.bootstrap, topic, 2, isolation_level="read_committed")
    assert committed == [b"committed-1", b"committed-2"]
    # The aborted record is really in the log: a read_uncommitted reader sees all three.
    everything = _consume(kafka_broker.bootstrap, topic, 3, isolation_level="read_uncommitted")
    assert everything == [b"committed-1", b"aborted", b"committed-2"]


def test_aiokafka_roundtrip_and_transaction(kafka_broker: kb.Broker) -> None:
    aiokafka = pytest.importorskip("aiokafka")
    topic = _topic("aio")

    async def roundtrip() -> list[bytes]:
        plain = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        await plain.start()
        try:
            await plain.send_and_wait(topic, b"plain", key=b"k")
        finally:
            await plain.stop()
        txn = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, transactional_id=_topic("aiotx"))
        await txn.start()
        try:
            async with txn.transaction():
                await txn.send(topic, b"in-txn", key=b"k")
            with pytest.raises(RuntimeError, match="abort me"):
                async with txn.transaction():
                    await (await txn.send(topic, b"aborted", key=b"k"))  # really written, then aborted
                    raise RuntimeError("abort me")
            async with txn.transaction():
                await txn.send(topic, b"in-txn-2", key=b"k")
        finally:
            await txn.stop()
        consumer = aiokafka.AIOKafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, group_id=_topic("aio"),
                                             auto_offset_reset="earliest", isolation_level="read_committed")
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    got.extend(r.value for r in records)
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == [b"plain", b"in-txn", b"in-txn-2"]


def test_restart_keeps_port_and_data(kafka_broker: kb.Broker) -> None:
    topic, port, old_pid = _topic("restart"), kafka_broker.port, kafka_broker.pid
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    producer.send(topic, b"before-restart").get(timeout=30)
    producer.close()
    kafka_broker.restart()
    assert kafka_broker.is_running() and kafka_broker.port == port and kafka_broker.pid != old_pid
    assert _consume(kafka_broker.bootstrap, topic, 1) == [b"before-restart"]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMREC_HOME": str(home)}
    env.pop("STREAMREC_KAFKA_PORT", None)
    return subprocess.run([sys.executable, "-m", "streamrec.cli.main", "kafka", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_cli_start_status_stop(kafka_broker: kb.Broker, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # Reuse the jar cache the fixture already provisioned: no second download.
    (home / kafka_broker.libs.parent.name).symlink_to(kafka_broker.libs.parent)
    name = f"test-{uuid.uuid4().hex[:6]}"
    started = _cli(home, "start", "--name", name, "--version", kafka_broker.version,
                   "--override", "log.retention.hours=24", "--override", "log.index.size.max.bytes=131072")
    try:
        assert started.returncode == 0, started.stderr
        props = (home / "kafka-run" / name / "node-1" / "server.properties").read_text().splitlines()
        assert "log.retention.hours=24" in props and "log.index.size.max.bytes=131072" in props  # over the default
        bootstrap = started.stdout.strip().splitlines()[-1]
        state = json.loads((home / "kafka-run" / name / "state.json").read_text())
        assert state["bootstrap"] == bootstrap and bootstrap.startswith("127.0.0.1:")
        pid = state["brokers"][0]["pid"]
        assert kb.metadata("127.0.0.1", int(bootstrap.rsplit(":", 1)[1]))[0] == [1]  # it outlived the CLI

        status = _cli(home, "status", "--name", name)
        assert status.returncode == 0 and "running" in status.stdout and status.stdout.splitlines()[-1] == bootstrap
        again = _cli(home, "start", "--name", name, "--override", "log.retention.hours=1")  # reports the running one
        assert again.returncode == 0 and again.stdout.strip() == bootstrap
        assert "--override not applied" in again.stderr  # a setting it cannot apply is not dropped silently
    finally:
        stopped = _cli(home, "stop", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    assert not (home / "kafka-run" / name / "state.json").exists()
    status = _cli(home, "status", "--name", name)
    assert status.returncode == 1 and "not running" in status.stdout


@pytest.mark.slow
def test_cluster3_replication_and_acks_all(kafka_cluster3: kb.Cluster) -> None:
    assert len(kafka_cluster3.bootstrap.split(",")) == 3
    topic = _topic("rf3")
    admin = KafkaAdminClient(bootstrap_servers=kafka_cluster3.bootstrap, request_timeout_ms=30_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3,
                                      topic_configs={"min.insync.replicas": "2"})])
        described = admin.describe_topics([topic])[0]
        # the key name depends on the Metadata version kafka-python negotiated with the broker
        assert all(len(p.get("replica_nodes", p.get("replicas", ()))) == 3 for p in described["partitions"])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_cluster3.bootstrap, acks="all", retries=10)
    for i in range(30):
        producer.send(topic, f"m{i}".encode())
    producer.flush(timeout=60)
    # One node down: 2 in-sync replicas remain, still enough for acks=all with min.insync.replicas=2.
    kafka_cluster3.brokers[2].stop()
    try:
        producer.send(topic, b"with-one-node-down").get(timeout=60)
    finally:
        producer.close()
        kafka_cluster3.brokers[2].launch()
        kafka_cluster3.brokers[2].wait_ready()
    values = _consume(kafka_cluster3.bootstrap, topic, 31)
    assert sorted(values) == sorted([f"m{i}".encode() for i in range(30)] + [b"with-one-node-down"])
    consumer = KafkaConsumer(bootstrap_servers=kafka_cluster3.bootstrap)
    assert sum(consumer.end_offsets([TopicPartition(topic, p) for p in range(3)]).values()) == 31
    consumer.close()


def test_cli_rejects_a_malformed_override(tmp_path: Path) -> None:
    bad = _cli(tmp_path, "start", "--name", "never", "--override", "log.retention.hours")
    assert bad.returncode != 0 and "--override 'log.retention.hours' is not KEY=VALUE" in bad.stderr
    assert not (tmp_path / "kafka-run" / "never").exists()  # nothing was provisioned or started


def test_parse_overrides() -> None:
    assert kb.parse_overrides(["a.b=1", " c = x=y ", "d="]) == {"a.b": "1", "c": "x=y", "d": ""}
    for bad in ("a", "=1", "a b=1"):
        with pytest.raises(ValueError, match="is not KEY=VALUE"):
            kb.parse_overrides([bad])


def test_fresh_partitions_get_small_indexes(kafka_broker: kb.Broker) -> None:
    """The broker's indexes are 256 KiB, not Kafka's 10 MiB: a fresh partition's first index entry (after ~4 KiB
    of records) maps them, and touching a 10 MiB sparse map read the readahead window in, stalling produces."""
    topic = _topic("index")
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for _ in range(10):  # batches of ~2.5 KiB: the index gets its first entry at the batch after 4 KiB
        for _ in range(20):
            producer.send(topic, value=b"x" * 100, partition=0)
        producer.flush(timeout=30)
    producer.close()
    folder = kafka_broker.data_dir / "data" / f"{topic}-0"
    deadline = time.monotonic() + 10
    while not list(folder.glob("*.index")) and time.monotonic() < deadline:
        time.sleep(0.1)
    sizes = {p.suffix: p.stat().st_size for p in folder.iterdir() if p.suffix in (".index", ".timeindex")}
    assert sizes == {".index": 256 * 1024, ".timeindex": 256 * 1024 // 12 * 12}, sizes


def test_free_ports_are_distinct() -> None:
    ports = kb.free_ports(64, exclude=(kb.free_port(),))
    assert len(set(ports)) == 64


def test_start_retries_when_a_free_port_is_taken_before_kafka_binds(
        kafka_broker: kb.Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()  # another process took the "free" controller port between the choice and the JVM's bind
    taken = squatter.getsockname()[1]
    real, calls = kb.free_ports, []

    def first_controller_port_taken(n: int, exclude: tuple[int, ...] = ()) -> list[int]:
        calls.append(n)
        return [taken] if len(calls) == 2 else real(n, exclude)

    monkeypatch.setattr(kb, "free_ports", first_controller_port_taken)
    messages: list[str] = []
    try:
        broker = kb.start_broker(data_dir=tmp_path, name=None, record_state=False, timeout=60,
                                 die_with_parent=True, progress=messages.append)
        try:
            assert broker.controller_port != taken and broker.is_running()
            assert any("retrying" in m for m in messages), messages
        finally:
            broker.stop()
    finally:
        squatter.close()
