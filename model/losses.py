"""The training losses' pieces, apart from the loop that uses them (``model/train.py``): item dropout,
the seen-item mask, sampled softmax, label smoothing and the transition prior's leave-one-out
correction. Pure tensor functions."""
from __future__ import annotations

import torch
from torch import nn

from streamrec.model.lstm import LSTMRecommender


MASKED = -1e8  # a logit at or below this is masked (mask_seen and sampled_loss set -1e9)


def smoothed_ce(logits: torch.Tensor, target: torch.Tensor, eps: float, first: int = 2) -> torch.Tensor:
    """Summed cross-entropy of ``logits`` [n, N] for ``target`` [n] with label smoothing ``eps``: the
    target distribution is (1 - eps) on the target plus eps spread evenly over the row's live
    columns only: those from ``first`` on (whole-catalog scores: PAD and OOV, never a target, get
    none) whose logit is above MASKED (seen items get none); the target is always live. eps = 0:
    plain cross-entropy."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {eps}")
    if eps == 0:
        return nn.functional.cross_entropy(logits, target, reduction="sum")
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    live = logits > MASKED
    if first > 0:
        live[:, :first] = False
    spread = -logp.masked_fill(~live, 0.0).sum(-1) / live.sum(-1).clamp(min=1)
    return ((1.0 - eps) * nll + eps * spread).sum()


def sampled_loss(model: LSTMRecommender, q: torch.Tensor, target: torch.Tensor, k: int, gen: torch.Generator,
                  seen: tuple | None = None, smoothing: float = 0.0) -> torch.Tensor:
    """Summed sampled-softmax cross-entropy of query vectors ``q`` [n, Q] for ``target`` [n]: each
    target against ``k`` items drawn uniformly from the catalog (PAD/OOV excluded), shared by the n
    rows; a draw equal to the row's target, or (with ``seen``, the arguments of ``mask_seen``
    after the scores) already in the row's history, does not count. Uniform draws need no
    log-probability correction (it is the same for every item). ``smoothing``: label smoothing over
    the target and the draws that count (``smoothed_ce``), a sampled stand-in for the catalog's."""
    n_items = model.cfg.n_items
    neg = torch.randint(2, n_items, (k,), generator=gen)
    table = model.output_table()
    pos_t, neg_t = table[target], table[neg]
    if model.cfg.cosine > 0:
        q = model.cfg.cosine * nn.functional.normalize(q, dim=-1)
        pos_t, neg_t = nn.functional.normalize(pos_t, dim=-1), nn.functional.normalize(neg_t, dim=-1)
    pos = (q * pos_t).sum(-1, keepdim=True)  # [n, 1]
    other = q @ neg_t.t()  # [n, k]
    if model.bias is not None:
        pos, other = pos + model.bias[target, None], other + model.bias[neg]
    drop = neg[None, :] == target[:, None]
    if seen is not None:  # the draws in each row's history: over the k draws, never a [n, n_items] mask
        lut = torch.full((n_items,), k, dtype=torch.int64)
        lut[neg] = torch.arange(k)  # item -> a column of its draw (k: not drawn)
        cols = lut[seen_items(*seen)]  # [n, S]
        hit = torch.zeros(len(target), k + 1, dtype=torch.bool).scatter_(1, cols, True)
        drop = drop | hit[:, lut[neg]]  # a repeated draw reads the column its item maps to
    other = other.masked_fill(drop, -1e9)
    logits = torch.cat([pos, other], dim=1)
    return smoothed_ce(logits, torch.zeros(len(target), dtype=torch.int64), smoothing, first=0)


def mask_items(items: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Item dropout: each real input item becomes the out-of-vocabulary id (1) with probability
    ``p`` (targets keep the true items), so the state must not lean on any single event."""
    drop = (torch.rand(items.shape, generator=gen) < p) & (items > 1)
    return torch.where(drop, torch.ones_like(items), items)


def mask_seen(scores: torch.Tensor, history: torch.Tensor, a: int, target: torch.Tensor,
               sel: torch.Tensor | None = None) -> torch.Tensor:
    """Scores [B, T, N] of chunk positions a..a+T-1 with every item of the user's history up to
    and including the current event set to -1e9, except the target: the loss then ranks the
    target among the items evaluation and serving can recommend (seen items are dropped there).
    ``history`` [B, a+T] holds the inputs from the user's first event; ``target`` is [B, T].
    With ``sel`` (a [B, T] boolean), ``scores`` holds only the selected positions, [n, N]."""
    return mask_at(scores, seen_items(history, a, target, sel))


def mask_at(scores: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``scores`` [..., N] with the items ``idx`` [..., S] of each row set to -1e9 (``seen_items``' output,
    or rows of it: training masks the scores block by block)."""
    return scores.scatter(-1, idx, -1e9)


def seen_items(history: torch.Tensor, a: int, target: torch.Tensor, sel: torch.Tensor | None = None) -> torch.Tensor:
    """The items ``mask_seen`` masks, per position: [B, T, S] (or [n, S] with ``sel``), PAD (0) where
    nothing is masked (the PAD column is never a target)."""
    T, S = target.shape[1], history.shape[1]
    before = torch.arange(S)[None, :] <= torch.arange(a, a + T)[:, None]  # [T, S]: s <= t
    idx = history[:, None, :].expand(-1, T, -1)  # [B, T, S]
    keep = before[None] & (idx > 1) & (idx != target[:, :, None])
    idx = torch.where(keep, idx, torch.zeros_like(idx))
    return idx if sel is None else idx[sel]


def leave_one_out(model: LSTMRecommender, scores: torch.Tensor, items: torch.Tensor, target: torch.Tensor):
    """Training sees the transition counts without the transition being predicted (count - 1 for
    the target), so the model learns how much counts are worth on transitions it has not seen."""
    succ, cnt = model.succ_idx[items], model.succ_cnt[items]  # [B, T, S]
    hit = succ == target.unsqueeze(-1)
    c = (cnt * hit).sum(-1)  # count of (item -> target), 0 if not among the top successors
    delta = model.transition_prior(c) - model.transition_prior((c - 1).clamp(min=0))
    delta = torch.where(hit.any(-1), delta, torch.zeros_like(delta))
    return scores.scatter_add(-1, target.unsqueeze(-1), -delta.unsqueeze(-1))
