"""One micro-batch of input records -> what to publish and store: a pure function, no Kafka, no Faust.

The worker's hot path is a pipeline over micro-batches (``streams/worker.py`` wires it to Faust)::

    records --decode--> events / rejections --(states read by the worker)--> process (users' runs)
            --encode--> Plan: outputs (recommendations, dead letters) in arrival order,
                              the users' new states, counts

``plan_batch`` is that middle part. It steps the whole batch with ``streams.logic.process``
(every user's run of events in one ONNX call of the bundle's runs graph, each user's events in
order), so its results equal stepping the events one at a time; a batch that fails in the model is
stepped again one event at a time, so that only the events that fail become dead letters
(``processing_error``) and the others go on.

    states = {key: UserState or None for each distinct key of the records}
    plan = plan_batch(bundle, records, states, rules, now_ms=...)
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamrec.export.runtime import Bundle
from streamrec.streams import codec
from streamrec.streams.logic import DUPLICATE, REDELIVERED, Recommendation, process
from streamrec.streams.partitioner import KeyPartitioner, wrong_partition_message
from streamrec.streams.state import UserState

log = logging.getLogger("streamrec.worker")

#: Outcomes of a record that is not dead-lettered (``Plan.outcomes``). ``WARMED``: stepped during a
#: warm-up (``streams/warm.py``), its outputs dropped by ``silence``.
EMITTED, WARMED = "emitted", "warmed"


class RecordLike(Protocol):
    """What the plan needs of one input message (the worker passes Faust's messages themselves)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    """An input message as plain data (tests, tools)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Rules:
    """The serving rules of a worker: topics, list length, the bundle's event types."""

    kinds: Mapping[str, str]  # input topic -> default event type (click / browse)
    slots: Mapping[str, int]  # input topic -> UserState.offsets slot
    event_types: frozenset[str]
    k: int
    output_topic: str
    dlq_topic: str
    model_version: str
    partitions: int = 0  # of the input topics (the table's); 0: no partition rule (streams/partitioner.py)


@dataclass
class Plan:
    """What one batch produces. ``outputs[j] = (record index, topic, key, value)`` in arrival order;
    ``states[key] = (record index of the user's last applied event, its partition, new state)``;
    ``outcomes[i]``: ``EMITTED``, ``logic.DUPLICATE``/``logic.REDELIVERED`` (applied before: nothing
    published) or the record's dead-letter reason."""

    outputs: list[tuple[int, str, bytes | None, bytes]] = field(default_factory=list)
    states: dict[bytes, tuple[int, int, UserState]] = field(default_factory=dict)
    outcomes: list[str] = field(default_factory=list)
    stream_time: int = 0  # the newest event time applied (epoch ms), 0 if none
    event_times: list[int] = field(default_factory=list)  # event_ts of each recommendation, in order (metrics)

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes)


def decode(records: Sequence[RecordLike], rules: Rules,
           partition_of: KeyPartitioner | None = None) -> list[codec.Parsed | codec.Rejected]:
    """Parse and validate every record (``streams.codec.parse_event``); with ``rules.partitions``, a
    valid record must be on its key's murmur2 partition (``streams.partitioner``), else it is
    rejected as ``wrong_partition``."""
    out = [codec.parse_event(r.key, r.value, rules.kinds[r.topic], rules.event_types) for r in records]
    n = rules.partitions
    if n:
        partition_of = partition_of or KeyPartitioner()
        for i, r in enumerate(records):
            if isinstance(out[i], codec.Parsed):
                expected = partition_of(r.key, n)  # type: ignore[arg-type]  # parse_event rejects keyless records
                if expected != r.partition:
                    out[i] = codec.Rejected(codec.WRONG_PARTITION, wrong_partition_message(expected, r.partition, n))
    return out


def plan_batch(bundle: Bundle, records: Sequence[RecordLike], states: Mapping[bytes, UserState | None], rules: Rules,
               *, now_ms: int, decoded: Sequence[codec.Parsed | codec.Rejected] | None = None,
               partition_of: KeyPartitioner | None = None) -> Plan:
    """Decode, step and encode one batch (see the module docstring). ``states`` holds the stored state
    of every user key in ``records`` (None: no state yet); ``partition_of`` caches key partitions."""
    decoded = decode(records, rules, partition_of) if decoded is None else decoded
    good = [i for i, d in enumerate(decoded) if isinstance(d, codec.Parsed)]
    recs, new_states, failed = _step(bundle, records, decoded, good, states, rules)
    plan = Plan(outcomes=[""] * len(records))
    last: dict[bytes, int] = {}  # user key -> record index of its last applied event
    for i, d in enumerate(decoded):
        r = records[i]
        if i in failed:
            d = failed[i]
        if isinstance(d, codec.Rejected):
            plan.outcomes[i] = d.reason
            plan.outputs.append((i, rules.dlq_topic, r.key,
                                 codec.encode_dead_letter(r.key, r.value, r, d, now_ms)))
            continue
        assert r.key is not None  # parse_event rejects keyless records
        rec = recs[i]
        if isinstance(rec, str):  # applied before: a duplicate event id or a redelivered offset
            plan.outcomes[i] = rec
            continue
        last[r.key] = i
        plan.outcomes[i] = EMITTED
        plan.stream_time = max(plan.stream_time, rec.event_ts)
        plan.event_times.append(rec.event_ts)
        plan.outputs.append((i, rules.output_topic, r.key, codec.encode_recommendation(
            rec.user_id, rec.items, rec.scores, rules.model_version, r, rec.event_ts, now_ms)))
    for key, i in last.items():
        plan.states[key] = (i, records[i].partition, new_states[key])
    return plan


def _step(bundle: Bundle, records: Sequence[RecordLike], decoded: Sequence[codec.Parsed | codec.Rejected],
          good: list[int], states: Mapping[bytes, UserState | None], rules: Rules
          ) -> tuple[dict[int, Recommendation | str], dict[bytes, UserState], dict[int, codec.Rejected]]:
    """``process`` over the valid records: each one's recommendation or skip reason (``DUPLICATE``,
    ``REDELIVERED``), each stepped user key's new state, and the records that failed. If the batch
    fails, its records are stepped one at a time (users' states carried), so only those that fail
    become dead letters."""
    if not good:
        return {}, {}, {}
    parsed: list[codec.Parsed] = [decoded[i] for i in good]  # type: ignore[misc]
    position = lambda i: (rules.slots[records[i].topic], records[i].offset)  # noqa: E731
    try:
        given = [states.get(records[i].key) for i in good]  # type: ignore[arg-type]
        out = process(bundle, given, [p.event for p in parsed],
                      event_ids=[p.event_id for p in parsed], positions=[position(i) for i in good], k=rules.k)
        key_of = {p.event.user_id: records[i].key for i, p in zip(good, parsed)}
        return ({i: out.skipped[j] or out.recs[j] for j, i in enumerate(good)},  # type: ignore[misc]
                {key_of[u]: s for u, s in out.states.items()}, {})
    except Exception as exc:  # a bug or a broken model: find the events that fail, keep the others
        log.warning("stepping a batch of %d events failed (%r): stepping them one at a time", len(good), exc)
    current: dict[bytes, UserState | None] = dict(states)
    stepped: dict[bytes, UserState] = {}
    out_recs: dict[int, Recommendation | str] = {}
    failed: dict[int, codec.Rejected] = {}
    for i, p in zip(good, parsed):
        key = records[i].key
        try:
            one = process(bundle, [current.get(key)], [p.event], event_ids=[p.event_id],  # type: ignore[arg-type]
                          positions=[position(i)], k=rules.k)
        except Exception as exc:  # noqa: BLE001 - kept as the event's dead letter
            log.exception("processing %s:%d@%d failed", records[i].topic, records[i].partition, records[i].offset)
            failed[i] = codec.Rejected(codec.PROCESSING_ERROR, repr(exc)[:500])
            continue
        out_recs[i] = one.skipped[0] or one.recs[0]  # type: ignore[assignment]
        if one.skipped[0] is None:
            current[key] = stepped[key] = one.states[p.event.user_id]  # type: ignore[index]
    return out_recs, stepped, failed


def silence(plan: Plan, quiet: set[int]) -> Plan:
    """``plan`` without the outputs of records ``quiet`` (indices into the batch): a warm-up steps them and
    keeps their states but publishes neither their recommendations nor their dead letters. Their
    outcomes become ``WARMED`` (those applied before keep theirs: they had no output anyway)."""
    if not quiet:
        return plan
    emitted = [i for i, o in enumerate(plan.outcomes) if o == EMITTED]  # event_times are in this order
    return Plan(outputs=[o for o in plan.outputs if o[0] not in quiet], states=plan.states,
                outcomes=[WARMED if i in quiet and o not in (DUPLICATE, REDELIVERED) else o
                          for i, o in enumerate(plan.outcomes)],
                stream_time=plan.stream_time,
                event_times=[t for i, t in zip(emitted, plan.event_times) if i not in quiet])
