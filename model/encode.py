"""Events -> model indices (item, event type, gap bucket), and evaluation target sets.

Torch-free: training, bundle evaluation and the streaming worker encode events the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrec.model.events import Interaction
from streamrec.model.gaps import N_GAP_BUCKETS, gap_buckets
from streamrec.model.vocab import Vocab


@dataclass(frozen=True)
class Encoded:
    """One user's time-ordered events as index arrays (all int64, same length)."""

    items: np.ndarray
    types: np.ndarray
    gaps: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.items)


def encode(seq: list[Interaction], items: Vocab, types: Vocab, n_gap_buckets: int = N_GAP_BUCKETS) -> Encoded:
    ts = np.fromiter((e.ts for e in seq), dtype=np.int64, count=len(seq))
    return Encoded(items=items.indices(e.item_id for e in seq), types=types.indices(e.event_type for e in seq),
                   gaps=gap_buckets(ts, n_gap_buckets), ts=ts)


def encode_all(sequences: dict[str, list[Interaction]], items: Vocab, types: Vocab,
               n_gap_buckets: int = N_GAP_BUCKETS) -> dict[str, Encoded]:
    return {u: encode(seq, items, types, n_gap_buckets) for u, seq in sequences.items()}


@dataclass(frozen=True)
class TargetSet:
    """Evaluation targets: (user, position) pairs with their target item and mask.

    The input of target n is ``encoded[users[n]][:positions[n]]``. Two masking rules:
    - ``history`` (BENCHMARKS.md): ``masks[n]`` = every distinct item of that input; the ranker
      never masks the target itself;
    - ``serving`` (what the worker publishes): ``masks[n]`` = the last m distinct items seen
      (PAD/OOV excluded), the target included: a target in that window can not be
      recommended, so it is a miss (``target_masked[n]``).
    """

    users: list[str]
    positions: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    masks: list[np.ndarray]
    target_masked: np.ndarray | None = None  # serving rule: target in the seen window -> miss

    def __len__(self) -> int:
        return len(self.users)


def seen_window(items: np.ndarray, m: int) -> np.ndarray:
    """The last ``m`` distinct real items (index >= 2) of a history, oldest first: the worker's
    seen window after consuming ``items``."""
    out: list[int] = []
    seen: set[int] = set()
    for v in items[::-1].tolist():
        if v > 1 and v not in seen:
            seen.add(v)
            out.append(v)
            if len(out) == m:
                break
    return np.array(out[::-1], dtype=np.int64)


def last_items(encoded: dict[str, Encoded], targets: TargetSet) -> np.ndarray:
    """The item of the event just before each target (what the step that predicts it consumed)."""
    return np.array([encoded[u].items[p - 1] for u, p in zip(targets.users, targets.positions)], dtype=np.int64)


def build_targets(encoded: dict[str, Encoded], targets: list[tuple[str, int]], window: int | None = None
                  ) -> TargetSet:
    """Targets must have position >= 1 (something to predict from). ``window=None`` masks by the
    ``history`` rule, ``window=m`` by the ``serving`` rule (see TargetSet)."""
    users = [u for u, p in targets]
    pos = np.array([p for _, p in targets], dtype=np.int64)
    if len(pos) and pos.min() < 1:
        raise ValueError("a target needs at least one earlier event")
    items = np.array([encoded[u].items[p] for u, p in targets], dtype=np.int64)
    ts = np.array([encoded[u].ts[p] for u, p in targets], dtype=np.int64)
    if window is None:
        masks = [np.unique(encoded[u].items[:p]) for u, p in targets]
        return TargetSet(users=users, positions=pos, items=items, ts=ts, masks=masks)
    masks = [seen_window(encoded[u].items[:p], window) for u, p in targets]
    hit = np.array([t in set(m.tolist()) for t, m in zip(items.tolist(), masks)], dtype=bool)
    return TargetSet(users=users, positions=pos, items=items, ts=ts, masks=masks, target_masked=hit)
