"""Incremental retraining against a full fit (issue 10 item 4), on consecutive time slices.

    ./run python benchmarks/incremental.py                      # ml-100k, 1 torch thread, seed 0
    ./run python benchmarks/incremental.py --data DIR/FILE --format FMT --cuts 0.6 0.9

The events, in time order, are cut at two quantiles of their timestamps (``--cuts``, default the
60th and 90th percentile): slice 1 before the first cut, slice 2 between them, slice 3 after. Under
TEMPORAL-stream on all events the test targets are the events at or after the 90th percentile of
time, i.e. slice 3 (with the default second cut), predicted from everything before them.

  earlier model   ``streamrec train`` on slice 1 only (what was serving before the new data came)
  full fit        a fresh model on slices 1-3 (trained on what precedes the test cutoff: slices 1+2)
  incremental     the same data, continued from the earlier model (``--init-from``): its items keep
                  their ids and rows, new items get fresh rows
  earlier, as is  the earlier model evaluated on the same test targets without retraining

Reports the training seconds of each (the earlier model's are not part of the incremental
retrain: they were spent before), the epochs until validation stopped improving, and the test
figures on slice 3 of both, beside the baselines; writes ``benchmarks/results/incremental-<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from streamrec.cli.tables import metrics_table
from streamrec.model import checkpoint
from streamrec.model.config import TrainConfig
from streamrec.model.data import load
from streamrec.model.pipeline import evaluate_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMREC_DATA", ROOT.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA / "ml-100k" / "ml-100k.inter"), help="event log (default ml-100k)")
    ap.add_argument("--format", dest="fmt", default="recbole", help="its format (default recbole)")
    ap.add_argument("--cuts", type=float, nargs=2, default=[0.6, 0.9], metavar=("Q1", "Q2"),
                    help="time quantiles that end slice 1 and slice 2 (default 0.6 0.9)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="results file (default benchmarks/results/incremental-<name>.json)")
    a = ap.parse_args(argv)
    path = Path(a.data)
    if not path.exists():
        ap.error(f"{path} does not exist (set STREAMREC_DATA or pass --data)")
    name = path.stem if path.is_file() else path.name
    events = sorted(load(path, a.fmt), key=lambda e: e.ts)
    ts = np.array([e.ts for e in events])
    c1, c2 = (int(np.quantile(ts, q)) for q in a.cuts)
    slice1 = [e for e in events if e.ts < c1]
    cfg = TrainConfig(threads=a.threads, seed=a.seed)
    doc: dict = {"benchmark": "incremental", "data": str(path), "events": len(events),
                 "cuts": {"quantiles": a.cuts, "ts": [c1, c2]},
                 "slices": {"1": len(slice1), "2": int(((ts >= c1) & (ts < c2)).sum()), "3": int((ts >= c2).sum())},
                 "command": "./run python benchmarks/incremental.py " + " ".join(argv or []),
                 "machine": {"nproc": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
                             "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"{name}: {len(events):,} events; slices {doc['slices']} (cuts at the {a.cuts} time quantiles)")
        runs = {}
        t0 = time.monotonic()
        runs["earlier"] = train(slice1, "temporal", work / "earlier", train_cfg=cfg, progress=False,
                                with_baselines=False, data_info={"name": f"{name}-slice1"})
        doc["earlier_seconds"] = round(time.monotonic() - t0, 1)
        earlier = checkpoint.load(work / "earlier")
        # the earlier model as it is, on the same test targets (items new since slice 1 are unknown to it)
        doc["earlier_on_test"] = evaluate_checkpoint(earlier, events, "temporal", with_baselines=False)["model"]
        for label, init in (("full", None), ("incremental", earlier)):
            t0 = time.monotonic()
            runs[label] = train(events, "temporal", work / label, train_cfg=cfg, progress=False,
                                with_baselines=label == "full", init_from=init, data_info={"name": name})
            runs[label]["wall_seconds"] = round(time.monotonic() - t0, 1)
            print(f"  {label}: {runs[label]['train_seconds']:.0f} s of training, best epoch "
                  f"{runs[label]['best_valid']['epoch']}")
    doc["earlier"] = {"items": runs["earlier"]["n_items"], "train_seconds": runs["earlier"]["train_seconds"]}
    for label in ("full", "incremental"):
        r = runs[label]
        doc[label] = {"test": r["model"], "train_seconds": r["train_seconds"], "best_epoch": r["best_valid"]["epoch"],
                      "epochs_run": len(r["history"]), "n_items": r["n_items"], "init_from": r.get("init_from")}
    doc["baselines"] = runs["full"].get("baselines", {})
    doc["speedup"] = round(doc["full"]["train_seconds"] / max(doc["incremental"]["train_seconds"], 1e-9), 2)
    doc["machine"]["loadavg_end"] = list(os.getloadavg())
    print(metrics_table({"full fit": doc["full"]["test"], "incremental (--init-from)": doc["incremental"]["test"],
                         "earlier model (slice 1), as is": doc["earlier_on_test"], **doc["baselines"]}))
    print(f"retrain: full {doc['full']['train_seconds']:.0f} s ({doc['full']['epochs_run']} epochs), incremental "
          f"{doc['incremental']['train_seconds']:.0f} s ({doc['incremental']['epochs_run']} epochs): "
          f"{doc['speedup']}x; {doc['incremental']['init_from']['items_added']} new items")
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"incremental-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
