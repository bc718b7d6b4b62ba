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
- ``ivf``: ``IndexIVFFlat`` over the table turned into a nearest-neighbour problem (below);
  ``nlist`` lists (default 4 x sqrt(items)), ``nprobe`` visited per query (default 32);
- ``flat``: ``IndexFlatIP``, exhaustive (exact, slow on large catalogs): a reference and a test.

IVF and the inner product. Its lists come from k-means, which clusters by Euclidean distance,
while an inner-product IVF picks the lists whose centroid has the largest inner product with the
query: long centroids win whatever their direction, and near items behind a short centroid are
missed. So ``ivf`` searches the equivalent L2 problem instead (Bachrach et al. 2014, "Speeding up
the Xbox recommender system", the MIPS-to-NN transform): every row gets one more coordinate,
``sqrt(R^2 - |x|^2)`` with ``R`` the largest row norm, so all rows have norm ``R``, and the query
gets a 0 there (faiss's RemapDimensionsTransform, stored in the same file, so the runtime passes
the plain query); then ``|q' - x'|^2 = |q|^2 + R^2 - 2 q.x``, and the nearest rows are exactly the
rows of largest inner product, while k-means, the list choice and the search use one metric. On
the grown Beauty catalogs: at 1M items, nlist 4,000, nprobe 32, the export gate's recall@10 went
from 0.935 (inner-product IVF, refused) to 0.999; at 100k, nprobe 32, from 0.994 to 0.999 at
about the same speed, 56 vs 61 us per query (benchmarks/results/ann-choice-ivf.json, README
"Large catalogs").

Why ``ivf`` (nlist 4 x sqrt(n), nprobe 32) for large catalogs rather than ``hnsw``: at batch 1 an
IVF query scans nprobe / nlist of the table, ~8,000 rows at 1M items, in one SIMD pass over
contiguous lists, while HNSW's graph walk at the ef that reaches the same recall visits fewer rows
but in random order, each a cache miss. Measured through ``Bundle.step`` at 1M items in one run
(benchmarks/results/ann-step.json): ivf 4,303 events/s at recall@10 0.998, hnsw (M 32, ef 256)
2,475 at 0.965. With nprobe fixed and nlist ~ sqrt(n) the rows scanned grow as sqrt(n), so the
same defaults serve 100k (5,721 events/s, recall@10 0.999) and 1M alike, not the numbers of one
catalog; IVF also builds in seconds where HNSW takes minutes at 1M, and its file is the vectors
plus one id each (HNSW adds its links).

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
    elif kind == "ivf":  # the L2 transform of the module doc: rows of norm R, the query padded with 0
        norms = np.einsum("ij,ij->i", x, x)
        x = np.concatenate([x, np.sqrt(np.maximum(norms.max() - norms, 0))[:, None]], axis=1).astype(np.float32)
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(d + 1), d + 1, params["nlist"], faiss.METRIC_L2)
        rng = np.random.default_rng(0)
        ivf.train(x[rng.choice(len(x), min(len(x), 50 * params["nlist"]), replace=False)])
        ivf.add(x)
        index = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(d, d + 1, False), ivf)
        index.is_trained = True
        faiss.write_index(index, str(path))
        return
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
        found = type(self.index)
        if kind == "ivf" and found is faiss.IndexPreTransform:
            found = _l2_ivf(faiss, self.index)
        elif self.index.metric_type != faiss.METRIC_INNER_PRODUCT:  # e.g. an L2 index without the transform
            raise ValueError(f"{path.name} holds a faiss {found.__name__} that does not rank by inner product")
        if expected is None or found is not expected:
            raise ValueError(f"{path.name} holds a faiss {found.__name__}, the manifest says {kind}")
        if kind == "hnsw":
            self.index.hnsw.efSearch = int(params["ef_search"])
        elif kind == "ivf":  # the L2 transform of the module doc, or an inner-product IVF (bundles made before it)
            faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])

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


def _l2_ivf(faiss, index) -> type:
    """The type inside an ``ivf`` bundle's IndexPreTransform: IndexIVFFlat when it is the L2 transform
    this module writes (one zero-padding remap onto an L2 IVF one dimension wider), else what it holds."""
    inner = faiss.downcast_index(index.index)
    if index.chain.size() != 1 or inner.metric_type != faiss.METRIC_L2 or inner.d != index.d + 1:
        return type(index)
    remap = faiss.downcast_VectorTransform(index.chain.at(0))
    if type(remap) is not faiss.RemapDimensionsTransform or \
            faiss.vector_to_array(remap.map).tolist() != list(range(index.d)) + [-1]:
        return type(index)
    return type(inner)


def recall(approx: np.ndarray, exact: np.ndarray, n: int) -> float:
    """Mean over rows of |approx[:n] & exact[:n]| / n: the share of the exact top-n that the
    approximate top-n found (order inside the n does not matter)."""
    if len(exact) == 0:
        return float("nan")
    n = min(n, exact.shape[1])
    return float(np.mean([len(set(a[:n].tolist()) & set(e[:n].tolist())) / n for a, e in zip(approx, exact)]))
