"""Large benchmark catalogs grown from a trained model's real item embeddings, and real queries.

Shared by benchmarks/ann_choice.py (which index library) and benchmarks/ann_step.py (exact vs
indexed step). No data set here has more than ~12k items, so the catalogs of 100k and 1M items
are grown from a trained model's own output table (item vectors + per-item bias):

- the real items (rows 2.. of the table) are kept as they are;
- each new item mixes a real item ``a`` with one of ``a``'s 10 nearest real neighbours ``b``
  (cosine over the item vectors): ``v = t*v_a + (1-t)*v_b`` with ``t ~ U(0, 1)``, rescaled to the
  interpolated norm ``t*|v_a| + (1-t)*|v_b|`` (a plain mix would shrink towards the origin), plus
  Gaussian noise of 0.5 x the median nearest-neighbour distance (spread over the dims); its bias
  is ``t*b_a + (1-t)*b_b`` plus noise of 0.1 x the bias's standard deviation.

Why this is a fair stand-in: new items sit inside the real clusters, with the real catalog's
norms and bias (popularity) distribution, so a bigger catalog is a denser version of the real
one, as a shop with more variants of the same kinds of products is; the density of near
competitors around each query grows with the catalog, which is what makes top-n retrieval hard.
Random Gaussian vectors have no clusters at all (the worst case for every graph or list index)
and look like no trained embedding table.

Queries are real users' scoring vectors: the model's own query (``LSTMRecommender.encode``, eval
mode) after a random prefix of a real history (uniform cut point per user), so states come from
real event sequences, not random vectors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BEAUTY = DATA / "beauty" / "Beauty.txt"


def scoring_table(model) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [n_items, D], bias [n_items]) of the model's scoring layer, float32 (cosine models:
    unit rows; the scale goes on the query)."""
    import torch

    with torch.no_grad():
        v = model.output_table().detach().float()
        if model.cfg.cosine > 0:
            v = torch.nn.functional.normalize(v, dim=-1)
        b = model.bias.detach().float() if model.bias is not None else torch.zeros(v.shape[0])
    return v.numpy().copy(), b.numpy().copy()


def grow(vectors: np.ndarray, bias: np.ndarray, n_items: int, seed: int = 0, neighbours: int = 10,
         noise: float = 0.5, bias_noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The table grown to ``n_items`` rows (see the module doc); rows 0..len(vectors)-1 unchanged."""
    n0 = vectors.shape[0]
    if n_items <= n0:
        return vectors[:n_items].copy(), bias[:n_items].copy()
    rng = np.random.default_rng(seed)
    real = vectors[2:]
    norms = np.linalg.norm(real, axis=1)
    unit = real / np.maximum(norms, 1e-12)[:, None]
    nn_idx = np.empty((len(real), neighbours), np.int64)
    nn_dist = np.empty(len(real), np.float32)
    for a in range(0, len(real), 2048):  # kNN of the real items, chunked
        sims = unit[a:a + 2048] @ unit.T
        sims[np.arange(sims.shape[0]), np.arange(a, a + sims.shape[0])] = -np.inf
        idx = np.argpartition(-sims, neighbours, axis=1)[:, :neighbours]
        nn_idx[a:a + 2048] = idx
        nearest = idx[np.arange(len(idx)), np.argmax(np.take_along_axis(sims, idx, 1), axis=1)]
        nn_dist[a:a + 2048] = np.linalg.norm(real[a:a + 2048] - real[nearest], axis=1)
    sigma = noise * float(np.median(nn_dist)) / np.sqrt(vectors.shape[1])
    bsd = bias_noise * float(np.std(bias[2:]))
    extra = n_items - n0
    out_v = np.empty((n_items, vectors.shape[1]), np.float32)
    out_b = np.empty(n_items, np.float32)
    out_v[:n0], out_b[:n0] = vectors, bias
    for s in range(0, extra, 100_000):
        n = min(100_000, extra - s)
        a = rng.integers(0, len(real), n)
        b = nn_idx[a, rng.integers(0, neighbours, n)]
        t = rng.random(n, dtype=np.float32)[:, None]
        v = t * real[a] + (1 - t) * real[b]
        target = t[:, 0] * norms[a] + (1 - t[:, 0]) * norms[b]
        v *= (target / np.maximum(np.linalg.norm(v, axis=1), 1e-12))[:, None]
        v += rng.normal(0, sigma, v.shape).astype(np.float32)
        out_v[n0 + s:n0 + s + n] = v
        out_b[n0 + s:n0 + s + n] = t[:, 0] * bias[2:][a] + (1 - t[:, 0]) * bias[2:][b] + rng.normal(0, bsd, n)
    return out_v, out_b


def real_histories(ckpt, path: Path = BEAUTY, fmt: str = "sequences", n: int = 2000, seed: int = 0,
                   max_len: int = 200) -> list[dict]:
    """``n`` real users' histories (items/types/gaps indices in the checkpoint's vocabularies), each cut
    at a uniform random point (at least one event)."""
    from streamrec.model import data
    from streamrec.model.prepare import prepare

    events = data.load(path, fmt)
    p = prepare(events, "loo-full" if fmt == "sequences" else "temporal", items=ckpt.items, types=ckpt.types)
    rng = np.random.default_rng(seed)
    users = sorted(p.encoded)
    pick = rng.choice(len(users), size=min(n, len(users)), replace=False)
    out = []
    for j in pick:
        e = p.encoded[users[j]]
        cut = int(rng.integers(1, len(e.items) + 1))
        lo = max(0, cut - max_len)
        out.append({"items": e.items[lo:cut].tolist(), "types": e.types[lo:cut].tolist(),
                    "gaps": e.gaps[lo:cut].tolist()})
    return out


def real_queries(model, histories: list[dict], batch: int = 256) -> np.ndarray:
    """The scoring vector [n, D] after each history (the last event's query), eval mode; cosine models
    get the unit query times the scale, matching ``scoring_table``."""
    import torch

    qs = []
    model.eval()
    with torch.no_grad():
        for a in range(0, len(histories), batch):
            group = histories[a:a + batch]
            t = max(len(h["items"]) for h in group)
            x = np.zeros((3, len(group), t), np.int64)
            for r, h in enumerate(group):  # right-padded: a row's last real position is unaffected
                for i, key in enumerate(("items", "types", "gaps")):
                    x[i, r, :len(h[key])] = h[key]
            q, _ = model.encode(*(torch.from_numpy(x[i]) for i in range(3)))
            last = torch.tensor([len(h["items"]) - 1 for h in group])
            q = q[torch.arange(len(group)), last]
            if model.cfg.cosine > 0:
                q = model.cfg.cosine * torch.nn.functional.normalize(q, dim=-1)
            qs.append(q.numpy())
    return np.concatenate(qs).astype(np.float32)


def exact_top(queries: np.ndarray, vectors: np.ndarray, bias: np.ndarray, n: int, first: int = 2,
              chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``n`` item ids and scores (q.v + b) per query over rows ``first``.. (PAD and OOV
    excluded), best first; ties by lower id."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for a in range(first, vectors.shape[0], chunk):
        s = queries @ vectors[a:a + chunk].T + bias[a:a + chunk]
        ids = np.broadcast_to(np.arange(a, a + s.shape[1]), s.shape)
        s, ids = np.concatenate([best_s, s], 1), np.concatenate([best_i, ids], 1)
        keep = np.argpartition(-s, min(n, s.shape[1] - 1), axis=1)[:, :n]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(ids, keep, 1)
    order = np.lexsort((best_i, -best_s), axis=1) if best_s.ndim == 1 else np.stack(
        [np.lexsort((best_i[r], -best_s[r])) for r in range(len(best_s))])
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def recall(approx: np.ndarray, exact: np.ndarray, n: int) -> float:
    """Mean over rows of |approx[:n] & exact[:n]| / n."""
    return float(np.mean([len(set(a[:n].tolist()) & set(e[:n].tolist())) / n for a, e in zip(approx, exact)]))


def augment(vectors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Augmented MIPS: [v, b] per item, so that [q, 1] . [v, b] = q.v + b."""
    return np.ascontiguousarray(np.concatenate([vectors, bias[:, None]], axis=1), dtype=np.float32)


def augment_queries(queries: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([queries, np.ones((len(queries), 1), np.float32)], 1))
