"""Evaluate through the bundle: step the ONNX model over every user's history, exactly as the
worker does, and rank each target within the graph's top-(k+m) list (torch-free).

Masking follows the TargetSet's rule (model/encode.py):
- ``serving`` (the default of ``streamrec evaluate --bundle``): drop the last m distinct seen
  items, the target included, exactly as the worker does before publishing its top-k: these
  are the numbers live evaluation reproduces;
- ``history`` (BENCHMARKS.md): drop every item of the input history except the target. A target
  missing from the top-(k+m) list is a miss, which equals the full-catalog rank for every
  K <= k as long as no more than m history items outrank it.

A bundle whose model attends over the recent-items window gets, with each step, the window the
worker passes: the newest A items of each user's seen window once the event is remembered in it
(``ServingWindows``, with the worker's own rule, ``contract.remember``).

A two-stage bundle (an item index, export/ann.py) is evaluated through its index, as the worker
steps it, and also through the exact scan of its item table (``exact``): the two side by side show
what the approximate retrieval costs in HR/NDCG.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from streamrec.export import contract
from streamrec.export.runtime import Bundle
from streamrec.model.encode import Encoded, TargetSet
from streamrec.model.events import Interaction
from streamrec.model.metrics import MISS, rank_in_list, summarize
from streamrec.model.vocab import OOV


class ServingWindows:
    """The serving seen windows of ``rows`` users (the last ``m`` distinct known items, oldest first, as
    ``UserState.seen``), advanced event by event as the worker does, and the attention windows it
    passes to the step. With ``attention`` 0 nothing is tracked and ``after`` returns None."""

    def __init__(self, rows: int, m: int, attention: int):
        self.m, self.attention = m, attention
        self.seen: list[tuple[int, ...]] = [()] * rows

    def after(self, rows: Sequence[int], items: np.ndarray) -> np.ndarray | None:
        """Remember ``items[i]`` in the seen window of row ``rows[i]`` (known items only: OOV and PAD
        never enter it), then return those rows' windows [len(rows), attention] int64
        (``contract.windows_of``); None without attention."""
        if self.attention <= 0:
            return None
        for j, item in zip(rows, np.asarray(items).tolist()):
            if item > OOV:
                self.seen[j] = contract.remember(self.seen[j], item, self.m)
        return contract.windows_of([self.seen[j] for j in rows], self.attention)


def bundle_ranks(bundle: Bundle, encoded: dict[str, Encoded], targets: TargetSet, batch_users: int = 256,
                 progress: bool = False, exact: bool = False) -> np.ndarray:
    by_user: dict[str, list[int]] = {}
    for n, u in enumerate(targets.users):
        by_user.setdefault(u, []).append(n)
    users = sorted(by_user, key=lambda u: -int(targets.positions[by_user[u]].max()))
    ranks = np.empty(len(targets), dtype=np.int64)
    bar = tqdm(total=len(targets), desc="bundle", unit="target", disable=not progress, leave=False)
    for a in range(0, len(users), batch_users):
        group = users[a:a + batch_users]
        need = np.array([int(targets.positions[by_user[u]].max()) for u in group])  # descending
        # target rows keyed by (row in group, step index whose output predicts them)
        due: dict[int, list[tuple[int, int]]] = {}
        for j, u in enumerate(group):
            for n in by_user[u]:
                due.setdefault(int(targets.positions[n]) - 1, []).append((j, n))
        h, c = bundle.init_state(len(group))
        windows = ServingWindows(len(group), bundle.manifest.m, bundle.attention)
        seqs = [encoded[u] for u in group]
        for t in range(int(need[0])):
            active = int((need > t).sum())  # users sorted by need: active rows are a prefix
            item = np.array([s.items[t] for s in seqs[:active]])
            etype = np.array([s.types[t] for s in seqs[:active]])
            gap = np.array([s.gaps[t] for s in seqs[:active]])
            out = bundle.step(item, etype, gap, h[:, :active], c[:, :active], exact=exact,
                              window=windows.after(range(active), item))
            h[:, :active], c[:, :active] = out.h, out.c
            for j, n in due.get(t, []):
                if targets.target_masked is not None and targets.target_masked[n]:
                    ranks[n] = MISS
                    continue
                ranks[n] = rank_in_list(out.top_items[j], out.top_scores[j], int(targets.items[n]),
                                        set(targets.masks[n].tolist()))
            bar.update(len(due.get(t, [])))
    bar.close()
    return ranks


def evaluate_bundle_on(bundle: Bundle, events: list[Interaction], protocol: str, mask: str = "serving",
                       with_baselines: bool = False, progress: bool = False) -> dict:
    """``streamrec evaluate --bundle``: split ``events`` with the bundle's vocabularies, mask by
    ``mask`` (``serving``: the bundle's seen window m; ``history``), evaluate the bundle and,
    optionally, the baselines on the same targets. Returns {"model", ["model_exact"], ["baselines"],
    "n_targets"}; ``model_exact`` for a bundle with an item index (its exact scan)."""
    from streamrec.model.evaluate import baselines_for
    from streamrec.model.prepare import prepare

    window = None if mask == "history" else bundle.manifest.m
    p = prepare(events, protocol, items=bundle.items, types=bundle.types, window=window)
    doc = {"model": evaluate_bundle(bundle, p.encoded, p.test, progress=progress)}
    if bundle.indexed:
        doc["model_exact"] = evaluate_bundle(bundle, p.encoded, p.test, progress=progress, exact=True)
    if with_baselines:
        doc["baselines"] = baselines_for(p, progress=progress)
    doc["n_targets"] = len(p.test)
    return doc


def evaluate_bundle(bundle: Bundle, encoded: dict[str, Encoded], targets: TargetSet, progress: bool = False,
                    exact: bool = False) -> dict:
    """HR/NDCG/MRR/Precision/F1 at 10 and 20 (no AUC: the bundle returns a top list, not a ranking
    of the whole catalog). K must not exceed the bundle's k."""
    ks = tuple(k for k in (10, 20) if k <= bundle.k)
    return summarize(bundle_ranks(bundle, encoded, targets, progress=progress, exact=exact), None, ks)
