"""Replay the early-stopping rule on recorded runs: what ``TrainConfig.min_delta`` would have done.

    ./run python benchmarks/stopping.py                    # min_delta 0.001, every quality-*.json
    ./run python benchmarks/stopping.py --min-delta 0.002 --files benchmarks/results/quality-beauty*.json

The rule changes nothing before it stops a run (gains below the margin still choose the checkpoint
and halve the learning rate, as before), so replaying a recorded validation history is exact up to
the stop: the epochs it keeps, the best epoch among them and its validation NDCG@10 are the ones a
re-run would give (same seed and threads; test figures are not replayed: under loo-full the
fine-tune starts from the chosen weights with a random generator advanced by fewer epochs).
Runs on the plateau schedule whose histories were recorded with every gain counted
(``min_delta`` 0 or absent) are replayed; writes benchmarks/results/stopping-replay.json.
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from streamrec.model.train import stop_epoch

ROOT = Path(__file__).resolve().parents[1]


def runs(files: list[str]):
    for f in sorted(files):
        doc = json.loads(Path(f).read_text())
        for label, m in (doc.get("models") or {}).items():
            for seed, r in zip(m["seeds"], m["runs"]):
                tc = r.get("train_config", {})
                h = [x for x in r.get("valid_history", []) if "valid_NDCG@10" in x]
                if h and tc.get("schedule") == "plateau" and not tc.get("min_delta"):
                    yield Path(f).stem, label, seed, tc["patience"], h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--min-delta", type=float, default=0.001)
    ap.add_argument("--files", nargs="+", default=glob.glob(str(ROOT / "benchmarks/results/quality-*.json")))
    a = ap.parse_args()
    rows = []
    for name, label, seed, patience, h in runs(a.files):
        scores = [x["valid_NDCG@10"] for x in h]
        n = stop_epoch(scores, patience, a.min_delta)
        best = max(range(len(h)), key=lambda i: scores[i])
        kept = max(range(n), key=lambda i: scores[i])
        rows.append({"file": name, "model": label, "seed": seed, "epochs": len(h), "epochs_kept": n,
                     "best_epoch": h[best]["epoch"], "best_epoch_kept": h[kept]["epoch"],
                     "valid_NDCG@10": scores[best], "valid_NDCG@10_kept": scores[kept],
                     "change": scores[kept] / scores[best] - 1,
                     "seconds": sum(x["seconds"] for x in h), "seconds_kept": sum(x["seconds"] for x in h[:n])})
        r = rows[-1]
        print(f"{name:40s} seed {seed}: epochs {r['epochs']:2d} -> {n:2d}, best {r['best_epoch']:2d} "
              f"{r['valid_NDCG@10']:.4f} -> {r['best_epoch_kept']:2d} {r['valid_NDCG@10_kept']:.4f} "
              f"({100 * r['change']:+.2f}%), {r['seconds']:.0f} -> {r['seconds_kept']:.0f} s")
    changes = [r["change"] for r in rows]
    print(f"{len(rows)} runs: {sum(c < 0 for c in changes)} lose validation, worst {100 * min(changes):+.2f}%, "
          f"mean {100 * sum(changes) / len(changes):+.3f}%")
    out = {"min_delta": a.min_delta, "runs": rows}
    (ROOT / "benchmarks/results/stopping-replay.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
