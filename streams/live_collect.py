"""Reading Kafka for live evaluation: the input, recommendations and dead-letter topics into ``LiveLog``s.

``collect`` reads every topic from the beginning (``isolation.level=read_committed``) while a
replay runs or after it, until every log is done or nothing new came for ``timeout`` seconds; each
record is parsed and matched by ``streams/live_eval.py`` (pure), which also scores the result.
A ``Lane`` is one worker's answers (its recommendations and dead-letter topics): a second lane
reads a shadow worker's beside the serving one on the same inputs (``streams/live_compare.py``).

    log = collect(brokers, topics, LiveLog(expected), timeout=60, also=[Lane(shadow, dlq, LiveLog(expected))])
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamrec.streams.config import KafkaSecurity
from streamrec.streams.live_eval import LiveLog, parse_input, parse_output
from streamrec.streams.replay import Topics, source_of
from streamrec.streams.security import kafka_python_kwargs, unreachable


@dataclass(frozen=True)
class Lane:
    """One worker's answers: its recommendations topic, its dead-letter topic and the log they go
    into. Every lane gets every input record; a topic two lanes share (a common dead-letter topic)
    feeds both."""

    output: str
    dlq: str
    log: LiveLog


def collect(brokers: str, topics: Topics, log: LiveLog, timeout: float = 60.0, progress: bool = True,
            say: Callable[[str], None] = lambda s: None, security: KafkaSecurity = KafkaSecurity(),
            also: Sequence[Lane] = (), upto_now: bool = False) -> LiveLog:
    """Read the input, recommendations and dead-letter topics from the beginning into ``log`` (and
    the lanes of ``also``: other workers on the same input topics, e.g. a shadow) until every log is
    done, or nothing new came for ``timeout`` seconds. Topics that do not exist yet are picked up
    when they appear. ``upto_now``: read each input partition only up to its end when it was first
    assigned, and be done only once all of it is read and answered (live traffic never ends; the
    mode without a data set, ``streams/live_stream.py``). ``security``: how the consumer connects
    (SASL/SSL, as the worker's)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from tqdm import tqdm

    from streamrec.streams.replay import ReplayError, _servers

    try:
        consumer = KafkaConsumer(bootstrap_servers=_servers(brokers), group_id=None, enable_auto_commit=False,
                                 isolation_level="read_committed", allow_auto_create_topics=False,
                                 check_crcs=False,  # pure-Python CRC32C: 2/3 of the reading time
                                 fetch_max_wait_ms=100, bootstrap_timeout_ms=10000,
                                 client_id="streamrec-evaluate-live", **kafka_python_kwargs(security))
    except KafkaError as exc:
        raise ReplayError(unreachable(brokers, security, exc)) from None
    lanes = [Lane(topics.output, topics.dlq, log), *also]
    logs = [lane.log for lane in lanes]
    routes = routes_of(topics, lanes)
    assigned: set[TopicPartition] = set()
    limits: dict[TopicPartition, int] = {}  # upto_now: input partition -> its end offset when assigned

    def hold() -> bool:
        """Pause the input partitions read up to their limits; True once all are."""
        done = [tp for tp, end in limits.items() if consumer.position(tp) >= end]
        if done:
            consumer.pause(*done)
        return len(done) == len(limits)

    def refresh() -> bool:
        """Assign partitions that appeared; True once every topic has some."""
        consumer.topics()  # refreshes the metadata
        found = {TopicPartition(t, p) for t in routes for p in consumer.partitions_for_topic(t) or ()}
        new = found - assigned
        if new:
            keep = {tp: consumer.position(tp) for tp in assigned}
            consumer.assign(sorted(found))
            for tp, pos in keep.items():
                consumer.seek(tp, pos)
            consumer.seek_to_beginning(*new)
            assigned.update(new)
            inputs = [tp for tp in new if routes[tp.topic][0] == "input"]
            if upto_now and inputs:
                limits.update(consumer.end_offsets(inputs))
        return {tp.topic for tp in assigned} == set(routes)

    bar = tqdm(total=len(log.expected), desc="evaluate-live", unit="target", disable=not progress)
    all_found, last_refresh, last_new = refresh(), time.monotonic(), time.monotonic()
    if not all_found:
        say(f"waiting for topics {sorted(set(routes) - {tp.topic for tp in assigned})} to appear")
    try:
        read_all = not upto_now
        while not (read_all and all(lg.done for lg in logs)):
            batch = consumer.poll(timeout_ms=200, max_records=20000)
            for tp, records in batch.items():
                kind, targets = routes[tp.topic]
                end = limits.get(tp) if kind == "input" else None
                for r in records:
                    if end is not None and r.offset >= end:
                        break  # arrived after the read began (upto_now)
                    _add(targets, kind, tp.topic, r)
                last_new = time.monotonic()
            if upto_now:
                read_all = all_found and hold()
            bar.update(min(lg.answered_expected for lg in logs) - bar.n)
            bar.set_postfix(outputs="/".join(str(len(lg.outputs)) for lg in logs),
                            unanswered="/".join(str(len(lg.unanswered)) for lg in logs), refresh=False)
            now = time.monotonic()
            if now - last_new > timeout:
                left = "; ".join(f"{lane.output}: {len(lane.log.missing)} expected events not read, "
                                 f"{len(lane.log.unanswered)} inputs without answer" for lane in lanes)
                say(f"nothing new for {timeout:.0f} s: stopping ({left})")
                break
            if not all_found and now - last_refresh > 1.0:
                all_found, last_refresh = refresh(), now
    finally:
        bar.close()
        consumer.close()
    return log


def routes_of(topics: Topics, lanes: Sequence[Lane]) -> dict[str, tuple[str, list[LiveLog]]]:
    """topic -> (kind: input | output | dlq, the logs its records go to). Refuses a topic with two
    kinds (a lane whose recommendations topic is another's input or dead-letter topic) and two lanes
    on one recommendations topic (their answers could not be told apart)."""
    routes: dict[str, tuple[str, list[LiveLog]]] = {}

    def add(topic: str, kind: str, log: LiveLog) -> None:
        have, logs = routes.setdefault(topic, (kind, []))
        if have != kind or (kind == "output" and logs):
            raise ValueError(f"topic {topic!r} given as {have} and as {kind} topic: each worker needs its own "
                             "recommendations topic, apart from the input and dead-letter topics")
        logs.append(log)

    for lane in lanes:
        add(topics.clicks, "input", lane.log)
        if topics.browses != topics.clicks:
            add(topics.browses, "input", lane.log)
    for lane in lanes:
        add(lane.output, "output", lane.log)
    for lane in lanes:
        add(lane.dlq, "dlq", lane.log)
    return routes


def _add(logs: list[LiveLog], kind: str, topic: str, r) -> None:
    if kind == "input":
        rec = parse_input((topic, r.partition, r.offset), r.timestamp, r.value)
        for log in logs:
            if rec is None:
                log.counts["unreadable_inputs"] += 1
            else:
                log.add_input(rec)
    elif kind == "output":
        out = parse_output(r.partition, r.offset, r.timestamp, r.value)
        for log in logs:
            if out is None:
                log.counts["unreadable_outputs"] += 1
            else:
                log.add_output(out)
    else:
        source = source_of(r.value)
        for log in logs:
            if source is None:
                log.counts["unreadable_dead_letters"] += 1
            else:
                reason = json.loads(r.value).get("reason", "?")
                log.add_dead_letter(source, str(reason))
