"""Baselines scored through the same evaluator as the LSTM (numpy, torch-free).

- MostPopular: item counts in the training data.
- RecentPopular: item counts among all events in a trailing window (e.g. the last day) before
  each prediction's time; for the TEMPORAL-stream protocol.
- Markov: first-order transition counts (last item -> next item) from the training data; ties
  between equal counts (most unseen transitions) are broken by training popularity, scaled to
  stay below one count so it never overrides an observed transition.

A scorer is a callable ``rows -> scores [len(rows), n_items]`` over a TargetSet's rows.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamrec.model.encode import Encoded, TargetSet, last_items

Scorer = Callable[[np.ndarray], np.ndarray]


def training_counts(encoded: dict[str, Encoded], train_len: dict[str, int], n_items: int) -> np.ndarray:
    idx = [e.items[: train_len[u]] for u, e in encoded.items()]
    return np.bincount(np.concatenate(idx) if idx else np.zeros(0, np.int64), minlength=n_items).astype(np.float64)


def most_popular(counts: np.ndarray) -> Scorer:
    row = counts.astype(np.float32)
    return lambda rows: np.broadcast_to(row, (len(rows), len(row))).copy()


def markov(encoded: dict[str, Encoded], train_len: dict[str, int], counts: np.ndarray,
           targets: TargetSet) -> Scorer:
    n = len(counts)
    prev = np.concatenate([e.items[: train_len[u]][:-1] for u, e in encoded.items()] or [np.zeros(0, np.int64)])
    nxt = np.concatenate([e.items[: train_len[u]][1:] for u, e in encoded.items()] or [np.zeros(0, np.int64)])
    key = np.unique(prev * n + nxt, return_counts=True)
    pairs, pair_counts = key
    src, dst = pairs // n, pairs % n
    starts = np.searchsorted(src, np.arange(n + 1))  # CSR rows over sorted src
    backoff = (counts / (counts.max() + 1.0)).astype(np.float32)
    last = last_items(encoded, targets)

    def score(rows: np.ndarray) -> np.ndarray:
        out = np.broadcast_to(backoff, (len(rows), n)).copy()
        for r, item in enumerate(last[rows]):
            a, b = starts[item], starts[item + 1]
            out[r, dst[a:b]] += pair_counts[a:b]
        return out

    return score


def recent_popular(encoded: dict[str, Encoded], targets: TargetSet, n_items: int, window_ms: int) -> Scorer:
    """Counts over every event (of any user) with ts in [t - window, t) for a target at time t."""
    ts = np.concatenate([e.ts for e in encoded.values()])
    items = np.concatenate([e.items for e in encoded.values()])
    order = np.argsort(ts, kind="stable")
    ts, items = ts[order], items[order]

    def score(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), n_items), dtype=np.float32)
        for r, t in enumerate(targets.ts[rows]):
            lo, hi = np.searchsorted(ts, t - window_ms, "left"), np.searchsorted(ts, t, "left")
            out[r] = np.bincount(items[lo:hi], minlength=n_items)
        return out

    return score
