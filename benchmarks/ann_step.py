"""The step of an indexed bundle beside the exact one, at 12k / 100k / 1M items, 1 thread, batch 1.

    ./run python benchmarks/ann_step.py --model runs/beauty64
    ./run python benchmarks/ann_step.py --model runs/beauty64 --sizes 100000 --seconds 1 --repeats 3
    ./run python benchmarks/ann_step.py --model runs/beauty64 --index ivf ivf:nprobe=64 hnsw:ef_search=256

For each catalog size: the trained model with its item table grown to that size
(benchmarks/ann_catalog.py: real embeddings mixed and perturbed; the real catalog as it is for the
smallest) is exported twice through ``export_bundle``, once exact (the graph's full scan + TopK)
and once per ``--index`` spec (``KIND[:param=value,...]``, the parameters of export/ann.py's
DEFAULTS, e.g. ``ivf:nlist=4000,nprobe=32`` or ``hnsw:M=32,ef_construction=128,ef_search=256``;
unnamed parameters take the export defaults; default: ``ivf``), all parity-checked, the indexed
ones also through the recall gate. Then, in the same process:

- speed: each bundle stepped at batch 1 through ``Bundle.step`` (what the worker calls) over the
  events of real histories (users' events in order, state carried), for --seconds, the exact and
  the indexed bundles in turn --repeats times; events/s medians and each index's ratio to exact;
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


def parse_spec(text: str, candidates: int = 0):
    """``KIND[:name=value,...]`` -> IndexSpec (ValueError names what is wrong)."""
    from streamrec.export.ann import IndexSpec

    kind, _, rest = text.partition(":")
    params = {}
    for part in filter(None, rest.split(",")):
        name, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"index spec {text!r}: {part!r} is not name=value")
        params[name] = int(value)
    return IndexSpec(kind, params, candidates)


def spec_name(spec, n_items: int) -> str:
    """The bundle's folder name: kind and every resolved parameter (so two specs never share one)."""
    return "-".join([spec.kind] + [f"{k}{v}" for k, v in spec.resolved(n_items).items()]
                    + ([f"c{spec.candidates}"] if spec.candidates else []))


def _faiss_version() -> str:
    import faiss

    return faiss.__version__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (streamrec train --out)")
    ap.add_argument("--data", default=str(cat.BEAUTY))
    ap.add_argument("--format", default="sequences")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000],
                    help="catalog sizes in items (0: the model's real catalog)")
    ap.add_argument("--index", nargs="+", default=["ivf"], metavar="KIND[:name=value,...]",
                    help="indexes measured beside exact, e.g. ivf:nprobe=32 hnsw:M=32,ef_search=256 (default: ivf)")
    ap.add_argument("--candidates", type=int, default=0, help="items the index returns (default k+m)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--m", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recall-users", type=int, default=300)
    ap.add_argument("--work", help="folder for the bundles (default: a temporary one, removed)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ann-step.json"))
    a = ap.parse_args()
    from streamrec.export.onnx_export import export_bundle
    from streamrec.export.recall import measure
    from streamrec.export.runtime import Bundle
    from streamrec.model import checkpoint

    base = checkpoint.load(a.model)
    hist = cat.real_histories(base, Path(a.data), a.format, n=2000, seed=1)
    ev = event_stream(hist)
    try:
        specs = [parse_spec(t, a.candidates) for t in a.index]
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    doc = {"model": a.model, "threads": 1, "batch": 1, "k": a.k, "m": a.m, "index": a.index,
           "candidates": a.candidates or a.k + a.m, "seconds": a.seconds, "repeats": a.repeats,
           "events": int(ev.shape[1]), "cpu_count": os.cpu_count(), "faiss": _faiss_version(),
           "loadavg_start": os.getloadavg(), "rows": []}
    print(f"{ev.shape[1]:,} real events of {len(hist)} histories for the speed loop", flush=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="ann-step-"))
    try:
        for size in a.sizes:
            n_items = size + 2 if size else base.model.cfg.n_items
            t0 = time.monotonic()
            ckpt = grown_checkpoint(base, n_items)
            row = {"n_items": n_items - 2, "grow_s": round(time.monotonic() - t0, 1)}
            names = ["exact"] + [spec_name(s, n_items - 2) for s in specs]
            bundles = {}
            for name, spec in zip(names, [None] + specs):
                d = work / f"{name}-{n_items}"
                t0 = time.monotonic()
                if not d.exists():
                    export_bundle(ckpt, d, k=a.k, m=a.m, index=spec)
                info = {"export_s": round(time.monotonic() - t0, 1), "files_mb": sizes_mb(d),
                        "bundle_mb": round(sum(p.stat().st_size for p in d.iterdir()) / 2**20, 1),
                        "load": load_probe(d)}
                bundles[name] = Bundle.load(d, threads=1)
                if spec is not None:
                    b = bundles[name]
                    info.update({"spec": spec.kind, "params": b.manifest.index["params"],
                                 "candidates": b.manifest.index["candidates"], "gate": b.manifest.index["recall"],
                                 "recall_real_histories": measure(b, hist[:a.recall_users], threshold=0.0).to_dict()})
                row[name] = info
            runs = {name: [] for name in names}
            for _ in range(a.repeats):
                for name in names:
                    runs[name].append(rate(bundles[name], ev, a.seconds))
            med = {k: statistics.median(v) for k, v in runs.items()}
            for name in names:
                row[name].update({"events_per_s": round(med[name]), "us": round(1e6 / med[name], 1),
                                  "runs": [round(r, 1) for r in runs[name]]})
                if name != "exact":
                    row[name]["speedup"] = round(med[name] / med["exact"], 2)
            doc["rows"].append(row)
            print(f"{n_items - 2:>9,} items: exact {med['exact']:>7,.0f} events/s "
                  f"(bundle {row['exact']['bundle_mb']:,.0f} MB, rss +{row['exact']['load']['rss_added_mb']:,.0f} MB)",
                  flush=True)
            for name in names[1:]:
                r, rec = row[name], row[name]["recall_real_histories"]
                n_top = bundles[name].manifest.n_top
                print(f"{'':>16}{name}: {med[name]:>7,.0f} events/s (x{r['speedup']:.1f}); recall@10 "
                      f"{rec['recall@10']:.4f}, @{n_top} {rec[f'recall@{n_top}']:.4f} on {rec['states']} real states "
                      f"(gate {r['gate']['recall@10']:.4f}); export {r['export_s']} s, bundle {r['bundle_mb']:,.0f} MB, "
                      f"load {r['load']['load_s']} s, rss +{r['load']['rss_added_mb']:,.0f} MB", flush=True)
            del bundles, ckpt
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
