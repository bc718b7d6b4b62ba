"""The one evaluator: any scorer over a TargetSet -> full-catalog metrics (torch-free).

The LSTM, the ONNX bundle and the baselines all go through :func:`evaluate_scorer` (or,
for ranked lists, :func:`evaluate_ranks`), so their numbers are comparable by construction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from streamrec.model import baselines
from streamrec.model.encode import Encoded, TargetSet
from streamrec.model.prepare import Prepared
from streamrec.model.metrics import MISS, rank_rows, summarize

KS = (10, 20)
DAY_MS = 86_400_000


def ranks_of(scorer: baselines.Scorer, targets: TargetSet, chunk: int = 1024, desc: str | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    ranks = np.empty(len(targets), dtype=np.int64)
    ncand = np.empty(len(targets), dtype=np.int64)
    starts = range(0, len(targets), chunk)
    for a in tqdm(starts, desc=desc, disable=desc is None, leave=False, unit="chunk"):
        rows = np.arange(a, min(a + chunk, len(targets)))
        scores = np.asarray(scorer(rows), dtype=np.float32)
        ranks[rows], ncand[rows] = rank_rows(scores, targets.items[rows], [targets.masks[r] for r in rows])
        if targets.target_masked is not None:
            ranks[rows[targets.target_masked[rows]]] = MISS
    return ranks, ncand


def evaluate_scorer(scorer: baselines.Scorer, targets: TargetSet, ks=KS, chunk: int = 1024,
                    desc: str | None = None) -> dict:
    ranks, ncand = ranks_of(scorer, targets, chunk, desc)
    return summarize(ranks, ncand, ks)


@dataclass(frozen=True)
class BaselineData:
    encoded: dict[str, Encoded]
    train_len: dict[str, int]
    n_items: int
    temporal: bool


def evaluate_baselines(data: BaselineData, targets: TargetSet, ks=KS, progress: bool = False) -> dict[str, dict]:
    counts = baselines.training_counts(data.encoded, data.train_len, data.n_items)
    scorers = {
        "MostPopular": baselines.most_popular(counts),
        "Markov": baselines.markov(data.encoded, data.train_len, counts, targets),
    }
    if data.temporal:
        scorers["RecentPopular-1d"] = baselines.recent_popular(data.encoded, targets, data.n_items, DAY_MS)
        scorers["RecentPopular-7d"] = baselines.recent_popular(data.encoded, targets, data.n_items, 7 * DAY_MS)
    return {name: evaluate_scorer(s, targets, ks, desc=name if progress else None) for name, s in scorers.items()}


def baselines_for(p: Prepared, targets: TargetSet | None = None, progress: bool = False) -> dict[str, dict]:
    """The baselines on a prepared split (training counts from its training part; RecentPopular
    only under the temporal protocol), on its test targets unless ``targets`` is given."""
    data = BaselineData(p.encoded, p.split.train_len, len(p.items), p.split.protocol == "temporal")
    return evaluate_baselines(data, p.test if targets is None else targets, progress=progress)
