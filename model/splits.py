"""Train / validation / test splits, exactly as ``BENCHMARKS.md`` defines them.

Both protocols keep every user's full, time-sorted history (``sequences``) and mark targets by
position in it: the input of a target at position ``p`` is ``sequences[user][:p]``.

- ``loo-full`` (order-only data): per user, the last event is the test target, the second-last
  the validation target, the rest training. Users with < 3 events: all training, no targets.
- ``temporal`` (TEMPORAL-stream, timestamped logs): ``T = numpy.percentile(ts, 90)`` over all
  event timestamps (linear interpolation, so T may fall between two timestamps). Training =
  events with ``ts < T``; every event with ``ts >= T`` (ties at T included) of a user with at
  least one event before T is a test target (prequential). Validation applies the same rule
  inside the training part: ``T_v = numpy.percentile(training ts, 90)``; training events with
  ``ts >= T_v`` of users with an event before ``T_v`` are validation targets; the model is
  fitted on the events before ``T_v`` (``fit_len``).

Torch-free; needs numpy.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from streamrec.model.events import Interaction, by_user

PROTOCOLS = ("loo-full", "temporal")
_ALIASES = {"loo": "loo-full", "temporal-stream": "temporal"}
PERCENTILE = 90.0


@dataclass
class Split:
    """A data set cut into training, validation and test targets (see the module docstring)."""

    protocol: str  # "loo-full" | "temporal"
    sequences: dict[str, list[Interaction]]  # every user's full history, time-sorted (stable)
    train_len: dict[str, int]  # leading events of each user that are TRAINING data (vocab, baselines)
    fit_len: dict[str, int]  # leading events the model is fitted on (<= train_len)
    valid: list[tuple[str, int]]  # (user, position) validation targets, for early stopping
    test: list[tuple[str, int]]  # (user, position) test targets; input is sequences[user][:position]
    cutoff_ts: float | None  # temporal: T (ms); None for loo-full
    valid_cutoff_ts: float | None = None  # temporal: T_v (ms); None for loo-full


def split(events: list[Interaction], protocol: str) -> Split:
    """Split ``events`` by ``protocol`` (``loo-full`` or ``temporal``; case-insensitive)."""
    name = _ALIASES.get(protocol.lower(), protocol.lower())
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; protocols are {', '.join(PROTOCOLS)}")
    if not events:
        raise ValueError("cannot split an empty event log")
    sequences = by_user(events)
    if name == "loo-full":
        return _loo_full(sequences)
    return _temporal(sequences)


def _loo_full(sequences: dict[str, list[Interaction]]) -> Split:
    train_len: dict[str, int] = {}
    valid: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for user, seq in sequences.items():
        n = len(seq)
        if n < 3:
            train_len[user] = n
            continue
        train_len[user] = n - 2
        valid.append((user, n - 2))
        test.append((user, n - 1))
    return Split("loo-full", sequences, train_len, dict(train_len), valid, test, None, None)


def cutoff(ts: np.ndarray | list[int] | list[float], q: float = PERCENTILE) -> float:
    """The protocol's cutoff: ``numpy.percentile(ts, q)`` with linear interpolation, as a float."""
    return float(np.percentile(np.asarray(ts, dtype=np.float64), q, method="linear"))


def _prefix_before(sequences: dict[str, list[Interaction]], t: float) -> dict[str, int]:
    """Per user, the number of leading events with ts < t (sequences are time-sorted)."""
    return {u: bisect_left(seq, t, key=lambda e: e.ts) for u, seq in sequences.items()}


def _targets(lengths: dict[str, int], ends: dict[str, int]) -> list[tuple[str, int]]:
    """(user, p) for lengths[u] <= p < ends[u], only for users with lengths[u] >= 1."""
    return [(u, p) for u, k in lengths.items() if k > 0 for p in range(k, ends[u])]


def _temporal(sequences: dict[str, list[Interaction]]) -> Split:
    all_ts = np.fromiter((e.ts for seq in sequences.values() for e in seq), dtype=np.float64)
    t = cutoff(all_ts)
    train_len = _prefix_before(sequences, t)
    train_ts = all_ts[all_ts < t]
    if train_ts.size == 0:
        raise ValueError(f"no event lies before the cutoff T={t}: nothing to train on")
    t_v = cutoff(train_ts)
    fit_len = _prefix_before(sequences, t_v)
    valid = _targets(fit_len, train_len)
    test = _targets(train_len, {u: len(seq) for u, seq in sequences.items()})
    return Split("temporal", sequences, train_len, fit_len, valid, test, t, t_v)


def training_events(split: Split) -> list[Interaction]:
    """The training events (each user's first ``train_len``), user by user, in time order."""
    return [e for u, seq in split.sequences.items() for e in seq[: split.train_len[u]]]


def summary(split: Split) -> dict[str, object]:
    """Counts of users, events and targets, and the cutoffs (ms), for logs and reports."""
    return {
        "protocol": split.protocol,
        "users": len(split.sequences),
        "events": sum(len(s) for s in split.sequences.values()),
        "training_events": sum(split.train_len.values()),
        "fit_events": sum(split.fit_len.values()),
        "valid_targets": len(split.valid),
        "valid_users": len({u for u, _ in split.valid}),
        "test_targets": len(split.test),
        "test_users": len({u for u, _ in split.test}),
        "cutoff_ts": split.cutoff_ts,
        "valid_cutoff_ts": split.valid_cutoff_ts,
    }
