"""Events -> model indices (item, event type, gap bucket), and evaluation target sets.

Torch-free: training, bundle evaluation and the streaming worker encode events the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.events import Interaction
from model.gaps import N_GAP_BUCKETS, gap_buckets
from model.vocab import Vocab


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
    """Evaluation targets: (user, position) pairs with their target item and history mask.

    The input of target n is ``encoded[users[n]][:positions[n]]``; ``masks[n]`` holds the
    distinct item indices of that input (the target itself is never masked by the ranker).
    """

    users: list[str]
    positions: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    masks: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.users)


def build_targets(encoded: dict[str, Encoded], targets: list[tuple[str, int]]) -> TargetSet:
    """Targets must have position >= 1 (something to predict from)."""
    users = [u for u, p in targets]
    pos = np.array([p for _, p in targets], dtype=np.int64)
    if len(pos) and pos.min() < 1:
        raise ValueError("a target needs at least one earlier event")
    items = np.array([encoded[u].items[p] for u, p in targets], dtype=np.int64)
    ts = np.array([encoded[u].ts[p] for u, p in targets], dtype=np.int64)
    masks = [np.unique(encoded[u].items[:p]) for u, p in targets]
    return TargetSet(users=users, positions=pos, items=items, ts=ts, masks=masks)
