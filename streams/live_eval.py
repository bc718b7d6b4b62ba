"""Live evaluation: score what the worker published, exactly as offline evaluation scores the bundle.

``streamrec evaluate-live --data D --format F --bundle B --brokers HOST:PORT`` (``cli/live_cmd.py``)
reads the input topics, the recommendations topic and the dead-letter topic from the beginning
(``isolation.level=read_committed``) while a replay runs or after it, until every expected event
has its answer or nothing new arrived for ``timeout`` seconds.

Matching, never guessing: an output record names its input by ``source`` (topic, partition,
offset); the input record at those coordinates carries the ``event_id`` that ``streams/replay.py``
gave it (``<user>:<index in the user's time-sorted history>``), so each output is tied to one event
of the data set. A second output with the same ``source`` is an at-least-once redelivery: counted
in ``duplicates``, scored once (the first copy).

Scoring (TEMPORAL-stream, ``model.splits``): for every test target (user, position p), the list the
user was shown is the recommendation the worker published for that user just before the one it
published for the target event (the user's outputs share a partition, so their order is the
worker's processing order). When the worker processed the user's events in timestamp order, that
is the recommendation of event p-1, and the live figures equal ``streamrec evaluate --bundle``
(serving rule); otherwise the target counts in ``order_violations``. rank = position of the
target's item in the list under the strict-above tie rule (``model.metrics.rank_in_list``); an
item out of the bundle's vocabulary, or absent from the list, is a miss. Everything here is pure
(parsing, matching, scoring, statistics): ``streams/live_collect.py`` reads Kafka into a ``LiveLog``.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from streamrec.model.metrics import MISS, rank_in_list, summarize
from streamrec.model.splits import Split
from streamrec.model.vocab import Vocab
from streamrec.streams.replay import Coords, event_id, parse_event_id

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class InputRecord:
    coords: Coords
    timestamp: int  # Kafka record timestamp: when it was produced (ms)
    user_id: str
    item_id: str
    event_type: str | None
    ts: int
    event_id: str | None


@dataclass(frozen=True, slots=True)
class OutputRecord:
    partition: int
    offset: int
    timestamp: int  # Kafka record timestamp: when the worker published it (ms)
    user_id: str
    items: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: str
    source: Coords


def parse_input(coords: Coords, timestamp: int, value: bytes | None) -> InputRecord | None:
    """An input record, or None when it is not an event (the worker dead-letters those)."""
    try:
        d = json.loads(value)  # type: ignore[arg-type]
        eid = d.get("event_id")
        return InputRecord(coords, int(timestamp), str(d["user_id"]), str(d["item_id"]), d.get("event_type"),
                           int(d["ts"]), None if eid is None else str(eid))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def parse_output(partition: int, offset: int, timestamp: int, value: bytes | None) -> OutputRecord | None:
    try:
        d = json.loads(value)  # type: ignore[arg-type]
        s = d["source"]
        return OutputRecord(partition, offset, int(timestamp), str(d["user_id"]), tuple(map(str, d["items"])),
                            tuple(map(float, d["scores"])), str(d.get("model_version")),
                            (str(s["topic"]), int(s["partition"]), int(s["offset"])))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


class LiveLog:
    """Every record read so far, indexed for matching; ``done`` once every expected event id and
    every input read has its answer (an output or a dead letter). ``awaited(rec)``: which inputs
    must be answered for that (default all; ``--since`` waits for the events at/after its time
    only: a shadow warmed up with ``--warm-from`` never answers the ones before its start)."""

    def __init__(self, expected: Iterable[str] = (), awaited: Callable[[InputRecord], bool] | None = None):
        self.awaited = awaited
        self.inputs: dict[Coords, InputRecord] = {}
        self.by_id: dict[str, Coords] = {}  # event id -> coordinates of its first copy
        self.outputs: dict[Coords, OutputRecord] = {}  # source -> first output
        self.user_outputs: dict[str, list[OutputRecord]] = {}  # in the worker's order
        self._place: dict[Coords, int] = {}  # source -> index in user_outputs[user]
        self.rejected: dict[Coords, str] = {}  # source -> reason
        self.counts: Counter[str] = Counter()  # duplicates, duplicate_inputs, unreadable_*
        self.model_versions: Counter[str] = Counter()
        self.expected = set(expected)
        self.missing = set(self.expected)  # expected ids not read yet
        self.unanswered: set[Coords] = set()  # first copies read, without answer yet
        self.answered_expected = 0

    @property
    def done(self) -> bool:
        return not self.missing and not self.unanswered

    def _answered(self, coords: Coords) -> bool:
        return coords in self.outputs or coords in self.rejected

    def _on_answer(self, coords: Coords) -> None:
        if coords in self.unanswered:
            self.unanswered.discard(coords)
            rec = self.inputs[coords]
            if rec.event_id in self.expected:
                self.answered_expected += 1

    def add_input(self, rec: InputRecord) -> None:
        self.inputs[rec.coords] = rec
        if rec.event_id is not None:
            if rec.event_id in self.by_id:
                self.counts["duplicate_inputs"] += 1  # the same event sent twice: not expected to be answered
                return
            self.by_id[rec.event_id] = rec.coords
            self.missing.discard(rec.event_id)
        if self.awaited is None or self.awaited(rec):
            self.unanswered.add(rec.coords)
        if self._answered(rec.coords):
            self._on_answer(rec.coords)

    def add_output(self, rec: OutputRecord) -> None:
        if rec.source in self.outputs:
            self.counts["duplicates"] += 1
            return
        self.outputs[rec.source] = rec
        self.model_versions[rec.model_version] += 1
        mine = self.user_outputs.setdefault(rec.user_id, [])
        self._place[rec.source] = len(mine)
        mine.append(rec)
        self._on_answer(rec.source)

    def add_dead_letter(self, source: Coords, reason: str) -> None:
        self.rejected.setdefault(source, reason)
        self._on_answer(source)

    def output_of(self, eid: str) -> OutputRecord | None:
        coords = self.by_id.get(eid)
        return None if coords is None else self.outputs.get(coords)

    def first_copies(self) -> list[Coords]:
        """Coordinates of the inputs read, without the repeats of an event id (sent twice)."""
        return [c for c, r in self.inputs.items() if r.event_id is None or self.by_id.get(r.event_id) == c]

    def answered_with_list(self, user: str, position: int) -> bool:
        """Whether the worker answered the user's event at ``position`` and had published a list for
        the user before it (the list that event is scored against, see ``shown_before``)."""
        own = self.output_of(event_id(user, position))
        return own is not None and self._place[own.source] > 0

    def shown_before(self, user: str, position: int, stats: Counter[str]) -> OutputRecord | None:
        """The list the user had when their event at ``position`` was processed (see the module docstring)."""
        expected = self.output_of(event_id(user, position - 1))
        own = self.output_of(event_id(user, position))
        if own is None:
            stats["targets_unanswered"] += 1
            return expected
        i = self._place[own.source]
        shown = self.user_outputs[user][i - 1] if i > 0 else None
        if shown is not expected:
            stats["order_violations"] += 1
        return shown


def live_ranks(log: LiveLog, sp: Split, items: Vocab) -> tuple[np.ndarray, Counter[str]]:
    """The rank of every test target of ``sp`` in the list shown before it (MISS if none)."""
    stats: Counter[str] = Counter()
    ranks = np.full(len(sp.test), MISS, dtype=np.int64)
    for n, (user, p) in enumerate(sp.test):
        shown = log.shown_before(user, p, stats)
        if shown is None:
            stats["targets_without_list"] += 1
            continue
        target = items.index(sp.sequences[user][p].item_id)
        ranks[n] = rank_in_list(items.indices(shown.items), np.asarray(shown.scores, dtype=np.float64), target, set())
    return ranks, stats


def content_mismatches(log: LiveLog, sp: Split) -> int:
    """Inputs whose event id names an event of the data set with other content (another data set
    replayed into these topics?) or no event at all."""
    bad = 0
    for eid, coords in log.by_id.items():
        rec, parsed = log.inputs[coords], parse_event_id(eid)
        seq = sp.sequences.get(parsed[0]) if parsed else None
        if seq is None or parsed[1] >= len(seq):  # type: ignore[index]
            bad += 1
            continue
        e = seq[parsed[1]]  # type: ignore[index]
        if (e.user_id, e.item_id, e.ts) != (rec.user_id, rec.item_id, rec.ts):
            bad += 1
    return bad


def latency_stats(latencies_ms: Iterable[float]) -> dict[str, float | int]:
    """p50/p95/p99 (numpy linear interpolation), max and mean of latencies in ms."""
    v = np.asarray(list(latencies_ms), dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    out: dict[str, float | int] = {"n": int(v.size)}
    for q, x in zip(PERCENTILES, np.percentile(v, PERCENTILES)):
        out[f"p{q}"] = float(x)
    out["max"] = float(v.max())
    out["mean"] = float(v.mean())
    return out


def latencies(log: LiveLog) -> list[int]:
    """Per scored output: its record timestamp minus its input's record timestamp (ms)."""
    return [o.timestamp - log.inputs[o.source].timestamp for o in log.outputs.values() if o.source in log.inputs]


def latency_by_second(log: LiveLog) -> list[dict[str, float | int]]:
    """Latency per second of input time (from the first answered input): events, p50, p99 and max (ms).
    Shows whether a run's tail comes from its first seconds, from periodic stalls or from the whole run."""
    pairs = [(log.inputs[o.source].timestamp, o.timestamp) for o in log.outputs.values() if o.source in log.inputs]
    if not pairs:
        return []
    t = np.array(pairs, dtype=np.int64)
    second = (t[:, 0] - t[:, 0].min()) // 1000
    lat = (t[:, 1] - t[:, 0]).astype(np.float64)
    out = []
    for s in np.unique(second):
        v = lat[second == s]
        p50, p99 = np.percentile(v, (50, 99))
        out.append({"second": int(s), "n": int(v.size), "p50": float(p50), "p99": float(p99), "max": float(v.max())})
    return out


def throughput(log: LiveLog) -> dict[str, object]:
    """Events/s from the first input that got an answer to the last output, and per second."""
    answered = [log.inputs[s].timestamp for s in log.outputs if s in log.inputs]
    if not answered:
        return {"events_per_s": 0.0, "seconds": 0.0, "outputs": 0}
    first = min(answered)
    ts = np.array([o.timestamp for o in log.outputs.values()], dtype=np.int64)
    last = int(ts.max())
    seconds = max(last - first, 1) / 1000.0
    per_second = np.bincount(np.maximum(ts - first, 0) // 1000).tolist()
    return {"events_per_s": len(ts) / seconds, "seconds": seconds, "outputs": int(len(ts)),
            "first_input_ts": first, "last_output_ts": last, "per_second": per_second}


def hit_rate_over_time(ranks: np.ndarray, target_ts: np.ndarray, k: int = 10, bins: int = 20) -> list[dict]:
    """HR@k of the targets in equal slices of event time (data time, not wall-clock)."""
    if len(ranks) == 0:
        return []
    lo, hi = int(target_ts.min()), int(target_ts.max()) + 1
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, target_ts, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            out.append({"from_ts": int(edges[b]), "to_ts": int(edges[b + 1]), "targets": int(sel.sum()),
                        f"HR@{k}": float((ranks[sel] <= k).mean())})
    return out


def build_report(log: LiveLog, sp: Split, items: Vocab, k: int, model_version: str | None = None) -> dict:
    """Metrics and counts of a live run (see the module docstring); ``k`` = the bundle's list size."""
    ks = tuple(x for x in (10, 20) if x <= k)
    ranks, stats = live_ranks(log, sp, items)
    lat = latencies(log)
    target_ts = np.array([sp.sequences[u][p].ts for u, p in sp.test], dtype=np.int64)
    other = {v: n for v, n in log.model_versions.items() if model_version is not None and v != model_version}
    counts = {"targets": len(sp.test), "inputs": len(log.inputs), "recommendations": len(log.outputs),
              "duplicates": log.counts["duplicates"], "duplicate_inputs": log.counts["duplicate_inputs"],
              "rejected": len(log.rejected),
              "unreadable": sum(v for c, v in log.counts.items() if c.startswith("unreadable")),
              "expected_not_read": len(log.missing), "inputs_unanswered": len(log.unanswered),
              "content_mismatches": content_mismatches(log, sp), "outputs_of_other_models": sum(other.values()),
              **{key: stats[key] for key in ("order_violations", "targets_unanswered", "targets_without_list")}}
    return {"metrics": summarize(ranks, None, ks), "n_targets": len(sp.test), "complete": log.done,
            "counts": counts, "latency_ms": latency_stats(lat), "throughput": throughput(log),
            "latency_cdf_ms": np.percentile(lat, np.arange(101)).tolist() if lat else [],
            "latency_by_second": latency_by_second(log),
            "hit_rate_over_time": hit_rate_over_time(ranks, target_ts), "model_versions": dict(log.model_versions),
            "cutoff_ts": sp.cutoff_ts}
