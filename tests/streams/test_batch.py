"""The worker's micro-batch path without Kafka: ``streams.batch.plan_batch`` against stepping one event
at a time, bad records and duplicates in the middle of a batch, a failing model step; ``Inbox``;
the key partitioner against aiokafka's."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction
from streamrec.streams import codec
from streamrec.streams.batch import EMITTED, Record, Rules, plan_batch
from streamrec.streams.inbox import Inbox
from streamrec.streams.state import UserState
from streamrec.streams.partitioner import KeyPartitioner
from streamrec.streams.worker import batch_bucket
from tests.factories import small_events

CLICKS, BROWSES = "clicks", "browses"


def rules(bundle: Bundle) -> Rules:
    return Rules(kinds={CLICKS: "click", BROWSES: "browse"}, slots={CLICKS: 0, BROWSES: 1},
                 event_types=frozenset(bundle.manifest.event_types), k=bundle.k, output_topic="recs",
                 dlq_topic="dlq", model_version=bundle.version)


def to_records(events: list[Interaction], partitions: int = 4, ids: bool = True) -> list[Record]:
    """Events as input records: clicks/browses by type, partition by user, offsets per topic-partition."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for n, e in enumerate(events):
        topic = CLICKS if e.event_type == "click" else BROWSES
        partition = sum(e.user_id.encode()) % partitions
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        value = {"user_id": e.user_id, "item_id": e.item_id, "ts": e.ts, **({"event_id": f"e{n}"} if ids else {})}
        out.append(Record(e.user_id.encode(), json.dumps(value).encode(), topic, partition, offset))
    return out


def run(bundle: Bundle, records: list[Record], batch: int) -> tuple[list[tuple], dict[bytes, UserState], list[str]]:
    """Plan ``records`` in batches of ``batch``, the states carried between batches as the worker does."""
    stored: dict[bytes, UserState] = {}
    outputs, outcomes = [], []
    for start in range(0, len(records), batch):
        part = records[start:start + batch]
        plan = plan_batch(bundle, part, {r.key: stored.get(r.key) for r in part if r.key is not None},
                          rules(bundle), now_ms=1)
        outputs += [(start + i, topic, key, value) for i, topic, key, value in plan.outputs]
        outcomes += plan.outcomes
        stored.update({key: state for key, (_, _, state) in plan.states.items()})
    return outputs, stored, outcomes


@pytest.fixture(scope="module")
def events() -> list[Interaction]:
    """Few users with many events each, clicks and browses interleaved: one batch holds several events of
    one user on both topics."""
    evs = small_events(users=12, items=120, seed=5)[:400]
    assert len({e.event_type for e in evs}) == 2
    return evs


def test_a_batch_equals_one_event_at_a_time(bundle: Bundle, events: list[Interaction]) -> None:
    records = to_records(events)
    one, one_states, _ = run(bundle, records, 1)
    many, many_states, outcomes = run(bundle, records, 256)
    assert len(one) == len(many) == len(events) and set(outcomes) == {EMITTED}
    per_user_in_first = max(sum(1 for r in records[:256] if r.key == k) for k in {r.key for r in records[:256]})
    assert per_user_in_first >= 10  # several events of one user in a batch
    assert {r.topic for r in records[:256]} == {CLICKS, BROWSES} and len({r.partition for r in records[:256]}) > 1
    for (i, topic, key, a), (j, _, _, b) in zip(one, many):
        ra, rb = json.loads(a), json.loads(b)
        assert (i, topic) == (j, "recs") and ra["items"] == rb["items"] and ra["source"] == rb["source"]
        np.testing.assert_allclose(ra["scores"], rb["scores"], atol=1e-5, rtol=0)
    assert one_states.keys() == many_states.keys()
    for key, s in one_states.items():
        t = many_states[key]
        np.testing.assert_allclose(s.h, t.h, atol=1e-5, rtol=0)
        assert (s.seen, s.offsets, s.recent_ids, s.count, s.last_ts) == (t.seen, t.offsets, t.recent_ids, t.count,
                                                                          t.last_ts)


def test_bad_records_and_duplicates_mid_batch(bundle: Bundle, events: list[Interaction]) -> None:
    good = to_records(events[:60])
    bad = [Record(b"u-bad", b"{not json", CLICKS, 0, 900), Record(None, b"{}", BROWSES, 1, 901),
           Record(b"x", json.dumps({"user_id": "y", "item_id": "i", "ts": 1_700_000_000_000}).encode(), CLICKS, 2, 902)]
    records = good[:20] + [bad[0]] + good[20:40] + [bad[1], good[5], bad[2]] + good[40:] + [good[41]]
    outputs, _, outcomes = run(bundle, records, 256)
    reasons = [o for o in outcomes if o not in (EMITTED, "duplicate", "redelivered")]
    assert reasons == [codec.INVALID_JSON, codec.MISSING_KEY, codec.KEY_MISMATCH]
    assert outcomes.count("duplicate") == 2 and outcomes.count(EMITTED) == 60  # good[5], good[41] again: same id
    dead = [(i, json.loads(v)["reason"]) for i, topic, _, v in outputs if topic == "dlq"]
    assert dead == [(20, codec.INVALID_JSON), (41, codec.MISSING_KEY), (43, codec.KEY_MISMATCH)]
    # the good records around them got exactly what they get without the bad ones and the repeats
    clean, _, _ = run(bundle, good, 256)
    got = [json.loads(v)["items"] for _, topic, _, v in outputs if topic == "recs"]
    assert got == [json.loads(v)["items"] for *_, v in clean]


def test_a_failing_step_dead_letters_only_its_events(bundle: Bundle, events: list[Interaction],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    records = to_records(events[:80])
    poison = bundle.items.index(events[30].item_id)
    real = bundle.run

    def run_(items, *args, **kw):  # type: ignore[no-untyped-def]
        if (np.asarray(items) == poison).any():
            raise RuntimeError("broken model")
        return real(items, *args, **kw)

    monkeypatch.setattr(bundle, "run", run_)
    outputs, _, outcomes = run(bundle, records, 256)
    failed = [i for i, o in enumerate(outcomes) if o == codec.PROCESSING_ERROR]
    assert failed == [i for i, e in enumerate(events[:80]) if bundle.items.index(e.item_id) == poison]
    assert outcomes.count(EMITTED) == 80 - len(failed)


def test_inbox_takes_what_is_ready_and_never_waits_longer_than_batch_wait() -> None:
    async def main() -> None:
        inbox = Inbox(batch_max=4, batch_wait=0.05, limit=6)
        inbox.put(range(10))
        room = asyncio.ensure_future(inbox.space())
        await asyncio.sleep(0)
        assert not room.done()  # 10 held: over the limit, the fetch loop waits
        assert await inbox.take() == [0, 1, 2, 3]  # full: at once
        await asyncio.wait_for(room, 1)  # 6 held: at the limit
        inbox.put([10])
        assert await inbox.take() == [4, 5, 6, 7]
        t0 = time.monotonic()
        assert await inbox.take() == [8, 9, 10]  # fewer than batch_max: waits batch_wait, then takes them
        assert 0.03 < time.monotonic() - t0 < 1.0
        later = asyncio.ensure_future(inbox.take())
        await asyncio.sleep(0.01)
        inbox.put([11])  # a lone record arriving while the worker waits
        t0 = time.monotonic()
        assert await asyncio.wait_for(later, 1) == [11] and time.monotonic() - t0 < 0.5
        inbox.put([12, 13])
        dropped: list[int] = []
        assert inbox.discard(dropped.append) == 2 and dropped == [12, 13] and len(inbox) == 0
    asyncio.run(main())


def test_key_partitioner_matches_kafkas_default() -> None:
    mine = KeyPartitioner(limit=5)
    for n in (1, 3, 8, 12):
        for i in range(40):
            key = f"user-{i}".encode()
            assert mine(key, n) == DefaultPartitioner()(key, list(range(n)), list(range(n)))


def test_a_record_off_its_keys_murmur2_partition_is_a_dead_letter(bundle: Bundle, events: list[Interaction]) -> None:
    """With the input topics' partition count in the rules, a valid record must sit on its key's murmur2
    partition (what the Java client, kafka-python and aiokafka do); elsewhere (a librdkafka producer's
    CRC32) it becomes a ``wrong_partition`` dead letter, the user gets no second state, the rest goes on."""
    partition_of, n = KeyPartitioner(), 8
    records = [dataclasses.replace(r, partition=partition_of(r.key, n)) for r in to_records(events[:60])]
    off = [5, 17, 40]  # moved to the next partition, as another partitioner would put them
    for i in off:
        records[i] = dataclasses.replace(records[i], partition=(records[i].partition + 1) % n)
    records.append(Record(b"u-bad", b"{not json", CLICKS, 0, 999))  # invalid anyway: its own reason first
    strict = dataclasses.replace(rules(bundle), partitions=n)
    plan = plan_batch(bundle, records, {r.key: None for r in records}, strict, now_ms=1, partition_of=partition_of)
    assert [i for i, o in enumerate(plan.outcomes) if o == codec.WRONG_PARTITION] == off
    assert plan.outcomes[-1] == codec.INVALID_JSON
    assert plan.outcomes.count(EMITTED) == len(records) - len(off) - 1
    dead = {i: codec.decode_dead_letter(v) for i, topic, _, v in plan.outputs if topic == "dlq"}
    for i in off:
        want = partition_of(records[i].key, n)
        assert dead[i]["reason"] == codec.WRONG_PARTITION and dead[i]["value"] == records[i].value
        assert f"belongs on partition {want} of 8" in dead[i]["message"] and "murmur2_random" in dead[i]["message"]
    # the same records, stepped without the moved ones, give the same lists: nothing of theirs reached a state
    kept = [r for i, r in enumerate(records[:-1]) if i not in off]
    alone = plan_batch(bundle, kept, {r.key: None for r in kept}, strict, now_ms=1, partition_of=partition_of)
    assert [v for _, t, _, v in plan.outputs if t == "recs"] == [v for _, t, _, v in alone.outputs if t == "recs"]
    assert {k: s.pack() for k, (_, _, s) in plan.states.items()} == {k: s.pack() for k, (_, _, s) in alone.states.items()}
    # without a partition count (the default) the rule is off
    loose = plan_batch(bundle, records[:-1], {r.key: None for r in records}, rules(bundle), now_ms=1)
    assert set(loose.outcomes) == {EMITTED}


def test_batch_buckets_are_powers_of_two() -> None:
    assert [batch_bucket(n) for n in (1, 2, 3, 4, 5, 200, 256, 257)] == ["1", "2", "4", "4", "8", "256", "256", "512"]
