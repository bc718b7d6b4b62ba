"""Training the LSTM: full-softmax cross-entropy at every position, truncated BPTT with the
state carried across chunks (so training sees the same long-running state serving keeps),
AdamW, early stopping on validation NDCG@10, seeded; under loo-full, a few epochs more on the
validation targets once validation has chosen the weights (``fit(..., known=...)``).

Run through the CLI: ``streamrec train --data PATH --format FMT --protocol P --out DIR``.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from streamrec.model.average import Average, assign, decay_cap
from streamrec.model.encode import Encoded, TargetSet, last_items
from streamrec.model.evaluate import evaluate_scorer
from streamrec.model.config import TrainConfig
from streamrec.model.losses import leave_one_out, mask_at, mask_items, sampled_loss, seen_items, smoothed_ce
from streamrec.model.lstm import LSTMConfig, LSTMRecommender, recent_windows
from streamrec.model.warm import grow


def _batches(seqs: list[Encoded], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Users grouped by similar length (little padding), batches in random order."""
    lengths = np.array([len(s) for s in seqs])
    order = np.lexsort((rng.random(len(seqs)), lengths))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def epoch_steps(seqs: list[Encoded], batch_size: int, max_len: int) -> int:
    """Optimizer steps in one ``train_epoch`` over ``seqs`` (those of 2 events or more): one per ``max_len``
    chunk of each batch's longest sequence, the batches grouped as ``_batches`` groups them (their order
    and ties do not change the count). A chunk with no target to learn takes no step but is counted."""
    seqs = [s for s in seqs if len(s) >= 2]
    return sum(math.ceil((max(len(seqs[r]) for r in rows) - 1) / max_len)
               for rows in _batches(seqs, batch_size, np.random.default_rng(0)))


def _pad(seqs: list[Encoded], rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(seqs[r]) for r in rows)
    out = np.zeros((3, len(rows), length), dtype=np.int64)
    for j, r in enumerate(rows):
        s = seqs[r]
        out[0, j, : len(s)], out[1, j, : len(s)], out[2, j, : len(s)] = s.items, s.types, s.gaps
    t = torch.from_numpy(out)
    return t[0], t[1], t[2]


def train_epoch(model: LSTMRecommender, seqs: list[Encoded], opt: torch.optim.Optimizer, cfg: TrainConfig,
                rng: np.random.Generator, average: Average | None = None) -> float:
    """One pass over ``seqs``; with ``average``, updates that running average of the parameters
    after every step."""
    model.train()
    total, count = 0.0, 0
    gen = torch.Generator().manual_seed(int(rng.integers(2**31))) if cfg.item_mask > 0 else None
    if cfg.negatives > 0 and model.cfg.transitions > 0:
        raise ValueError("sampled negatives (negatives > 0) do not support the transition prior (transitions > 0)")
    neg_gen = torch.Generator().manual_seed(int(rng.integers(2**31))) if cfg.negatives > 0 else None
    for rows in _batches(seqs, cfg.batch_size, rng):
        items, types, gaps = _pad(seqs, rows)
        inputs = mask_items(items, cfg.item_mask, gen) if cfg.item_mask > 0 else items
        # attention: every position's recent-items window, from the (item-dropped) inputs, as serving
        # would keep it (an item dropped to the unknown id does not enter the window)
        windows = recent_windows(inputs[:, :-1], model.cfg.attention) if model.cfg.attention > 0 else None
        state = None
        for a in range(0, items.shape[1] - 1, cfg.max_len):
            b = min(a + cfg.max_len, items.shape[1] - 1)
            # the query at every position (its dropout masks drawn for the whole padded chunk: computing it only at
            # the selected positions, encode's ``sel``, was no faster over a whole epoch and changes the random stream)
            q, state = model.encode(inputs[:, a:b], types[:, a:b], gaps[:, a:b], state,
                                    None if windows is None else windows[:, a:b])
            target = items[:, a + 1:b + 1]
            sel = target > 1  # positions with something to learn (not padding, not out of vocabulary)
            n = int(sel.sum())
            if n == 0:
                state = (state[0].detach(), state[1].detach())
                continue
            # whole-catalog scores only where there is a target: [n, n_items], not [B, T, n_items]
            current, target_n = inputs[:, a:b][sel], target[sel]
            if cfg.negatives > 0:
                loss = sampled_loss(model, q[sel], target_n, cfg.negatives, neg_gen,
                                     (items[:, :b], a, target, sel) if cfg.mask_seen else None,
                                     cfg.label_smoothing)
            else:
                # in blocks of rows (score_block): a [512, 12k] block of scores stays fast where [3000, 12k] does not
                block = cfg.score_block or n
                qs, table = q[sel], model.scoring_table()
                seen = seen_items(items[:, :b], a, target, sel) if cfg.mask_seen else None
                loss = 0.0
                for r in range(0, n, block):
                    rows = slice(r, r + block)
                    scores = model.score(qs[rows], current[rows], table)
                    if model.cfg.transitions > 0:
                        scores = leave_one_out(model, scores, current[rows], target_n[rows])
                    if seen is not None:
                        scores = mask_at(scores, seen[rows])
                    loss = loss + smoothed_ce(scores, target_n[rows], cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            (loss / n).backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            if average is not None:
                average.update()
            state = (state[0].detach(), state[1].detach())
            total, count = total + loss.item(), count + n
    return total / max(count, 1)


def _average(model: LSTMRecommender, cfg: TrainConfig, seqs: list[Encoded], warm: bool = True) -> Average | None:
    """The weight average of a run over ``seqs`` (None without EMA); see ``streamrec.model.average``."""
    if cfg.ema <= 0:
        return None
    steps = epoch_steps(seqs, cfg.batch_size, cfg.max_len)
    return Average(list(model.parameters()), decay_cap(cfg.ema, cfg.ema_epochs, steps), warm)


def transition_table(fit_seqs: list[Encoded], n_items: int, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's ``top`` most frequent successors in the fitted sequences, with their counts."""
    prev = np.concatenate([s.items[:-1] for s in fit_seqs if len(s) > 1] or [np.zeros(0, np.int64)])
    nxt = np.concatenate([s.items[1:] for s in fit_seqs if len(s) > 1] or [np.zeros(0, np.int64)])
    keep = (prev > 1) & (nxt > 1)
    pairs, counts = np.unique(prev[keep] * n_items + nxt[keep], return_counts=True)
    src, dst = pairs // n_items, pairs % n_items
    order = np.lexsort((-counts, src))  # by source, most frequent first
    src, dst, counts = src[order], dst[order], counts[order]
    starts = np.searchsorted(src, np.arange(n_items + 1))
    idx = np.zeros((n_items, top), dtype=np.int64)
    cnt = np.zeros((n_items, top), dtype=np.float32)
    for i in np.flatnonzero(np.diff(starts)):
        a, b = starts[i], min(starts[i + 1], starts[i] + top)
        idx[i, : b - a], cnt[i, : b - a] = dst[a:b], counts[a:b]
    return torch.from_numpy(idx), torch.from_numpy(cnt)


@torch.no_grad()
def query_vectors(model: LSTMRecommender, encoded: dict[str, Encoded], targets: TargetSet,
                  batch_users: int = 256, chunk: int = 256) -> np.ndarray:
    """The scoring-space vector before each target, [len(targets), dim], running every user's
    state over the whole input history (no truncation: what the streaming worker does)."""
    model.eval()
    by_user: dict[str, list[int]] = {}
    for n, u in enumerate(targets.users):
        by_user.setdefault(u, []).append(n)
    users = sorted(by_user, key=lambda u: int(targets.positions[by_user[u]].max()))
    out = np.zeros((len(targets), model.output_table().shape[1]), dtype=np.float32)
    for i in range(0, len(users), batch_users):
        group = users[i:i + batch_users]
        need = [int(targets.positions[by_user[u]].max()) for u in group]  # inputs [:pos]
        seqs = [encoded[u] for u in group]
        trimmed = [Encoded(s.items[:k], s.types[:k], s.gaps[:k], s.ts[:k]) for s, k in zip(seqs, need)]
        items, types, gaps = _pad(trimmed, list(range(len(group))))
        windows = recent_windows(items, model.cfg.attention) if model.cfg.attention > 0 else None
        # the query vectors only where a target needs one (``encode``'s ``sel``): slot[j, t] -> their row
        wanted = np.zeros(items.shape, dtype=bool)
        for j, u in enumerate(group):
            wanted[j, targets.positions[by_user[u]] - 1] = True
        slot = np.full(items.shape, -1, dtype=np.int64)
        state, qs, k = None, [], 0
        for a in range(0, items.shape[1], chunk):
            sel = wanted[:, a:a + chunk]
            jj, tt = np.nonzero(sel)  # the row-major order of boolean indexing
            slot[jj, a + tt] = np.arange(k, k + len(jj))
            k += len(jj)
            q, state = model.encode(items[:, a:a + chunk], types[:, a:a + chunk], gaps[:, a:a + chunk], state,
                                    None if windows is None else windows[:, a:a + chunk], torch.from_numpy(sel))
            qs.append(q)
        q = torch.cat(qs).numpy()
        for j, u in enumerate(group):
            rows = by_user[u]
            out[rows] = q[slot[j, targets.positions[rows] - 1]]
    return out


def lstm_scorer(model: LSTMRecommender, q: np.ndarray, last: np.ndarray):
    """Scorer (rows -> whole-catalog scores) from precomputed query vectors and last items."""
    def score(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.score(torch.from_numpy(q[rows]), torch.from_numpy(last[rows])).numpy()
    return score


def evaluate_model(model: LSTMRecommender, encoded: dict[str, Encoded], targets: TargetSet,
                   desc: str | None = None) -> dict:
    q = query_vectors(model, encoded, targets)
    return evaluate_scorer(lstm_scorer(model, q, last_items(encoded, targets)), targets, desc=desc)


def fit(model_cfg: LSTMConfig, cfg: TrainConfig, fit_seqs: list[Encoded], encoded: dict[str, Encoded],
        valid: TargetSet, progress: bool = True, known: list[Encoded] | None = None,
        init: LSTMRecommender | None = None, before_finetune=None) -> tuple[LSTMRecommender, list[dict]]:
    """Train with early stopping; returns the best-on-validation model and the per-epoch history.

    With ``cfg.finetune`` > 0 and ``known`` (every event known before the first test target:
    the fitted events plus the validation targets), training then continues from the best
    weights on ``known`` for that many epochs at ``cfg.lr * cfg.finetune_lr`` (history rows with
    ``"phase": "finetune"``). The number of epochs and the rate can not be chosen on validation
    (its targets are trained on): they were chosen on a rehearsal that dropped every user's test
    item, so that the real validation targets played the test's part (``benchmarks/quality.py
    --rehearse``). With ``init`` (an earlier model, ``model/warm.py``), training starts from its
    weights instead of a fresh initialisation. ``before_finetune(model)``, if given, is called with
    the model validation chose, just before the fine-tune (benchmarks measure it there too)."""
    tune = cfg.finetune if known is not None else 0
    # time to keep for the fine-tune, in fitting epochs: its epochs have more targets
    targets = lambda seqs: sum(len(s) - 1 for s in seqs if len(s) > 1)  # noqa: E731
    more = targets(known or []) / max(targets(fit_seqs), 1)
    model, opt, history, rng = _fit(model_cfg, cfg, fit_seqs, encoded, valid, progress, reserve=tune * more,
                                    init=init)
    if tune > 0 and history:
        if before_finetune is not None:
            before_finetune(model)
        rows = finetune(model, opt, cfg, known, cfg.lr * cfg.finetune_lr, tune, rng, progress)
        history += [dict(r, epoch=history[-1]["epoch"] + r["epoch"]) for r in rows]
    return model, history


def finetune(model: LSTMRecommender, opt: torch.optim.Optimizer, cfg: TrainConfig, seqs: list[Encoded],
             lr: float, epochs: int, rng: np.random.Generator, progress: bool = True) -> list[dict]:
    """Continue training ``model`` (in place, with its optimizer's state) on ``seqs`` for ``epochs``
    epochs at ``lr``, without validation (its targets are in ``seqs``); with EMA, the average
    restarts from the current weights and is what the model keeps. Returns history rows."""
    for group in opt.param_groups:
        group["lr"] = lr
    seqs = [s for s in seqs if len(s) >= 2]
    average = _average(model, cfg, seqs, warm=False)  # no warm-up: it starts from trained weights
    rows = []
    for epoch in tqdm(range(1, epochs + 1), desc="finetune", unit="epoch", disable=not progress):
        t0 = time.monotonic()
        loss = train_epoch(model, seqs, opt, cfg, rng, average)
        rows.append({"phase": "finetune", "epoch": epoch, "loss": loss, "lr": lr,
                     "seconds": time.monotonic() - t0})
    if average is not None:
        average.apply()
    return rows


def _fit(model_cfg: LSTMConfig, cfg: TrainConfig, fit_seqs: list[Encoded], encoded: dict[str, Encoded],
         valid: TargetSet, progress: bool = True, reserve: float = 0.0, init: LSTMRecommender | None = None
         ) -> tuple[LSTMRecommender, torch.optim.Optimizer, list[dict], np.random.Generator]:
    """``fit`` without the fine-tune; also returns the optimizer and the random generator.
    ``reserve``: epochs of the time budget kept for what follows."""
    if cfg.schedule not in ("plateau", "cosine"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}; schedules are plateau, cosine")
    rng = np.random.default_rng(cfg.seed)
    model, opt = _new_model(model_cfg, cfg, fit_seqs, init)
    seqs = [s for s in fit_seqs if len(s) >= 2]
    history: list[dict] = []
    best, best_state, flat = -math.inf, None, 0  # flat: epochs without a gain since the best or a decay
    scores: list[float] = []  # validation NDCG@10 per epoch (-loss without validation targets)
    trail: list[float] = []  # learning rate of each epoch that led to the current weights
    start = time.monotonic()
    bar = tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=not progress)
    params = list(model.parameters())
    average = _average(model, cfg, seqs)
    for epoch in bar:
        t0 = time.monotonic()
        if cfg.schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
        trail.append(opt.param_groups[0]["lr"])
        loss = train_epoch(model, seqs, opt, cfg, rng, average)
        if average is not None:  # validate (and keep) the averaged weights
            raw = [p.detach().clone() for p in params]
            average.apply()
        metrics = evaluate_model(model, encoded, valid) if len(valid) else {}
        ndcg = metrics.get("NDCG@10", -loss)
        history.append({"epoch": epoch, "loss": loss, "seconds": time.monotonic() - t0, "lr": trail[-1],
                        "lr_path": list(trail),
                        **{f"valid_{k}": v for k, v in metrics.items() if k != "n_targets"}})
        if average is not None:
            assign(params, raw)
        scores.append(ndcg)
        if ndcg > best:
            best, best_trail, flat = ndcg, list(trail), 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if average is not None:
                best_state = _with(model, best_state, average.values)
        else:
            flat += 1
            if (cfg.schedule == "plateau" and cfg.lr_decay < 1.0 and best_state is not None
                    and flat >= cfg.decay_patience):
                flat = 0
                if cfg.decay_resume:  # a step too far: resume from the best weights
                    model.load_state_dict(best_state)
                    trail = list(best_trail)
                    if average is not None:
                        average.reset()
                for group in opt.param_groups:  # with a smaller step size
                    group["lr"] *= cfg.lr_decay
        bar.set_postfix(loss=f"{loss:.3f}", ndcg10=f"{metrics.get('NDCG@10', float('nan')):.4f}",
                        hr10=f"{metrics.get('HR@10', float('nan')):.4f}", best=f"{best:.4f}")
        if stale_epochs(scores, cfg.min_delta) >= cfg.patience:
            break
        if cfg.time_budget_s:  # stop early enough that the fine-tune epochs fit in the budget too
            per_epoch = (time.monotonic() - start) / epoch
            if time.monotonic() - start + reserve * per_epoch > cfg.time_budget_s:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), opt, history, rng


def stale_epochs(scores: list[float], min_delta: float) -> int:
    """Epochs since the last one that made progress on validation (all of them if none did).

    An epoch makes progress when its score beats that of the last epoch that made progress by
    more than ``min_delta`` of its size (a relative margin, so the same on every data set and
    metric scale; the first epoch always does). Smaller gains still count as improvements for
    the checkpoint and the learning-rate schedule, not for patience: a run whose validation has
    levelled off stops, instead of creeping on by gains far below the seed-to-seed spread while
    the plateau schedule halves the rate. ``min_delta`` 0: every improvement is progress."""
    ref, last = -math.inf, -1
    for epoch, score in enumerate(scores):
        if ref == -math.inf or score > ref + min_delta * abs(ref):
            ref, last = score, epoch
    return len(scores) - 1 - last


def stop_epoch(scores: list[float], patience: int, min_delta: float) -> int:
    """How many epochs (1-based) a run with these per-epoch validation scores trains before ``fit``
    stops it (by ``stale_epochs`` against ``patience``); all of them if it never stops."""
    for n in range(1, len(scores) + 1):
        if stale_epochs(scores[:n], min_delta) >= patience:
            return n
    return len(scores)


def refit(model_cfg: LSTMConfig, cfg: TrainConfig, seqs: list[Encoded], lr_path: list[float],
          progress: bool = True) -> LSTMRecommender:
    """A fresh model trained on ``seqs`` for ``len(lr_path)`` epochs at those learning rates,
    without validation: the path that ``fit`` chose on validation, replayed on more data."""
    model, opt = _new_model(model_cfg, cfg, seqs)
    rng = np.random.default_rng(cfg.seed)
    seqs = [s for s in seqs if len(s) >= 2]
    average = _average(model, cfg, seqs)
    for lr in tqdm(lr_path, desc="refit", unit="epoch", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr
        train_epoch(model, seqs, opt, cfg, rng, average)
    if average is not None:
        average.apply()
    return model.eval()


def _new_model(model_cfg: LSTMConfig, cfg: TrainConfig, fit_seqs: list[Encoded],
               init: LSTMRecommender | None = None) -> tuple[LSTMRecommender, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = LSTMRecommender(model_cfg)
    if init is not None:
        grow(init, model)  # the earlier model's weights; new items keep their fresh rows
    if model_cfg.transitions > 0:
        model.set_transitions(*transition_table(fit_seqs, model_cfg.n_items, model_cfg.transitions))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    return model, opt


def _with(model: LSTMRecommender, state: dict, values: list[torch.Tensor]) -> dict:
    """``state`` (a state_dict copy) with the parameters replaced by ``values`` (parameter order)."""
    names = [n for n, _ in model.named_parameters()]
    return {**state, **{n: v.detach().clone() for n, v in zip(names, values)}}


def parity_sample(fit_seqs: list[Encoded], n: int = 16, max_len: int = 64) -> list[dict]:
    """A few real recorded sequences (the longest), stored in the checkpoint so that export can
    check ONNX parity on real events without the data set at hand."""
    longest = sorted(fit_seqs, key=len, reverse=True)[:n]
    return [{"items": s.items[:max_len].tolist(), "types": s.types[:max_len].tolist(),
             "gaps": s.gaps[:max_len].tolist()} for s in longest]
