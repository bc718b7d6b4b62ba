"""Two model versions on the same events, side by side: the serving worker and a shadow (issue 10).

``streamrec evaluate-live ... --shadow-topic recommendations.shadow --shadow-bundle DIR`` reads both
workers' recommendations in one pass (``live_collect.collect`` with a second ``Lane``: every input record
goes to both logs) and ``build_comparison`` puts them side by side:

events    every input event read (first copies): a recommendation from both versions, from one only,
          from neither (dead-lettered, or not answered yet)
targets   the TEMPORAL-stream test targets a version answered with a list published before them
          (``LiveLog.answered_with_list``); the side-by-side metrics are over the targets *both*
          answered, so the two columns rank the same events against the same items
metrics   HR/NDCG/MRR @10 (and @20 when both bundles' k >= 20) of each version on those targets; the
          difference (second - first) with a 95% paired bootstrap interval (resampling targets); the
          targets only one of the two had in its top 10
latency   p50/p95/p99 over the events both answered (input record timestamp -> recommendation record
          timestamp, ms), and the CDF
versions  the ``model_version`` values each topic carried (another value: a stale or wrong worker)

Each version's own report (``live_eval.build_report`` over all of its targets: the figures that equal
``streamrec evaluate --bundle`` when the run is complete) comes along under ``reports``. Pure: no Kafka.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.model.metrics import summarize
from streamrec.model.splits import Split
from streamrec.model.vocab import Vocab
from streamrec.streams.live_eval import (
    LiveLog,
    build_report,
    hit_rate_over_time,
    latency_stats,
    live_ranks,
)
from streamrec.streams.replay import Coords

BOOTSTRAP = 2000  # resamples of the paired interval
DIFF_METRICS = ("HR", "NDCG", "MRR")


@dataclass(frozen=True)
class Side:
    """One version: a name for the table (``serving``, ``shadow``), the topic its worker publishes
    to, what was read from it, and its bundle's item vocabulary, k and model version."""

    name: str
    topic: str
    log: LiveLog
    items: Vocab
    k: int
    version: str


def gains(ranks: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Per target: the value whose mean is ``metric@k`` (``model.metrics.summarize``'s formulas)."""
    r = np.asarray(ranks, dtype=np.int64)
    hit = r <= k
    rf = r.astype(np.float64)
    if metric == "HR":
        return hit.astype(np.float64)
    if metric == "NDCG":
        return np.where(hit, 1.0 / np.log2(rf + 1), 0.0)
    if metric == "MRR":
        return np.where(hit, 1.0 / rf, 0.0)
    raise ValueError(f"unknown metric {metric!r}")


def paired_difference(first: np.ndarray, second: np.ndarray, ks: Sequence[int], resamples: int = BOOTSTRAP,
                      seed: int = 0) -> dict[str, dict]:
    """For each metric@k: mean(second) - mean(first) over the same targets, and a 95% percentile
    bootstrap interval of it (targets resampled with replacement, the pair kept together)."""
    n = len(first)
    out: dict[str, dict] = {}
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    rows = max(1, 4_000_000 // n)  # resamples per chunk: bounded memory on large target sets
    idx = [rng.integers(0, n, size=(min(rows, resamples - a), n)) for a in range(0, resamples, rows)]
    for k in ks:
        for metric in DIFF_METRICS:
            d = gains(second, metric, k) - gains(first, metric, k)
            means = np.concatenate([d[i].mean(axis=1) for i in idx])
            lo, hi = np.percentile(means, [2.5, 97.5])
            out[f"{metric}@{k}"] = {"value": float(d.mean()), "ci95": [float(lo), float(hi)]}
    return out


def event_overlap(a: Side, b: Side) -> tuple[dict[str, int], list[Coords]]:
    """Counts of the input events each version answered with a recommendation, and the coordinates
    of those both answered."""
    inputs = a.log.first_copies()
    both = [c for c in inputs if c in a.log.outputs and c in b.log.outputs]
    only_a = sum(1 for c in inputs if c in a.log.outputs and c not in b.log.outputs)
    only_b = sum(1 for c in inputs if c in b.log.outputs and c not in a.log.outputs)
    counts = {"inputs": len(inputs), "both": len(both), f"only_{a.name}": only_a, f"only_{b.name}": only_b,
              "neither": len(inputs) - len(both) - only_a - only_b,
              f"dead_letters_{a.name}": sum(1 for c in inputs if c in a.log.rejected),
              f"dead_letters_{b.name}": sum(1 for c in inputs if c in b.log.rejected)}
    return counts, both


def build_comparison(a: Side, b: Side, sp: Split, resamples: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Both versions side by side on the events and targets both answered (see the module docstring)."""
    if a.name == b.name:
        raise ValueError(f"two sides named {a.name!r}")
    ks = tuple(x for x in (10, 20) if x <= min(a.k, b.k))
    ranks, answered = {}, {}
    for s in (a, b):
        ranks[s.name], _ = live_ranks(s.log, sp, s.items)
        answered[s.name] = np.fromiter((s.log.answered_with_list(u, p) for u, p in sp.test), dtype=bool,
                                       count=len(sp.test))
    common = answered[a.name] & answered[b.name]
    ra, rb = ranks[a.name][common], ranks[b.name][common]
    target_ts = np.array([sp.sequences[u][p].ts for u, p in sp.test], dtype=np.int64)[common]
    events, both = event_overlap(a, b)
    latency, cdf = {}, {}
    for s in (a, b):
        lat = [s.log.outputs[c].timestamp - s.log.inputs[c].timestamp for c in both]
        latency[s.name] = latency_stats(lat)
        cdf[s.name] = np.percentile(lat, np.arange(101)).tolist() if lat else []
    reports = {s.name: build_report(s.log, sp, s.items, s.k, s.version) for s in (a, b)}
    top = min(ks) if ks else min(a.k, b.k)
    return {
        "sides": [a.name, b.name],
        "topics": {a.name: a.topic, b.name: b.topic},
        "model_version": {a.name: a.version, b.name: b.version},
        "model_versions_seen": {s.name: dict(s.log.model_versions) for s in (a, b)},
        "events": events,
        "targets": {"total": len(sp.test), "both": int(common.sum()),
                    f"only_{a.name}": int((answered[a.name] & ~answered[b.name]).sum()),
                    f"only_{b.name}": int((answered[b.name] & ~answered[a.name]).sum()),
                    "neither": int((~answered[a.name] & ~answered[b.name]).sum())},
        "metrics": {a.name: summarize(ra, None, ks), b.name: summarize(rb, None, ks)},
        "difference": paired_difference(ra, rb, ks, resamples, seed),
        "difference_of": f"{b.name} - {a.name}",
        f"hits_at_{top}_only": {a.name: int(((ra <= top) & (rb > top)).sum()),
                                b.name: int(((rb <= top) & (ra > top)).sum())},
        "latency_ms": latency,
        "latency_cdf_ms": cdf,
        "hit_rate_over_time": {a.name: hit_rate_over_time(ra, target_ts), b.name: hit_rate_over_time(rb, target_ts)},
        "complete": all(r["complete"] for r in reports.values()),
        "reports": reports,
    }

