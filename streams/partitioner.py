"""Where Kafka's default partitioner puts a key, and the rule that a user's events arrive there.

The worker keeps each user's state in the table partition of the user's input partition. Kafka's
Java client, kafka-python and aiokafka put a keyed record on ``murmur2(key) % partitions``; clients
built on librdkafka (confluent-kafka, kcat, most clients outside the JVM) default to CRC32
(``consistent_random``) instead, and put most users elsewhere. A record on another partition than
its key's murmur2 partition would give its user a second state (and its own order), and lookups by
user (``GET /recommendations/{user}``) would ask the worker that owns the murmur2 partition. The
worker therefore dead-letters such a record (``wrong_partition``) instead of stepping it; librdkafka
producers must set ``partitioner=murmur2_random``.
"""
from __future__ import annotations

from aiokafka.partitioner import murmur2


class KeyPartitioner:
    """Kafka's default partition of a key (murmur2), cached per key (user ids repeat)."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}
        self._limit = limit

    def __call__(self, key: bytes, n_partitions: int) -> int:
        hit = self._cache.get((key, n_partitions))
        if hit is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            hit = self._cache[(key, n_partitions)] = (murmur2(key) & 0x7FFFFFFF) % n_partitions
        return hit


def wrong_partition_message(expected: int, actual: int, n_partitions: int) -> str:
    """The dead letter's message for a record on ``actual`` whose key belongs on ``expected``."""
    return (f"the key belongs on partition {expected} of {n_partitions} (Kafka's default partitioner, murmur2), "
            f"but the record is on partition {actual}: its producer uses another partitioner (librdkafka's "
            f"default is CRC32; set partitioner=murmur2_random in confluent-kafka, -X partitioner=murmur2_random "
            f"in kcat). Stepped here, its user would get a second state; produce it again with murmur2")
