"""Warm start of a new model version: ``streamrec worker --bundle NEW --warm-from 7d``.

A new model version has its own state table (``user-state-<version>``), empty at first. Warm-up
builds those states before the version answers anyone: the worker reads the input topics from a
point in time (Kafka's offsets-for-times), steps every event as usual, stores the states, and
publishes nothing (no recommendation, no dead letter) for the events that were already in the
topics when it started; from the first event after them on it serves as any worker does.

How, in two parts:

- ``prepare`` (here, before Faust starts; kafka-python): for a consumer group that has never
  committed, it finds each input partition's first offset at or after the time (``start``) and its
  end offset now (``end``), writes ``end`` into the state table's changelog under the key
  ``sequencer.warm_key(topic, partition)`` (in the partition's own changelog partition, like the progress
  records of ``streams/sequencer.py``), then commits ``start`` as the group's offset. A group that has
  committed already is a worker that warmed (or served) before: nothing is planned again, so a
  warm-up killed midway resumes from its commits and its changelog like any worker.
- the worker (``streams/worker.py``): records below their partition's ``end`` are stepped and
  their states stored, but ``silence`` (``streams/batch.py``) drops their outputs; they count as
  ``warmed``. The states are those of an uninterrupted run over the same events, because they are
  one: the same plan, the same contiguity guard, the same crash recovery.

A time before what the topics keep (retention) is not an error: the warm-up uses what there is
and ``WarmPlan.describe`` says how much history that was.

    since = config.parse_since("7d", now_ms)           # streams/config.py
    plan = prepare(config, changelog_topic, since)     # None: the group has offsets already
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from streamrec.streams.config import WorkerConfig
from streamrec.streams.security import kafka_python_kwargs
from streamrec.streams.sequencer import warm_key

def encode_offset(offset: int) -> bytes:
    return offset.to_bytes(8, "little", signed=True)


@dataclass(frozen=True)
class WarmPartition:
    """One input partition's warm-up: records ``start .. end - 1`` are stepped without publishing."""

    topic: str
    partition: int
    start: int
    end: int
    earliest: int  # the first offset the topic still keeps
    earliest_ts: int | None = None  # that record's timestamp (epoch ms), when history was cut (see truncated)

    @property
    def events(self) -> int:
        return max(0, self.end - self.start)

    @property
    def truncated(self) -> bool:
        """The topic dropped records (retention) and keeps none from before the requested time: the
        warm window reaches back past what is left."""
        return self.earliest > 0 and self.start == self.earliest and self.end > self.start


@dataclass(frozen=True)
class WarmPlan:
    since_ms: int
    partitions: tuple[WarmPartition, ...]

    @property
    def events(self) -> int:
        return sum(p.events for p in self.partitions)

    def describe(self) -> str:
        """One paragraph for the log: how much is warmed, and whether retention cut the window."""
        since = _iso(self.since_ms)
        text = (f"warm-up from {since}: {self.events:,} events in {len(self.partitions)} input partitions are "
                "stepped without publishing; the worker serves every event after them")
        cut = [p for p in self.partitions if p.truncated]
        if cut:
            kept = min((p.earliest_ts for p in cut if p.earliest_ts is not None), default=None)
            text += (f". The input topics keep less history than asked: {len(cut)} of {len(self.partitions)} "
                     f"partitions dropped records (retention) and hold nothing from before {since}"
                     + (f"; the oldest record kept is from {_iso(kept)}" if kept is not None else "")
                     + f", so the states start from {self.events:,} events of history, not everything since {since}")
        return text


def resuming(app_id: str) -> str:
    """What ``streamrec worker --warm-from`` says when ``prepare`` planned nothing."""
    return (f"warm-up: the consumer group {app_id} has committed offsets already, so nothing is planned again: "
            "the warm-up (or serving) goes on from them")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_partitions(since_ms: int, beginning: Mapping[Any, int], end: Mapping[Any, int],
                    at_time: Mapping[Any, int | None], earliest_ts: Mapping[Any, int | None] | None = None) -> WarmPlan:
    """The plan from Kafka's answers, per topic-partition (objects with ``topic`` and ``partition``):
    ``beginning`` / ``end`` offsets and ``at_time`` (the first offset at or after ``since_ms``; None
    when every record is older, so nothing is warmed there)."""
    parts = []
    for tp in sorted(end, key=lambda t: (t.topic, t.partition)):
        found = at_time.get(tp)
        start = end[tp] if found is None else max(found, beginning[tp])
        parts.append(WarmPartition(tp.topic, tp.partition, start, end[tp], beginning[tp],
                                   (earliest_ts or {}).get(tp)))
    return WarmPlan(since_ms, tuple(parts))


def prepare(config: WorkerConfig, changelog: str, since_ms: int, timeout_s: float = 30.0) -> WarmPlan | None:
    """Plan the warm-up of ``config``'s consumer group (see the module docstring): write each input
    partition's end offset to ``changelog`` (created if missing, compacted, the table's partitions),
    then commit the start offsets. Returns the plan, or None when the group has committed offsets
    already (a warm-up under way, or done: it goes on from there). Blocking; before Faust starts."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata, TopicPartition

    security = kafka_python_kwargs(config)
    servers = config.brokers.split(",")
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=config.app_id, enable_auto_commit=False,
                             client_id=f"{config.app_id}-warm", request_timeout_ms=int(timeout_s * 1000) + 5000,
                             **security)
    try:
        tps = [TopicPartition(t, p) for t in (config.clicks_topic, config.browses_topic)
               for p in range(config.partitions)]
        committed = {tp: consumer.committed(tp) for tp in tps}
        if any(v is not None for v in committed.values()):
            return None
        beginning, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        found = consumer.offsets_for_times({tp: since_ms for tp in tps})
        at_time = {tp: (None if v is None else v.offset) for tp, v in found.items()}
        oldest = {tp: _timestamp_at(consumer, tp, beginning[tp]) for tp in tps
                  if beginning[tp] > 0 and at_time.get(tp) == beginning[tp] and end[tp] > beginning[tp]}
        plan = plan_partitions(since_ms, beginning, end, at_time, oldest)
        admin = KafkaAdminClient(bootstrap_servers=servers, client_id=f"{config.app_id}-warm-admin", **security)
        try:
            if changelog not in admin.list_topics():
                admin.create_topics([NewTopic(changelog, config.partitions, config.replication,
                                              topic_configs={"cleanup.policy": "compact"})],
                                    raise_errors=False, wait_for_metadata=True)
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=servers, acks="all", client_id=f"{config.app_id}-warm", **security)
        try:
            for p in plan.partitions:
                producer.send(changelog, key=warm_key(p.topic, p.partition), value=encode_offset(p.end),
                              partition=p.partition)
            producer.flush(timeout_s)
        finally:
            producer.close(timeout_s)
        consumer.commit({TopicPartition(p.topic, p.partition): OffsetAndMetadata(p.start, "", -1)
                         for p in plan.partitions})
        return plan
    finally:
        consumer.close()


def _timestamp_at(consumer: Any, tp: Any, offset: int, timeout_s: float = 10.0) -> int | None:
    """The timestamp of the record at ``offset`` of ``tp`` (None if it cannot be read in time)."""
    consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=1).values():
                if records:
                    return int(records[0].timestamp)
        return None
    finally:
        consumer.unsubscribe()
