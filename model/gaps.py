"""Time-gap buckets: the time since a user's previous event, on a log2 scale.

Torch-free and shared by training, export and the streaming worker, so that every part
buckets a gap identically (integer arithmetic only, no float rounding).

Bucket 0: no previous event (the user's first event).
Bucket 1: gap <= 0 ms (same millisecond, or an out-of-order event clamped to 0).
Bucket 2 + bit_length(gap_ms // 1000): 2 for (0 s, 1 s), 3 for [1 s, 2 s), 4 for [2 s, 4 s) ...
capped at ``n_buckets - 1`` (with the default 26 buckets: gaps of ~97 days and more).
"""
from __future__ import annotations

import numpy as np

N_GAP_BUCKETS = 26
FIRST_EVENT = 0
NO_GAP = 1

_POW2 = np.array([1 << i for i in range(62)], dtype=np.int64)


def gap_bucket(gap_ms: int | None, n_buckets: int = N_GAP_BUCKETS) -> int:
    """Bucket of one gap; ``None`` means the user had no previous event."""
    if gap_ms is None:
        return FIRST_EVENT
    if gap_ms <= 0:
        return NO_GAP
    return min(2 + (gap_ms // 1000).bit_length(), n_buckets - 1)


def gap_buckets(ts: np.ndarray, n_buckets: int = N_GAP_BUCKETS) -> np.ndarray:
    """Buckets for one user's time-ordered event timestamps (ms); the first event gets 0."""
    ts = np.asarray(ts, dtype=np.int64)
    out = np.empty(len(ts), dtype=np.int64)
    if len(ts) == 0:
        return out
    out[0] = FIRST_EVENT
    gaps = np.diff(ts)
    secs = np.maximum(gaps, 0) // 1000
    bits = np.searchsorted(_POW2, secs, side="right")  # == int.bit_length for secs >= 0
    out[1:] = np.where(gaps <= 0, NO_GAP, np.minimum(2 + bits, n_buckets - 1))
    return out
