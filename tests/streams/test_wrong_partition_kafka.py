"""Producers with another partitioner (issue 14 item 8), against the real broker and two workers.

librdkafka clients (confluent-kafka, kcat) put a keyed record on CRC32(key) % partitions by default;
the worker keeps a user's state in the partition of murmur2(key) % partitions (Kafka's Java default,
kafka-python, aiokafka). A record elsewhere is dead-lettered as ``wrong_partition`` instead of giving
its user a second state; with ``partitioner=murmur2_random`` confluent-kafka's records are all
stepped, and either worker answers ``GET /recommendations/{user}`` for every user."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.export.runtime import Bundle
from streamrec.streams import codec
from streamrec.streams.partitioner import KeyPartitioner
from tests.streams.workers import (PARTITIONS, Distinct, Names, Reader, assert_equal_to_offline, one_topic_per_user,
                                   reference, source_of, start_worker)

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka (test extra) is not installed")

pytestmark = pytest.mark.kafka


def produce_librdkafka(broker: str, names: Names, events: list, **config: str) -> dict[tuple, object]:
    """Send with confluent-kafka (librdkafka); (topic, partition, offset) -> event, from the delivery reports."""
    producer = confluent_kafka.Producer({"bootstrap.servers": broker, "linger.ms": 5, **config})
    sent: dict[tuple, object] = {}
    errors: list = []

    def delivered(event: object) -> Callable[[object, object], None]:
        def report(err: object, msg: object) -> None:
            if err is not None:
                errors.append(err)
            else:
                sent[(msg.topic(), msg.partition(), msg.offset())] = event  # type: ignore[attr-defined]
        return report

    for e in events:
        topic = names.clicks if e.event_type == "click" else names.browses
        value = json.dumps({"user_id": e.user_id, "item_id": e.item_id, "ts": e.ts}).encode()
        producer.produce(topic, key=e.user_id.encode(), value=value, on_delivery=delivered(e))
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    return sent


def test_librdkafka_partitioners_against_two_workers(kafka_broker, tmp_path: Path, bundle_dir: Path, bundle: Bundle,
                                                     by_hand: Callable) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = one_topic_per_user(users=60, seed=43)[:1200]
    users = sorted({e.user_id for e in events})
    crc_users, murmur_users = set(users[::2]), set(users[1::2])
    workers = [start_worker(broker, bundle_dir, names, tmp_path / f"state-{i}") for i in (1, 2)]
    try:
        for w in workers:
            w.wait_ready(timeout=180)
        # librdkafka's default partitioner (consistent_random: CRC32 of the key) for half the users ...
        sent = produce_librdkafka(broker, names, [e for e in events if e.user_id in crc_users])
        # ... and murmur2_random (Kafka's default, as the docs tell librdkafka users to set) for the others
        sent |= produce_librdkafka(broker, names, [e for e in events if e.user_id in murmur_users],
                                   partitioner="murmur2_random")
        assert len(sent) == len(events)
        murmur2 = KeyPartitioner()
        wrong = {src for src, e in sent.items() if murmur2(e.user_id.encode(), PARTITIONS) != src[1]}
        # CRC32 and murmur2 disagree for most keys: the default partitioner really put records elsewhere
        assert wrong and {sent[src].user_id for src in wrong} <= crc_users
        assert len({sent[src].user_id for src in wrong}) >= len(crc_users) // 2

        recs = Reader(broker, names.recs).read_until(Distinct(len(sent) - len(wrong)), timeout=180)
        dead = Reader(broker, names.dlq).read_until(lambda rs: len(rs) >= len(wrong), timeout=120)
        # every record on its key's murmur2 partition has its list; every other one a dead letter, nothing else
        assert {source_of(r) for r in recs} == set(sent) - wrong
        letters = {source_of(r): codec.decode_dead_letter(r.value) for r in dead}
        assert set(letters) == wrong and len(dead) == len(wrong)
        for src, letter in letters.items():
            assert letter["reason"] == codec.WRONG_PARTITION, letter
            assert f"belongs on partition {murmur2(sent[src].user_id.encode(), PARTITIONS)} of {PARTITIONS}" \
                in letter["message"] and "murmur2_random" in letter["message"]
        # the lists stepped are those of each user's events on the right partition, in order: one state per user
        firsts = {}
        for r in recs:
            firsts.setdefault(source_of(r), r)
        assert_equal_to_offline(reference(bundle, by_hand, list(firsts.values()), sent), bundle.version)

        # counted by reason in both workers' /health, together exactly the dead letters
        rejected = [w.get("/health")[1]["rejected"].get(codec.WRONG_PARTITION, 0) for w in workers]
        assert sum(rejected) == len(wrong), rejected
        # lookups: either worker answers every user with a list, routed to the owner of the murmur2 partition
        listed = {r.key.decode() for r in recs}
        assert murmur_users <= listed
        for w in workers:
            for user in sorted(listed):
                status, body = w.get(f"/recommendations/{user}")
                assert status == 200 and body["user_id"] == user, (user, status, body)
            for user in sorted(crc_users - listed):  # every event of theirs went elsewhere: no state anywhere
                status, _ = w.get(f"/recommendations/{user}")
                assert status == 404, user
        print(f"\n[wrong partition] {len(events)} events of {len(users)} users: {len(wrong)} dead-lettered "
              f"(CRC32), {len(recs)} stepped; per worker {rejected}")
    finally:
        for w in workers:
            w.stop()
