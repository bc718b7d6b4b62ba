"""The item index of a two-stage bundle: maximum-inner-product search over the scoring table.

A bundle exported with ``--index KIND`` scores in two stages: an index returns candidates for
the user's scoring vector, and the runtime re-scores them exactly against the bundle's item
table (``item_table.npy``) and keeps the top-(k+m). Augmented MIPS: the table's rows are
``[v, b]`` (item vector, item bias) and the query is ``[q, 1]``, so one inner product is the
model's score ``q.v + b`` and the index needs no notion of a bias.

The library is faiss-cpu (benchmarks/ann_choice.py measured it beside hnswlib and usearch; the
README says why), in its own file format (``faiss.write_index``; never pickle). Kinds:

- ``hnsw``: ``IndexHNSWFlat``, inner product; ``M`` links per node, ``ef_construction``, and
  ``ef_search`` at query time (at least the candidates asked for);
- ``ivf``: ``IndexIVFFlat``, inner product; ``nlist`` lists, ``nprobe`` visited per query;
- ``flat``: ``IndexFlatIP``, exhaustive (exact, slow on large catalogs): a reference and a test.

Torch-free: the runtime imports this module only for indexed bundles, and faiss only then.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("hnsw", "ivf", "flat")
LIBRARY = "faiss-cpu"
#: What each kind takes, with the export defaults.
DEFAULTS = {
    "hnsw": {"M": 32, "ef_construction": 128, "ef_search": 128},
    "ivf": {"nlist": 0, "nprobe": 32},  # nlist 0: 4 * sqrt(catalog size)
    "flat": {},
}


class IndexUnavailable(ImportError):
    """The bundle has an index and faiss is not installed."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise IndexUnavailable("this bundle has an item index: install faiss-cpu (pip install "
                               "'streamrec[serve]')") from None
    return faiss


def library_version() -> str:
    return _faiss().__version__


@dataclass(frozen=True)
class IndexSpec:
    """What ``streamrec export --index KIND`` asked for."""

    kind: str
    params: dict = field(default_factory=dict)
    candidates: int = 0  # 0: the bundle's k + m

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        unknown = set(self.params) - set(DEFAULTS[self.kind])
        if unknown:
            raise ValueError(f"index {self.kind} takes {sorted(DEFAULTS[self.kind])}, not {sorted(unknown)}")

    def resolved(self, n_items: int) -> dict:
        p = {**DEFAULTS[self.kind], **{k: int(v) for k, v in self.params.items()}}
        if self.kind == "ivf" and p["nlist"] <= 0:
            p["nlist"] = max(1, int(4 * np.sqrt(n_items)))
        return p


def build(table: np.ndarray, kind: str, params: dict, path: Path, threads: int = 0) -> None:
    """Index rows 2.. of the augmented ``table`` [n_items, d] (PAD and OOV are never candidates;
    index id = item id - 2) and write it in faiss's format to ``path``."""
    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(table[2:], dtype=np.float32)
    d, ip = x.shape[1], faiss.METRIC_INNER_PRODUCT
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params["M"], ip)
        index.hnsw.efConstruction = params["ef_construction"]
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, params["nlist"], ip)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(len(x), min(len(x), 50 * params["nlist"]), replace=False)])
    elif kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        raise ValueError(kind)
    index.add(x)
    faiss.write_index(index, str(path))


class ItemIndex:
    """A loaded index: ``search(queries [B, d], n) -> item ids [B, n]`` (-1 where fewer were found)."""

    def __init__(self, path: Path, kind: str, params: dict, threads: int = 1):
        faiss = _faiss()
        faiss.omp_set_num_threads(threads)
        self.index = faiss.read_index(str(path))
        self.kind, self.params = kind, params
        expected = {"hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat, "flat": faiss.IndexFlatIP}.get(kind)
        if expected is None or type(self.index) is not expected:
            raise ValueError(f"{path.name} holds a faiss {type(self.index).__name__}, the manifest says {kind}")
        if kind == "hnsw":
            self.index.hnsw.efSearch = int(params["ef_search"])
        elif kind == "ivf":
            self.index.nprobe = int(params["nprobe"])

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, n: int) -> np.ndarray:
        _, ids = self.index.search(queries, n)
        missing = ids < 0
        ids += 2
        ids[missing] = -1
        return ids


def recall(approx: np.ndarray, exact: np.ndarray, n: int) -> float:
    """Mean over rows of |approx[:n] & exact[:n]| / n: the share of the exact top-n that the
    approximate top-n found (order inside the n does not matter)."""
    if len(exact) == 0:
        return float("nan")
    n = min(n, exact.shape[1])
    return float(np.mean([len(set(a[:n].tolist()) & set(e[:n].tolist())) / n for a, e in zip(approx, exact)]))
