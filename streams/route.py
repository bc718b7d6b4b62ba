"""Promote and rollback: which model version publishes to ``recommendations``, switched at an offset.

Two versions run side by side (``README.md``, "Deploying a new model"): the serving one publishes to
``recommendations``, the shadow to ``recommendations.shadow``, each under its own app id (consumer
group, state table). ``streamrec promote`` swaps their roles with both workers stopped:

1. stop both workers (SIGTERM: each finishes what it took and commits);
2. ``streamrec promote`` reads both groups' committed offsets and picks, per input partition, the
   switch offset ``X`` = the larger of the two (neither worker has processed anything at or after
   it), then writes a route record into each version's state table (its changelog): from ``X`` on,
   the version that served publishes to the shadow topic and the other to ``recommendations``;
3. start both workers again with the same commands as before.

The worker that was behind catches up to ``X`` as before (the serving one still to
``recommendations``); from ``X`` on each publishes where its route says. Every event therefore gets
its recommendation in ``recommendations`` from exactly one version (exactly-once: committed offsets
are exactly the finished records; at-least-once: a record finished but not committed before the
stop may be answered again, as after any restart), and the other version's in the shadow topic.
``model_version`` in each message says which version answered. A rollback is the same command the
other way round; the version that stood aside kept stepping every event, so its states are current.

The command keeps every version's routes in a compacted topic, ``<output topic>.routes``: a
rollback extends them, and a promote whose roles are named the wrong way round (run twice, say) is
refused. Route records: key ``ROUTE_PREFIX + b"<topic>:<partition>"`` (under the progress prefix, so every
reader that skips progress keys skips these), value JSON ``[[offset, topic], ...]`` in offset order:
a record at offset ``o`` goes to the topic of the last entry with offset <= ``o``, or to the worker's
``--output-topic`` before the first entry.

    routes = decode_routes(blob)
    topic = topic_for(routes, offset, default=config.output_topic)
"""
from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.streams.config import ConfigError, WorkerConfig
from streamrec.streams.security import kafka_python_kwargs
from streamrec.streams.sequencer import PREFIX

ROUTE_PREFIX = PREFIX + b"route\x00"

Route = tuple[tuple[int, str], ...]  # ((offset, topic), ...) in offset order


def route_key(topic: str, partition: int) -> bytes:
    return ROUTE_PREFIX + f"{topic}:{partition}".encode()


@functools.lru_cache(maxsize=256)
def decode_routes(blob: bytes | None) -> Route:
    """A stored route (immutable, so decoded once per distinct value: after a promote the worker reads
    each batch's partitions' routes)."""
    return () if not blob else tuple((int(o), str(t)) for o, t in json.loads(blob))


def encode_routes(routes: Route) -> bytes:
    return json.dumps([[o, t] for o, t in sorted(routes)]).encode()


def topic_for(routes: Route, offset: int, default: str) -> str:
    """Where a recommendation of the record at ``offset`` goes."""
    topic = default
    for start, to in routes:
        if start > offset:
            break
        topic = to
    return topic


def switch_route(old: Route, before: str, offset: int, after: str) -> Route:
    """A version's route after a switch at ``offset`` from ``before`` to ``after``: its earlier switches
    below ``offset`` (a worker that was behind at an earlier switch may still have records of that
    range to answer), then ``after``. Refuses (``ConfigError``) a version that does not publish to
    ``before`` since its last switch: the roles were named the wrong way round."""
    current = old[-1][1] if old else before
    if current != before:
        raise ConfigError(f"publishes to {current!r} since its last switch, not to {before!r}")
    kept = [r for r in old if r[0] < offset] or ([(0, before)] if offset > 0 else [])
    return tuple(kept) + ((offset, after),)


def switch_offsets(committed: Sequence[Mapping[Any, int | None]], partitions: Sequence[Any]) -> dict[Any, int]:
    """Per input partition, the first offset no version has processed: the largest committed offset (a
    group that never committed a partition counts as 0)."""
    return {tp: max((c.get(tp) or 0) for c in committed) for tp in partitions}


@dataclass(frozen=True)
class Side:
    """One version in a promote: its worker's app id (consumer group, table prefix), its bundle's model
    version (the table's name), the topic it publishes to now and the one from the switch on."""

    app_id: str
    model_version: str
    publishes_to: str
    publish_to: str

    @property
    def changelog(self) -> str:
        return f"{self.app_id}-user-state-{self.model_version}-changelog"


@dataclass(frozen=True)
class Switch:
    offsets: dict[Any, int]  # input topic-partition -> switch offset
    sides: tuple[Side, ...]

    def describe(self) -> str:
        moves = "; ".join(f"{s.app_id} ({s.model_version}): {s.publishes_to} -> {s.publish_to}" for s in self.sides)
        at = ", ".join(f"{tp.topic}:{tp.partition}@{o}" for tp, o in sorted(self.offsets.items()))
        return f"switch at {at}: {moves}. Start both workers again with the commands they ran before."


def promote(config: WorkerConfig, sides: Sequence[Side], timeout_s: float = 30.0) -> Switch:
    """Write the route records of a switch (see the module docstring) for ``sides`` (both workers
    stopped), on the input topics and partitions of ``config``. Refuses, with what to do, while a
    group has members or a version has no state changelog (it never ran)."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.structs import TopicPartition

    security = kafka_python_kwargs(config)
    servers = config.brokers.split(",")
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id="streamrec-promote", **security)
    try:
        running = [f"{group} ({g.get('group_state')}, {len(g.get('members') or [])} members)"
                   for group, g in admin.describe_groups([s.app_id for s in sides]).items()
                   if g.get("group_state") not in ("Empty", "Dead", None, "")]
        if running:
            raise ConfigError(f"stop both workers first (SIGTERM: each finishes what it took and commits); still "
                              f"running: {', '.join(running)}. A worker killed with SIGKILL stays a member until its "
                              "session timeout (--session-timeout) passes")
        missing = [s.changelog for s in sides if s.changelog not in admin.list_topics()]
        if missing:
            raise ConfigError(f"no state table for {', '.join(missing)}: check --*-app-id and --*-bundle (each worker "
                              "must have run once)")
        tps = [TopicPartition(t, p) for t in (config.clicks_topic, config.browses_topic)
               for p in range(config.partitions)]
        committed = []
        for s in sides:
            found = admin.list_group_offsets({s.app_id: tps}).get(s.app_id, {})
            committed.append({tp: (None if v is None or v.offset < 0 else v.offset) for tp, v in found.items()})
    finally:
        admin.close()
    offsets = switch_offsets(committed, tps)
    history = routes_topic(config.output_topic)
    known = read_history(config, history, timeout_s)
    new: dict[tuple[str, str, int], Route] = {}
    for s in sides:
        for tp, offset in offsets.items():
            try:
                new[(s.app_id, tp.topic, tp.partition)] = switch_route(
                    known.get((s.app_id, tp.topic, tp.partition), ()), s.publishes_to, offset, s.publish_to)
            except ConfigError as exc:
                raise ConfigError(f"{s.app_id} ({tp.topic}:{tp.partition}) {exc}: name the versions by their roles now "
                                  f"(the serving one publishes to {config.output_topic}); nothing was changed") from None
    _ensure_history_topic(config, history, timeout_s)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", client_id="streamrec-promote", **security)
    try:  # the history first: a promote cut short and run again sees what it wrote
        for (app_id, topic, partition), route in new.items():
            producer.send(history, key=f"{app_id}:{topic}:{partition}".encode(), value=encode_routes(route))
        producer.flush(timeout_s)
        for s in sides:
            for tp in offsets:
                producer.send(s.changelog, key=route_key(tp.topic, tp.partition),
                              value=encode_routes(new[(s.app_id, tp.topic, tp.partition)]), partition=tp.partition)
        producer.flush(timeout_s)
    finally:
        producer.close(timeout_s)
    return Switch(offsets, tuple(sides))


def routes_topic(output_topic: str) -> str:
    """The compacted topic that keeps every version's routes (``<output topic>.routes``): the promote
    command's memory of earlier switches; the workers read theirs from their own state tables."""
    return f"{output_topic}.routes"


def _ensure_history_topic(config: WorkerConfig, name: str, timeout_s: float) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=config.brokers.split(","), client_id="streamrec-promote",
                             **kafka_python_kwargs(config))
    try:
        if name not in admin.list_topics():
            admin.create_topics([NewTopic(name, 1, config.replication, topic_configs={"cleanup.policy": "compact"})],
                                raise_errors=False, wait_for_metadata=True)
    finally:
        admin.close()


def read_history(config: WorkerConfig, name: str, timeout_s: float = 30.0) -> dict[tuple[str, str, int], Route]:
    """Every version's route from the history topic (``routes_topic``): (app id, input topic, partition) ->
    route; empty when there was no switch yet."""
    import time

    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=config.brokers.split(","), enable_auto_commit=False,
                             client_id="streamrec-promote", **kafka_python_kwargs(config))
    try:
        parts = consumer.partitions_for_topic(name)
        if not parts:
            return {}
        tps = [TopicPartition(name, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[tuple[str, str, int], Route] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ConfigError(f"reading {name} took longer than {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    app_id, topic, partition = r.key.decode().split(":")
                    out[(app_id, topic, int(partition))] = decode_routes(r.value)
        return out
    finally:
        consumer.close()



def routed(outputs: list[tuple[int, str, bytes | None, bytes]], records: Sequence[Any], routes: Mapping[Any, Route],
           default: str) -> list[tuple[int, str, bytes | None, bytes]]:
    """A batch plan's outputs (``streams.batch.Plan.outputs``: record index, topic, key, value) with each
    recommendation (topic ``default``) sent where its record's partition route says; dead letters as
    they are. ``routes``: input topic-partition -> its route (empty: no switch)."""
    out = []
    for i, topic, key, value in outputs:
        if topic == default:
            r = records[i]
            route = routes.get(r.tp)
            if route:
                topic = topic_for(route, r.offset, default)
        out.append((i, topic, key, value))
    return out
