"""The warm-up's pure parts (``streams/warm.py``, ``streams.batch.silence``, ``config.parse_since``); the
real-broker test is tests/streams/test_warm_kafka.py."""
from __future__ import annotations

from collections import namedtuple

import pytest

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction
from streamrec.streams.batch import EMITTED, WARMED, plan_batch, silence
from streamrec.streams.config import ConfigError, WorkerConfig, parse_since
from streamrec.streams.warm import plan_partitions
from tests.streams.test_batch import rules, to_records

TP = namedtuple("TP", "topic partition")
NOW = 1_800_000_000_000


def test_since_reads_durations_iso_times_and_epoch_ms() -> None:
    assert parse_since("7d", NOW) == NOW - 7 * 86_400_000
    assert parse_since("90m", NOW) == NOW - 5_400_000
    assert parse_since("2026-12-01T00:00:00Z", NOW) == parse_since("2026-12-01T00:00:00", NOW) == 1_796_083_200_000
    assert parse_since("2026-12-01T01:00:00+01:00", NOW) == 1_796_083_200_000
    assert parse_since("1796083200000", NOW) == 1_796_083_200_000
    assert parse_since("earliest", NOW) == 0
    with pytest.raises(ConfigError, match="--warm-from.*neither a duration"):
        parse_since("last tuesday", NOW)
    with pytest.raises(ConfigError, match="--warm-from"):
        WorkerConfig.from_env({}, bundle="b", warm_from="soon")
    assert WorkerConfig.from_env({"STREAMREC_WARM_FROM": "7d"}, bundle="b").warm_from == "7d"


def test_the_plan_starts_at_the_time_and_ends_at_the_end_offsets() -> None:
    a, b, c, d = TP("clicks", 0), TP("clicks", 1), TP("browses", 0), TP("browses", 1)
    plan = plan_partitions(NOW, beginning={a: 0, b: 500, c: 0, d: 40}, end={a: 100, b: 900, c: 70, d: 40},
                           at_time={a: 30, b: 500, c: None, d: None}, earliest_ts={b: NOW + 60_000})
    by = {(p.topic, p.partition): p for p in plan.partitions}
    assert [(p.start, p.end) for p in (by["clicks", 0], by["clicks", 1], by["browses", 0], by["browses", 1])] == \
        [(30, 100), (500, 900), (70, 70), (40, 40)]  # None: every record is older than the time, nothing to warm
    assert plan.events == 70 + 400
    # only clicks:1 dropped records (earliest 500 > 0) and keeps nothing from before the time
    assert [(p.topic, p.partition) for p in plan.partitions if p.truncated] == [("clicks", 1)]
    text = plan.describe()
    assert "470 events in 4 input partitions" in text and "1 of 4 partitions dropped records" in text
    assert "the oldest record kept is from 2027-01-15T08:01:00Z" in text
    assert "keep less history" not in plan_partitions(NOW, {a: 0}, {a: 10}, {a: 3}).describe()


def test_silence_drops_a_warm_up_records_outputs_and_keeps_their_states(bundle: Bundle) -> None:
    events = [Interaction(f"u{n % 3}", f"i{n % 7}", "click", 1_700_000_000_000 + n) for n in range(9)]
    records = to_records(events)
    bad = records[4].__class__(records[4].key, b"{not json", records[4].topic, records[4].partition,
                               records[4].offset)
    records[4] = bad
    plan = plan_batch(bundle, records, {}, rules(bundle), now_ms=NOW)
    quiet = {0, 1, 2, 3, 4}
    out = silence(plan, quiet)
    assert [o[0] for o in out.outputs] == [5, 6, 7, 8]  # neither recommendations nor the dead letter of 0..4
    assert out.outcomes[:5] == [WARMED] * 5 and out.outcomes[5:] == plan.outcomes[5:] == [EMITTED] * 4
    assert out.states == plan.states and out.stream_time == plan.stream_time
    emitted = [i for i, o in enumerate(plan.outcomes) if o == EMITTED]
    assert out.event_times == [t for i, t in zip(emitted, plan.event_times) if i not in quiet]
    assert silence(plan, set()) is plan
