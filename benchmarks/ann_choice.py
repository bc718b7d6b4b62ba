"""Which index library: faiss-cpu, hnswlib and usearch on the same catalogs, 1 thread, batch 1.

    ./run python benchmarks/ann_choice.py --model runs/beauty64          # 100k and 1M items
    ./run python benchmarks/ann_choice.py --model runs/beauty64 --sizes 100000 --queries 500

The catalog is a trained model's real scoring table (item vectors + bias), grown to each size by
mixing and perturbing real embeddings (benchmarks/ann_catalog.py says how and why); the queries
are real users' scoring vectors after real histories. Augmented MIPS: items [v, b], queries
[q, 1], so every index answers an inner-product top-n equal to the model's score q.v + b.

Per index and search setting: build time (--build-threads), index file size (the library's own
format), resident memory added by loading the file, query time at batch 1 (median of the
per-query means of --repeats passes), recall@10 and recall@N (N = k + m = 70) of the index's own
top-N against the exact top-N. Writes benchmarks/results/ann-choice.json.

``ivf-l2-*`` is what ``streamrec export --index ivf`` builds (export/ann.py: the MIPS-to-L2
transform, nlist 4 x sqrt(n)), with the lists stored as float32 (flat), float16 or int8 (faiss's
scalar quantiser). Their recall here is the index's own ranking; a bundle re-scores the candidates
exactly against its float32 item table, so its recall@10 can only be higher. E.g. the memory and
size of the variants at 1M items (issue 11, item 4):
    ./run python benchmarks/ann_choice.py --model runs/beauty64 --sizes 1000000 --libs faiss \
        --big faiss:ivf-l2-flat faiss:ivf-l2-sq-f16 faiss:ivf-l2-sq-i8 --nprobe 16 32 --build-threads 2 \
        --out benchmarks/results/ann-choice-ivf.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ann_catalog as cat  # noqa: E402

ROOT = cat.ROOT


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---- the three libraries, behind one shape: build(x) -> save(path) -> load(path) -> search(q, n, param)
class Faiss:
    def __init__(self, kind: str, m: int, efc: int, nlist: int = 0):
        import faiss

        self.faiss, self.kind, self.m, self.efc, self.nlist = faiss, kind, m, efc, nlist
        self.lib, self.name = f"faiss-cpu {faiss.__version__}", "faiss"

    def build(self, x: np.ndarray, threads: int):
        f = self.faiss
        f.omp_set_num_threads(threads)
        d, ip = x.shape[1], self.faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw-flat":
            ix = f.IndexHNSWFlat(d, self.m, ip)
        elif self.kind in ("hnsw-sq-f16", "hnsw-sq-i8"):
            qt = f.ScalarQuantizer.QT_fp16 if self.kind.endswith("f16") else f.ScalarQuantizer.QT_8bit
            ix = f.IndexHNSWSQ(d, qt, self.m, ip)
        elif self.kind == "ivf-flat":
            ix = f.IndexIVFFlat(f.IndexFlatIP(d), d, self.nlist, ip)
        elif self.kind.startswith("ivf-l2-"):  # export/ann.py's ivf: the MIPS-to-L2 transform, then L2 IVF
            qt = {"flat": None, "sq-f16": f.ScalarQuantizer.QT_fp16, "sq-i8": f.ScalarQuantizer.QT_8bit}[self.kind[7:]]
            # the scalar quantiser's SIMD distance needs a dimension divisible by 8: zeros pad the rest
            d2 = d + 1 if qt is None else -(-(d + 1) // 8) * 8
            norms = np.einsum("ij,ij->i", x, x)
            x2 = np.zeros((len(x), d2), np.float32)
            x2[:, :d], x2[:, d] = x, np.sqrt(np.maximum(norms.max() - norms, 0))
            inner = (f.IndexIVFFlat(f.IndexFlatL2(d2), d2, self.nlist, f.METRIC_L2) if qt is None else
                     f.IndexIVFScalarQuantizer(f.IndexFlatL2(d2), d2, self.nlist, qt, f.METRIC_L2))
            rng = np.random.default_rng(0)
            inner.train(x2[rng.choice(len(x), min(len(x), 50 * self.nlist), replace=False)])
            inner.add(x2)
            self.ix = f.IndexPreTransform(f.RemapDimensionsTransform(d, d2, False), inner)
            self.ix.is_trained = True
            return
        else:
            raise ValueError(self.kind)
        if hasattr(ix, "hnsw"):
            ix.hnsw.efConstruction = self.efc
        if not ix.is_trained:
            rng = np.random.default_rng(0)
            ix.train(x[rng.choice(len(x), min(len(x), 50 * max(self.nlist, 1000)), replace=False)])
        ix.add(x)
        self.ix = ix

    def save(self, path: str):
        self.faiss.write_index(self.ix, path)

    def load(self, path: str):
        self.faiss.omp_set_num_threads(1)
        self.ix = self.faiss.read_index(path)

    def set(self, param: int):
        if hasattr(self.ix, "hnsw"):
            self.ix.hnsw.efSearch = param
        else:
            self.faiss.extract_index_ivf(self.ix).nprobe = param

    def search(self, q: np.ndarray, n: int) -> np.ndarray:
        return self.ix.search(q, n)[1]


class Hnswlib:
    def __init__(self, m: int, efc: int):
        import hnswlib

        self.hnswlib, self.m, self.efc = hnswlib, m, efc
        self.lib, self.name = "hnswlib 0.8.0", "hnswlib"
        self.kind = "hnsw"

    def build(self, x: np.ndarray, threads: int):
        ix = self.hnswlib.Index(space="ip", dim=x.shape[1])
        ix.init_index(max_elements=len(x), ef_construction=self.efc, M=self.m)
        ix.set_num_threads(threads)
        ix.add_items(x, np.arange(len(x)))
        self.ix, self.dim = ix, x.shape[1]

    def save(self, path: str):
        self.ix.save_index(path)

    def load(self, path: str):
        ix = self.hnswlib.Index(space="ip", dim=self.dim)
        ix.load_index(path)
        ix.set_num_threads(1)
        self.ix = ix

    def set(self, param: int):
        self.ix.set_ef(param)

    def search(self, q: np.ndarray, n: int) -> np.ndarray:
        return self.ix.knn_query(q, k=n)[0]


class Usearch:
    def __init__(self, dtype: str, m: int, efc: int):
        import usearch
        from usearch.index import Index

        self.Index, self.dtype, self.m, self.efc = Index, dtype, m, efc
        self.lib, self.name = f"usearch {usearch.__version__}", "usearch"
        self.kind = f"hnsw-{dtype}"

    def build(self, x: np.ndarray, threads: int):
        ix = self.Index(ndim=x.shape[1], metric="ip", dtype=self.dtype, connectivity=self.m,
                        expansion_add=self.efc, expansion_search=64)
        ix.add(np.arange(len(x)), x, threads=threads)
        self.ix = ix

    def save(self, path: str):
        self.ix.save(path)

    def load(self, path: str):
        self.ix = self.Index.restore(path)

    def set(self, param: int):
        self.ix.expansion_search = param

    def search(self, q: np.ndarray, n: int) -> np.ndarray:
        return np.atleast_2d(self.ix.search(q, n, threads=1).keys)


def probe_load(ix, path: str) -> tuple[float, float]:
    """Seconds to load the index file and resident MB it adds, in a fresh process (an allocator that
    kept the built index's freed pages would hide it here)."""
    import subprocess

    args = [ix.name, ix.kind, str(getattr(ix, "m", 0)), str(getattr(ix, "efc", 0)), str(getattr(ix, "nlist", 0)),
            str(ix.dim), path]
    out = subprocess.run([sys.executable, __file__, "--probe", *args], capture_output=True, text=True, check=True)
    load_s, rss = map(float, out.stdout.split())
    return load_s, rss


def _probe(name: str, kind: str, m: str, efc: str, nlist: str, dim: str, path: str) -> None:
    make = {"faiss": lambda: Faiss(kind, int(m), int(efc), int(nlist)), "hnswlib": lambda: Hnswlib(int(m), int(efc)),
            "usearch": lambda: Usearch(kind.split("-")[-1], int(m), int(efc))}
    ix = make[name]()
    ix.dim = int(dim)
    r0, t0 = rss_mb(), time.monotonic()
    ix.load(path)
    print(time.monotonic() - t0, rss_mb() - r0)


def candidates(n_items: int, m: int, efc: int, which: set[str]) -> list:
    nlist = int(4 * np.sqrt(n_items)) if n_items <= 200_000 else 2048
    out = []
    if "faiss" in which:
        out += [Faiss("hnsw-flat", m, efc), Faiss("hnsw-sq-f16", m, efc), Faiss("hnsw-sq-i8", m, efc),
                Faiss("ivf-flat", m, efc, nlist)]
        # export/ann.py's ivf (the L2 transform), nlist 4 x sqrt(n) at every size, float32 / float16 / int8 lists
        out += [Faiss(f"ivf-l2-{q}", m, efc, int(4 * np.sqrt(n_items))) for q in ("flat", "sq-f16", "sq-i8")]
    if "hnswlib" in which:
        out.append(Hnswlib(m, efc))
    if "usearch" in which:
        out += [Usearch("f32", m, efc), Usearch("f16", m, efc), Usearch("i8", m, efc)]
    return out


def time_queries(ix, q: np.ndarray, n: int, repeats: int) -> tuple[float, np.ndarray]:
    """Median over ``repeats`` passes of the mean microseconds per batch-1 query; the ids of the last pass."""
    runs, ids = [], None
    for _ in range(repeats):
        rows = []
        t0 = time.perf_counter()
        for i in range(len(q)):
            rows.append(np.asarray(ix.search(q[i:i + 1], n))[0])
        runs.append(1e6 * (time.perf_counter() - t0) / len(q))
        ids = np.stack(rows).astype(np.int64)
    return statistics.median(runs), ids


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        return _probe(*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (streamrec train --out)")
    ap.add_argument("--data", default=str(cat.BEAUTY), help="the data set the model was trained on (histories)")
    ap.add_argument("--format", default="sequences")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--libs", nargs="+", default=["faiss", "hnswlib", "usearch"])
    ap.add_argument("--big", nargs="+", default=None, metavar="LIB:KIND",
                    help="only these indexes at sizes >= 500k, e.g. faiss:hnsw-flat hnswlib:hnsw usearch:hnsw-f32 "
                         "(default: all; builds take minutes there)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--M", type=int, default=32, help="HNSW links per node (all libraries)")
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256], help="HNSW search settings")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64], help="IVF search settings")
    ap.add_argument("--build-threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--m", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ann-choice.json"))
    a = ap.parse_args()
    from streamrec.model import checkpoint

    n_top = a.k + a.m
    ckpt = checkpoint.load(a.model)
    v0, b0 = cat.scoring_table(ckpt.model)
    t0 = time.monotonic()
    hist = cat.real_histories(ckpt, Path(a.data), a.format, n=a.queries)
    q = cat.augment_queries(cat.real_queries(ckpt.model, hist))
    print(f"{len(q)} real queries ({time.monotonic() - t0:.0f} s); catalog of {v0.shape[0] - 2:,} real items, "
          f"dim {v0.shape[1]} + 1 (bias)", flush=True)
    doc = {"model": a.model, "real_items": int(v0.shape[0] - 2), "dim": int(v0.shape[1]) + 1, "queries": len(q),
           "n_top": n_top, "M": a.M, "ef_construction": a.ef_construction, "build_threads": a.build_threads,
           "query_threads": 1, "repeats": a.repeats, "catalog": cat.__doc__.split("\n\n")[1], "rows": [],
           "loadavg_start": os.getloadavg()}
    for n_items in a.sizes:
        t0 = time.monotonic()
        v, b = cat.grow(v0, b0, n_items + 2)
        x = cat.augment(v, b)[2:]  # PAD and OOV are never candidates; index id = item id - 2
        grow_s = time.monotonic() - t0
        t0 = time.monotonic()
        ex_ids, _ = cat.exact_top(q, cat.augment(v, b), np.zeros(len(v), np.float32), n_top)
        ex_ids = ex_ids - 2
        print(f"\n{n_items:,} items: grown in {grow_s:.0f} s, exact top-{n_top} in {time.monotonic() - t0:.0f} s",
              flush=True)
        # the exact scan itself, at batch 1, as numpy does it (reference speed only)
        t0 = time.perf_counter()
        for i in range(min(50, len(q))):
            s = x @ q[i]
            np.argpartition(-s, n_top)[:n_top]
        doc["rows"].append({"n_items": n_items, "lib": "numpy", "kind": "exact scan", "param": None,
                            "us_per_query": 1e6 * (time.perf_counter() - t0) / min(50, len(q)),
                            "recall@10": 1.0, f"recall@{n_top}": 1.0})
        for ix in candidates(n_items, a.M, a.ef_construction, set(a.libs)):
            if n_items >= 500_000 and a.big is not None and f"{ix.name}:{ix.kind}" not in a.big:
                continue
            ix.dim = x.shape[1]
            gc.collect()
            t0 = time.monotonic()
            ix.build(x, a.build_threads)
            build_s = time.monotonic() - t0
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "index")
                ix.save(path)
                size = os.path.getsize(path)
                ix.ix = None
                gc.collect()
                load_s, rss = probe_load(ix, path)
                ix.load(path)
            params = a.nprobe if ix.kind.startswith("ivf") else a.ef
            for p in params:
                ix.set(p)
                us, ids = time_queries(ix, q, n_top, a.repeats)
                row = {"n_items": n_items, "lib": ix.lib, "kind": ix.kind,
                       "param": {"nprobe" if ix.kind.startswith("ivf") else "ef": p},
                       "build_s": round(build_s, 1), "index_mb": round(size / 2**20, 1),
                       "load_s": round(load_s, 2), "rss_added_mb": round(rss, 1), "us_per_query": round(us, 1),
                       "recall@10": round(cat.recall(ids, ex_ids, 10), 4),
                       f"recall@{n_top}": round(cat.recall(ids, ex_ids, n_top), 4)}
                doc["rows"].append(row)
                print(f"  {ix.lib:<18} {ix.kind:<12} {str(row['param']):<14} build {build_s:6.1f} s  "
                      f"file {row['index_mb']:7.1f} MB  rss +{rss:6.1f} MB  {us:7.1f} us/query  "
                      f"recall@10 {row['recall@10']:.4f}  @{n_top} {row[f'recall@{n_top}']:.4f}", flush=True)
            ix.ix = None
        del x, v, b
        gc.collect()
    doc["loadavg_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
