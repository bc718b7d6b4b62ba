"""The step of an indexed bundle beside the exact one, at 12k / 100k / 1M items, 1 thread, batch 1.

    ./run python benchmarks/ann_step.py --model runs/beauty64
    ./run python benchmarks/ann_step.py --model runs/beauty64 --sizes 100000 --seconds 1 --repeats 3

For each catalog size: the trained model with its item table grown to that size
(benchmarks/ann_catalog.py: real embeddings mixed and perturbed; the real catalog as it is for the
smallest) is exported twice through ``export_bundle``, once exact (the graph's full scan + TopK)
and once with ``--index hnsw`` (``--hnsw-m``, ``--ef-construction``, ``--ef-search``), both
parity-checked, the indexed one also through the recall gate. Then, in the same process:

- speed: each bundle stepped at batch 1 through ``Bundle.step`` (what the worker calls) over the
  events of real histories (users' events in order, state carried), for --seconds, exact and
  indexed alternating --repeats times; events/s medians and their ratio;
- recall@10 and recall@(k+m) of the indexed lists against the exact scan on every state of
  --recall-users real histories (beside the export gate's figure on the recorded sequences);
- bundle files' sizes, load time and resident memory added by ``Bundle.load`` (fresh process).

Writes benchmarks/results/ann-step.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ann_catalog as cat  # noqa: E402

ROOT = cat.ROOT


def grown_checkpoint(ckpt, n_items: int):
    """The checkpoint with its item table (tied embeddings + bias) grown to ``n_items`` rows."""
    from streamrec.model.checkpoint import Checkpoint
    from streamrec.model.lstm import LSTMConfig, LSTMRecommender
    from streamrec.model.vocab import Vocab

    cfg = ckpt.model.cfg
    if cfg.cosine or cfg.first_order_dim or cfg.transitions:
        raise SystemExit("ann_step grows the plain tied table: train without --cosine/--first-order-dim/--transitions")
    if n_items <= cfg.n_items:
        return ckpt
    import torch

    v, b = cat.grow(*cat.scoring_table(ckpt.model), n_items)
    model = LSTMRecommender(LSTMConfig(**{**cfg.to_dict(), "n_items": n_items}))
    sd = ckpt.model.state_dict()
    sd["item_emb.weight"], sd["bias"] = torch.from_numpy(v), torch.from_numpy(b)
    model.load_state_dict(sd)
    items = Vocab(list(ckpt.items.ids) + [f"grown-{j}" for j in range(n_items - cfg.n_items)])
    return Checkpoint(model.eval(), items, ckpt.types, ckpt.train_config, ckpt.metrics,
                      {**ckpt.data, "name": f"{ckpt.data.get('name', 'model')}-grown-{n_items}"})


def event_stream(histories: list[dict]) -> np.ndarray:
    """[3, T] item/type/gap of the histories one after another (a user's events in order)."""
    return np.array([[x for h in histories for x in h[key]] for key in ("items", "types", "gaps")], np.int64)


def rate(bundle, ev: np.ndarray, seconds: float) -> float:
    """Events/s of ``Bundle.step`` at batch 1 over ``ev`` (cycled), state carried."""
    h, c = bundle.init_state(1)
    n, steps, t0 = ev.shape[1], 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        j = steps % n
        r = bundle.step(ev[0, j:j + 1], ev[1, j:j + 1], ev[2, j:j + 1], h, c)
        h, c = r.h, r.c
        steps += 1
    return steps / (time.perf_counter() - t0)


def load_probe(bundle_dir: Path) -> dict:
    """Seconds to ``Bundle.load`` (checksums included) and resident MB it adds, in a fresh process."""
    code = ("import os, sys, time; from streamrec.export.runtime import Bundle\n"
            "def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
            "r0 = rss(); t0 = time.monotonic(); b = Bundle.load(sys.argv[1], threads=1); t = time.monotonic() - t0\n"
            "import numpy as np; h, c = b.init_state(1); b.step(np.array([2]), np.array([2]), np.array([0]), h, c)\n"
            "print(t, rss() - r0)")
    out = subprocess.run([sys.executable, "-c", code, str(bundle_dir)], capture_output=True, text=True, check=True)
    t, mb = map(float, out.stdout.split())
    return {"load_s": round(t, 2), "rss_added_mb": round(mb, 1)}


def sizes_mb(bundle_dir: Path) -> dict:
    return {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(bundle_dir.iterdir())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (streamrec train --out)")
    ap.add_argument("--data", default=str(cat.BEAUTY))
    ap.add_argument("--format", default="sequences")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000],
                    help="catalog sizes in items (0: the model's real catalog)")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--ef-search", type=int, default=128)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--m", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recall-users", type=int, default=300)
    ap.add_argument("--work", help="folder for the bundles (default: a temporary one, removed)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ann-step.json"))
    a = ap.parse_args()
    from streamrec.export.ann import IndexSpec
    from streamrec.export.onnx_export import export_bundle
    from streamrec.export.recall import measure
    from streamrec.export.runtime import Bundle
    from streamrec.model import checkpoint

    base = checkpoint.load(a.model)
    hist = cat.real_histories(base, Path(a.data), a.format, n=2000, seed=1)
    ev = event_stream(hist)
    spec = IndexSpec("hnsw", {"M": a.hnsw_m, "ef_construction": a.ef_construction, "ef_search": a.ef_search})
    doc = {"model": a.model, "threads": 1, "batch": 1, "k": a.k, "m": a.m, "index": {"kind": "hnsw", **spec.params},
           "seconds": a.seconds, "repeats": a.repeats, "events": int(ev.shape[1]), "cpu_count": os.cpu_count(),
           "loadavg_start": os.getloadavg(), "rows": []}
    print(f"{ev.shape[1]:,} real events of {len(hist)} histories for the speed loop", flush=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="ann-step-"))
    try:
        for size in a.sizes:
            n_items = size + 2 if size else base.model.cfg.n_items
            t0 = time.monotonic()
            ckpt = grown_checkpoint(base, n_items)
            grow_s = time.monotonic() - t0
            row = {"n_items": n_items - 2, "grow_s": round(grow_s, 1)}
            dirs = {"exact": work / f"exact-{n_items}", "indexed": work / f"hnsw-{n_items}"}
            for name, d in dirs.items():
                t0 = time.monotonic()
                if not d.exists():
                    manifest, _ = export_bundle(ckpt, d, k=a.k, m=a.m, index=spec if name == "indexed" else None)
                row[f"{name}_export_s"] = round(time.monotonic() - t0, 1)
                row[f"{name}_files_mb"] = sizes_mb(d)
                row[f"{name}_load"] = load_probe(d)
            exact, indexed = Bundle.load(dirs["exact"], threads=1), Bundle.load(dirs["indexed"], threads=1)
            row["gate"] = indexed.manifest.index["recall"]
            rec = measure(indexed, hist[:a.recall_users], threshold=0.0)
            row["recall_real_histories"] = rec.to_dict()
            runs = {"exact": [], "indexed": []}
            for _ in range(a.repeats):
                for name, b in (("exact", exact), ("indexed", indexed)):
                    runs[name].append(rate(b, ev, a.seconds))
            med = {k: statistics.median(v) for k, v in runs.items()}
            row.update({"exact_events_per_s": round(med["exact"]), "indexed_events_per_s": round(med["indexed"]),
                        "speedup": round(med["indexed"] / med["exact"], 2), "runs": runs,
                        "exact_us": round(1e6 / med["exact"], 1), "indexed_us": round(1e6 / med["indexed"], 1)})
            doc["rows"].append(row)
            print(f"{n_items - 2:>9,} items: exact {med['exact']:>8,.0f} events/s, indexed {med['indexed']:>8,.0f} "
                  f"events/s (x{med['indexed'] / med['exact']:.1f}); recall@10 {rec.recall_at_10:.4f}, "
                  f"@{rec.n} {rec.recall_at_n:.4f} on {rec.states} real states (gate: {row['gate']['recall@10']:.4f}); "
                  f"export exact {row['exact_export_s']} s, indexed {row['indexed_export_s']} s; "
                  f"rss exact +{row['exact_load']['rss_added_mb']} MB, indexed +{row['indexed_load']['rss_added_mb']} MB",
                  flush=True)
            del exact, indexed, ckpt
            doc["loadavg_end"] = os.getloadavg()
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(doc, indent=2))  # after every size: a partial run keeps its rows
    finally:
        if not a.work:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
