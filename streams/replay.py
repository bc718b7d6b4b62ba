"""Replay a data set into the worker's input topics, in timestamp order (kafka-python, no Faust).

``streamrec replay --data D --format F --brokers HOST:PORT`` (``cli/replay_cmd.py``) is the usual
way in. From Python::

    messages = plan(load(path, fmt), Topics(), from_ts=None)   # pure: what goes where, in order
    summary = replay(messages, ReplayConfig(brokers="127.0.0.1:9092"))
    ReplayConfig(brokers=..., security=KafkaSecurity.from_env())  # SASL/SSL: the worker's STREAMREC_* settings

What a message is: key = user id (UTF-8), value = compact JSON ``{"user_id", "item_id", "ts",
"event_type", "event_id"}``. Clicks go to the clicks topic, browses to the browses topic, every
other type (cart, fav, buy ...) to the clicks topic with its explicit ``event_type``. The event id
is ``<user>:<index>``, the event's position in the user's time-sorted history (``by_user`` order),
so a replay of the same data always names an event the same way (also when it starts at
``from_ts``) and the live evaluator (``streams/live_eval.py``) finds each target by its id.

Order. Messages leave in timestamp order (stable: ties keep file order, exactly the per-user
order of ``model.events.by_user``). Within one topic a user's events share a partition, so Kafka
keeps their order; across the two topics it does not. ``order="strict"`` restores it: when a
user's next event goes to the other topic, it is held until the worker has processed the user's
previous event, i.e. until an output record (or dead letter) whose ``source`` is at or past that
event's offset in its partition shows up (a partition is processed in order, so one watermark per
input partition says it all). Only that user's later events wait; everyone else keeps flowing.
A hold longer than ``hold_timeout`` is released anyway and counted (``order_timeouts``).
``order="none"`` sends everything at once: the worker may then apply a user's click before the
browse that preceded it.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO

from streamrec.streams.config import KafkaSecurity
from streamrec.streams.replay_plan import (  # noqa: F401 - re-exported: the replay's public names
    ORDERS,
    Coords,
    Handle,
    Message,
    OrderGate,
    Topics,
    encode_event,
    event_id,
    parse_event_id,
    plan,
    timestamp_order,
)
from streamrec.streams.security import kafka_python_kwargs, unreachable


class ReplayError(RuntimeError):
    """A replay that cannot run (no broker, no worker in strict mode, bad topics); says what to do."""


# ---- Kafka ----------------------------------------------------------------------------------
def linger_of(config: ReplayConfig) -> int:
    """The producer's linger. Below 1,000 events/s offered every event goes out at once (a linger would only
    add to its latency: the batch never fills); at max speed or faster rates 5 ms lets batches fill
    (kafka-python cannot send many more single-record requests a second: its queue would grow instead)."""
    if config.linger_ms is not None:
        return config.linger_ms
    return 0 if config.rate is not None and config.rate < 1000 else 5


@dataclass(frozen=True)
class ReplayConfig:
    brokers: str = "127.0.0.1:9092"
    topics: Topics = field(default_factory=Topics)
    order: str = "strict"
    rate: float | None = None  # events/s offered; None: as fast as possible
    hold_timeout: float = 60.0  # strict: longest wait for the worker, per held event
    partitions: int = 8  # of input topics this replay has to create
    replication: int = 1
    linger_ms: int | None = None  # producer linger; None: see linger_of
    wait_output: float = 60.0  # strict: how long to wait for the output topic to exist
    security: KafkaSecurity = field(default_factory=KafkaSecurity)  # of every client: admin, producer, watcher

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {self.order!r}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, not {self.rate}")


@dataclass
class ReplaySummary:
    events: int  # planned
    sent: int  # acknowledged by the broker
    failures: int
    seconds: float
    rate: float  # acknowledged events per second
    order: str
    held: int  # strict: events that waited for the worker
    order_timeouts: int  # strict: waits cut short by hold_timeout
    per_topic: dict[str, int]
    errors: list[str]  # the first few send errors

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Sent:
    """A ``Handle`` over kafka-python's send future."""

    __slots__ = ("future",)

    def __init__(self, future):
        self.future = future

    def coords(self) -> Coords | None:
        f = self.future
        if not f.is_done or f.failed():
            return None
        return (f.value.topic, f.value.partition, f.value.offset)

    @property
    def failed(self) -> bool:
        return self.future.is_done and self.future.failed()


def _servers(brokers: str) -> list[str]:
    return [b.strip() for b in brokers.split(",") if b.strip()]


def ensure_topics(brokers: str, topics: Topics, partitions: int, replication: int, strict: bool,
                  wait_output: float, say: Callable[[str], None], security: KafkaSecurity = KafkaSecurity()) -> None:
    """Create missing input topics (``partitions`` each); in strict mode wait for the output topic."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=_servers(brokers), client_id="streamrec-replay-admin",
                                 request_timeout_ms=15000, bootstrap_timeout_ms=10000, **kafka_python_kwargs(security))
    except KafkaError as exc:
        raise ReplayError(unreachable(brokers, security, exc)) from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics.inputs if t not in existing]
        if missing:
            say(f"creating input topics {missing} with {partitions} partitions (the worker's --partitions must match)")
            try:
                admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics(list(topics.inputs))
        found = {t.get("name", t.get("topic")): len(t["partitions"]) for t in described}
        if len(set(found.values())) > 1:
            say(f"warning: the input topics have different partition counts {found}; the worker will refuse them")
        if strict and topics.output not in existing:
            say(f"--order strict: waiting up to {wait_output:.0f} s for the worker's topic {topics.output!r}")
        if strict:
            deadline = time.monotonic() + wait_output
            while topics.output not in set(admin.list_topics()):
                if time.monotonic() > deadline:
                    raise ReplayError(
                        f"--order strict waits for the worker's recommendations, but topic {topics.output!r} "
                        f"does not exist after {wait_output:.0f} s: start the worker first (streamrec worker "
                        f"--bundle B --brokers {brokers}), or pass --order none")
                time.sleep(0.5)
    finally:
        admin.close()


class OutputWatcher(threading.Thread):
    """Reads the output and dead-letter topics from their current ends and reports the ``source``
    coordinates of each record (``queue`` of (topic, partition, offset))."""

    def __init__(self, brokers: str, topics: Topics, security: KafkaSecurity = KafkaSecurity()):
        super().__init__(name="streamrec-replay-watch", daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.queue: queue.SimpleQueue[Coords] = queue.SimpleQueue()
        self._halt = threading.Event()
        self.consumer = KafkaConsumer(bootstrap_servers=_servers(brokers), group_id=None, enable_auto_commit=False,
                                      isolation_level="read_committed", allow_auto_create_topics=False,
                                      check_crcs=False, fetch_max_wait_ms=20, bootstrap_timeout_ms=10000,
                                      client_id="streamrec-replay-watch", **kafka_python_kwargs(security))
        tps = [TopicPartition(t, p) for t in (topics.output, topics.dlq)
               for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        self.consumer.assign(tps)
        self.consumer.seek_to_end()
        for tp in tps:  # resolve the end offsets now: nothing sent later may be missed
            self.consumer.position(tp)
        self.errors = 0

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                for records in self.consumer.poll(timeout_ms=50, max_records=5000).values():
                    for r in records:
                        c = source_of(r.value)
                        if c is None:
                            self.errors += 1
                        else:
                            self.queue.put(c)
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def source_of(value: bytes | None) -> Coords | None:
    """The ``source`` coordinates of an output record or a dead letter (None if absent)."""
    try:
        s = json.loads(value)["source"]  # type: ignore[arg-type]
        return (str(s["topic"]), int(s["partition"]), int(s["offset"]))
    except (TypeError, ValueError, KeyError):
        return None


def replay(messages: Sequence[Message], config: ReplayConfig, progress: bool = True,
           log: IO[str] | None = None, say: Callable[[str], None] = lambda s: None) -> ReplaySummary:
    """Send ``messages`` (from ``plan``: ``seq`` unique) and wait for every acknowledgement; ``log`` gets one JSON
    line per sent event: event_id, user_id, topic, partition, offset, timestamp (produce time, ms)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from tqdm import tqdm

    strict = config.order == "strict"
    ensure_topics(config.brokers, config.topics, config.partitions, config.replication, strict,
                  config.wait_output, say, config.security)
    try:
        producer = KafkaProducer(bootstrap_servers=_servers(config.brokers), acks="all", linger_ms=linger_of(config),
                                 enable_idempotence=True, allow_auto_create_topics=False,
                                 client_id="streamrec-replay", **kafka_python_kwargs(config.security))
    except KafkaError as exc:
        raise ReplayError(unreachable(config.brokers, config.security, exc)) from None
    try:
        watcher = OutputWatcher(config.brokers, config.topics, config.security) if strict else None
    except KafkaError as exc:
        producer.close(timeout=1)
        raise ReplayError(unreachable(config.brokers, config.security, exc)) from None
    gate = OrderGate(strict, config.hold_timeout)
    handles: dict[int, _Sent] = {}  # seq -> send future
    bar = tqdm(total=len(messages), desc="replay", unit="ev", disable=not progress, smoothing=0.1)
    start = time.monotonic()

    def send(msg: Message) -> None:
        h = _Sent(producer.send(msg.topic, key=msg.key, value=msg.value))
        handles[msg.seq] = h
        gate.sent(msg, h)
        bar.update(1)

    last_progress = [start]  # when the worker last showed progress

    def pump() -> None:
        if watcher is not None:
            while True:
                try:
                    gate.processed(*watcher.queue.get_nowait())
                    last_progress[0] = time.monotonic()
                except queue.Empty:
                    break
            if gate.waiting and time.monotonic() - last_progress[0] > config.hold_timeout:
                raise ReplayError(f"--order strict: {gate.waiting} events wait for the worker, but no recommendation "
                                  f"or dead letter arrived on {config.topics.output!r}/{config.topics.dlq!r} for "
                                  f"{config.hold_timeout:.0f} s: is the worker running on these topics? "
                                  "(or replay with --order none)")
        while batch := gate.releasable():
            for msg in batch:
                send(msg)

    if watcher is not None:
        watcher.start()
    try:
        last_pump = start
        for n, msg in enumerate(messages):
            if config.rate is not None:
                due = start + n / config.rate
                while (now := time.monotonic()) < due:
                    pump()
                    time.sleep(min(due - now, 0.005))
            if gate.offer(msg):
                send(msg)
            if strict and (n & 63 == 0 or time.monotonic() - last_pump > 0.005):
                pump()
                last_pump = time.monotonic()
        while gate.waiting:
            pump()
            if gate.waiting:
                bar.set_postfix(waiting=gate.waiting, refresh=False)
                time.sleep(0.002)
        producer.flush()
    except KafkaError as exc:  # e.g. the broker went away and the send buffer is full
        raise ReplayError(f"sending to {config.brokers} failed: {exc}") from None
    finally:
        bar.close()
        if watcher is not None:
            watcher.stop()
        producer.close(timeout=10)
    seconds = time.monotonic() - start
    return _summarize(messages, handles, seconds, config.order, gate, log)


def _summarize(messages: Sequence[Message], handles: dict[int, _Sent], seconds: float, order: str,
               gate: OrderGate, log: IO[str] | None) -> ReplaySummary:
    sent, failures, errors, per_topic = 0, 0, [], Counter()
    for msg in messages:
        h = handles.get(msg.seq)
        if h is None or not h.future.is_done or h.future.failed():
            failures += 1
            if len(errors) < 5:
                errors.append(f"{msg.event_id}: {h.future.exception if h is not None else 'not sent'}")
            continue
        sent += 1
        per_topic[msg.topic] += 1
        if log is not None:
            md = h.future.value
            log.write(json.dumps({"event_id": msg.event_id, "user_id": msg.user_id, "topic": md.topic,
                                  "partition": md.partition, "offset": md.offset, "timestamp": md.timestamp,
                                  "ts": msg.ts}, ensure_ascii=False) + "\n")
    return ReplaySummary(events=len(messages), sent=sent, failures=failures, seconds=seconds,
                         rate=sent / seconds if seconds > 0 else 0.0, order=order, held=gate.held,
                         order_timeouts=gate.timeouts, per_topic=dict(per_topic), errors=errors)
