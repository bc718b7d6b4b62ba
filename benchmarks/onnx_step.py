"""The ceiling: the bare ONNX step in a tight loop (ONNX Runtime, 1 thread), events/s.

    ./run python benchmarks/onnx_step.py                       # catalogs of 12k, 100k, 1M items
    ./run python benchmarks/onnx_step.py --bundle bundles/beauty --items 12103

For each catalog size a model with the default dims (dim 64, hidden 128, 1 layer; random
weights: speed does not depend on the values) is exported with TopK(k+m) in the graph, then
stepped with batch 1 and batch 64 for a fixed time, repeated; the median is reported.
Writes benchmarks/results/onnx_step.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_bundle(n_items: int, out: Path, k: int, m: int) -> Path:
    import torch

    from streamrec.export.onnx_export import write_bundle
    from streamrec.model.checkpoint import Checkpoint
    from streamrec.model.lstm import LSTMConfig, LSTMRecommender
    from streamrec.model.vocab import Vocab

    torch.manual_seed(0)
    model = LSTMRecommender(LSTMConfig(n_items=n_items, n_event_types=4)).eval()
    items = Vocab([f"i{j}" for j in range(n_items - 2)])
    ckpt = Checkpoint(model, items, Vocab(["click", "browse"]), data={"name": f"synthetic-{n_items}"})
    out.mkdir(parents=True)
    write_bundle(ckpt, out, k, m)
    return out


def rate(bundle, batch: int, seconds: float, repeats: int) -> list[float]:
    rng = np.random.default_rng(0)
    n = bundle.manifest.n_items
    items = rng.integers(2, n, (256, batch))
    types = rng.integers(2, len(bundle.types), (256, batch))
    gaps = rng.integers(0, bundle.manifest.n_gap_buckets, (256, batch))
    a = bundle.manifest.attention  # attention bundles: a full window of known items per row
    windows = [{"window": rng.integers(2, n, (batch, a))} if a else {} for _ in range(256)]
    h, c = bundle.init_state(batch)
    out = []
    for _ in range(repeats):
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            r = bundle.step(items[steps % 256], types[steps % 256], gaps[steps % 256], h, c, **windows[steps % 256])
            h, c = r.h, r.c
            steps += 1
        out.append(steps * batch / (time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[12_103, 100_000, 1_000_000])
    ap.add_argument("--bundle", help="also time this trained bundle")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--m", type=int, default=50)
    a = ap.parse_args()
    from streamrec.export.runtime import Bundle

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = [(f"synthetic {n:,} items", lambda n=n: make_bundle(n, Path(tmp) / str(n), a.k, a.m)) for n in a.sizes]
        if a.bundle:
            targets.insert(0, (f"bundle {a.bundle}", lambda: Path(a.bundle)))
        for label, build in targets:
            bundle = Bundle.load(build(), threads=1)
            for batch in a.batches:
                runs = rate(bundle, batch, a.seconds, a.repeats)
                rows.append({"model": label, "n_items": bundle.manifest.n_items, "batch": batch,
                             "events_per_s": statistics.median(runs), "runs": runs,
                             "us_per_step": 1e6 * batch / statistics.median(runs)})
                print(f"{label:<28} batch {batch:>3}: {statistics.median(runs):>10,.0f} events/s "
                      f"({1e6 * batch / statistics.median(runs):,.0f} us per step call)", flush=True)
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "onnx_step.json").write_text(json.dumps({"threads": 1, "k": a.k, "m": a.m, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
