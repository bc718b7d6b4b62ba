"""Full-catalog ranking metrics, exactly as ../shared/BENCHMARKS.md defines them.

Torch-free (numpy), shared by offline evaluation, bundle evaluation and live evaluation.

The tie rule, named: rank = 1 + the number of *unmasked* items scoring *strictly* above the
target (ties go in the target's favour). Masked items (the user's input history except the
target itself, plus the PAD and OOV slots) get -inf. A target that is out of vocabulary can
not be ranked: it is a miss at every K (rank = MISS).
"""
from __future__ import annotations


import numpy as np

MISS = np.iinfo(np.int64).max // 4  # rank of a target that cannot be ranked (OOV or not in list)
RESERVED = (0, 1)  # PAD and OOV columns are never recommended


def rank_rows(scores: np.ndarray, targets: np.ndarray, masks: list[np.ndarray]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of ``targets`` [N] in ``scores`` [N, V] after masking; also the candidate counts.

    ``masks[n]`` holds item indices to exclude for row n; the target itself is never masked.
    Returns (ranks [N] int64, n_candidates [N] int64). ``scores`` is modified in place.
    """
    n, v = scores.shape
    rows = np.repeat(np.arange(n), [len(m) for m in masks])
    cols = np.concatenate(masks).astype(np.int64) if n else np.zeros(0, np.int64)
    keep = cols != np.repeat(targets, [len(m) for m in masks])
    scores[rows[keep], cols[keep]] = -np.inf
    scores[:, RESERVED] = -np.inf
    oov = targets <= 1
    t_score = scores[np.arange(n), np.where(oov, 2, targets)]
    ranks = 1 + (scores > t_score[:, None]).sum(axis=1)
    n_cand = np.isfinite(scores).sum(axis=1)
    ranks[oov] = MISS
    return ranks.astype(np.int64), n_cand.astype(np.int64)


def rank_in_list(items: np.ndarray, scores: np.ndarray, target: int, masked: set[int]) -> int:
    """Rank of ``target`` within a top-N list (ids + scores) after dropping masked ids.

    Same tie rule as :func:`rank_rows`; a target absent from the list is a MISS. Exact for any
    K up to the number of unmasked entries, because a top-N list holds every item that scores
    strictly above any of its members.
    """
    if target <= 1:
        return MISS
    hit = np.nonzero(items == target)[0]
    if len(hit) == 0:
        return MISS
    t = scores[hit[0]]
    above = [s > t for i, s in zip(items.tolist(), scores.tolist())
             if i not in masked and i != target and i > 1]
    return 1 + int(sum(above))


def summarize(ranks: np.ndarray, n_candidates: np.ndarray | None = None, ks=(10, 20)) -> dict:
    """HR, NDCG, MRR, Precision, F1 at each K (one target per row), plus AUC when candidate
    counts are given: AUC = 1 - (rank-1)/(N-1), 0 for unrankable targets."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out: dict[str, float] = {}
    if len(ranks) == 0:
        return {"n_targets": 0}
    r = ranks.astype(np.float64)
    for k in ks:
        hit = ranks <= k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 1), 0.0).mean())
        out[f"MRR@{k}"] = float(np.where(hit, 1.0 / r, 0.0).mean())
        out[f"Precision@{k}"] = float(hit.mean() / k)
        out[f"F1@{k}"] = float((2.0 * hit / (k + 1)).mean())  # P = hit/k, R = hit
    if n_candidates is not None:
        nc = np.maximum(np.asarray(n_candidates, dtype=np.float64), 2.0)
        auc = np.where(ranks == MISS, 0.0, 1.0 - (r - 1.0) / (nc - 1.0))
        out["AUC"] = float(auc.mean())
    out["n_targets"] = int(len(ranks))
    return out

