"""Offline quality benchmark: the LSTM (and its ablations) beside the baselines.

    ./run python benchmarks/quality.py beauty              # LOO-full on Beauty, final model
    ./run python benchmarks/quality.py beauty --ablation   # + what each model change bought
    ./run python benchmarks/quality.py ml-100k yoochoose   # TEMPORAL-stream
    ./run python benchmarks/quality.py all --seeds 0 1 2
    ./run python benchmarks/quality.py beauty --rehearse --finetune 3   # validation-only rehearsal
    ./run python benchmarks/quality.py ml-100k --threads 1 --model '{"attention": 20}' --tag att20
    ./run python benchmarks/quality.py taobao synth --one-type --tag one-type   # event types ablated

Data sets are read from ../shared/data (or $STREAMREC_DATA). Prints a table per data set and
writes benchmarks/results/quality-<name>.json with every figure (HR, NDCG, MRR, Precision,
F1 at 10/20, AUC) per model and seed, plus the training time.

``--rehearse`` drops every user's last event before splitting, so that the "test" figures are
those of the real validation targets (the real test targets are never read): how the fine-tune
on validation targets (``TrainConfig.finetune``), which validation can not judge, was chosen.
It writes quality-<name>-rehearse.json.

Under loo-full with a fine-tune, each run also reports the test figures of the model validation
chose, before the fine-tune (``test_before_finetune``: the like-for-like figures, the same as a
``--finetune 0`` run unless the time budget binds). ``--model`` / ``--train`` take JSON objects
of LSTMConfig / TrainConfig fields for a variant; ``--tag`` names its results file
(quality-<name>-<tag>.json), so that variants do not overwrite the defaults' file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streamrec.cli.tables import metrics_table
from streamrec.model.config import TrainConfig
from streamrec.model.data import load
from streamrec.model.events import CLICK, Interaction, by_user
from streamrec.model.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMREC_DATA", ROOT.parent / "shared" / "data"))
SETS = {
    "beauty": ("beauty/Beauty.txt", "sequences", "loo-full"),
    "ml-100k": ("ml-100k/ml-100k.inter", "recbole", "temporal"),
    "yoochoose": ("yoochoose-100k", "gru4rec", "temporal"),
    # sessions as users: each session's last item is its test target, as session-based work does
    "diginetica": ("diginetica-sample/sample_train-item-views.csv", "diginetica", "loo-full"),
    # 43 long user histories with timestamps: every event after the cutoff is a target
    "taobao": ("taobao-tiny/UserBehavior.csv", "taobao", "temporal"),
    # the demo's click/browse streams (model/synth.py, default SynthConfig, seed 0): always there
    "synth": ("", "synth", "temporal"),
}
FINAL = {}  # the defaults of LSTMConfig: first-order term, item bias, LayerNorm, attention 20, 128-d, cosine x 20
PLAIN = {"attention": 0, "cosine": 0.0, "dim": 64}  # the defaults before issue 12
ABLATION = {  # each step on the model as first measured (PLAIN), then today's defaults
    "plain LSTM (tied output)": {"first_order": False, "item_bias": False, **PLAIN},
    "+ item bias": {"first_order": False, **PLAIN},
    "+ first-order term": PLAIN,
    "+ attention 20, 128-d, cosine scores x 20 (defaults)": {},
}


def drop_last(events: list[Interaction]) -> list[Interaction]:
    """Every user's events but the last (by time): the rehearsal's data."""
    return [e for seq in by_user(events).values() for e in seq[:-1]]


def load_set(name: str) -> list[Interaction]:
    rel, fmt, _ = SETS[name]
    if fmt == "synth":
        from streamrec.model.synth import generate

        return generate()
    return load(DATA / rel, fmt)


def one_type(events: list[Interaction]) -> list[Interaction]:
    """Every event as a click: the event-type input then tells the model nothing (its ablation)."""
    return [dataclasses.replace(e, event_type=CLICK) for e in events]


def run_set(name: str, seeds: list[int], ablation: bool, budget: float, threads: int = 0,
            rehearse: bool = False, overrides: dict | None = None, model_kw: dict | None = None,
            baselines: bool = True, types: bool = True) -> dict:
    _, _, protocol = SETS[name]
    events = load_set(name)
    if not types:
        events = one_type(events)
    if rehearse:
        events = drop_last(events)
    variants = ABLATION if ablation else {"LSTM": FINAL}
    variants = {k: {**v, **(model_kw or {})} for k, v in variants.items()}
    out: dict = {"data": name, "protocol": protocol, "rehearse": rehearse, "event_types": types, "models": {},
                 "baselines": None}
    for label, kw in variants.items():
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.monotonic()
                doc = train(events, protocol, tmp, kw, TrainConfig(seed=seed, time_budget_s=budget, threads=threads,
                                                                    **(overrides or {})),
                            {"name": name}, progress=True, with_baselines=baselines and out["baselines"] is None,
                            test_before_finetune=True)
                doc["model"]["train_seconds"] = round(time.monotonic() - t0, 1)
                doc["model"]["fit_seconds"] = doc["train_seconds"]  # training alone (no test, no baselines)
                doc["model"]["best_epoch"] = doc["best_valid"]["epoch"]
                doc["model"]["finetune_epochs"] = doc["finetune_epochs"]
                doc["model"]["valid_NDCG@10"] = doc["best_valid"].get("valid_NDCG@10")
                doc["model"]["valid_HR@10"] = doc["best_valid"].get("valid_HR@10")
                doc["model"]["train_config"] = doc["train_config"]
                doc["model"]["config"] = doc["config"]
                doc["model"]["valid_history"] = [
                    {k: h[k] for k in ("epoch", "loss", "seconds", "lr", "valid_NDCG@10", "valid_HR@10") if k in h}
                    for h in doc["history"]]
                if "model_before_finetune" in doc:
                    doc["model"]["test_before_finetune"] = doc["model_before_finetune"]
            if out["baselines"] is None and "baselines" in doc:
                out["baselines"] = doc["baselines"]
            runs.append(doc["model"])
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]
                if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)}
        if all("test_before_finetune" in r for r in runs):
            for k in ("NDCG@10", "HR@10"):
                mean[f"{k} before finetune"] = float(np.mean([r["test_before_finetune"][k] for r in runs]))
        out["models"][label] = {"seeds": seeds, "runs": runs, "mean": mean}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", choices=[*SETS, "all"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--ablation", action="store_true", help="train each ablation variant too")
    ap.add_argument("--budget", type=float, default=1800.0, help="training time budget per run, seconds")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--rehearse", action="store_true",
                    help="drop every user's last event first: the test figures are the real validation targets")
    ap.add_argument("--finetune", type=int, default=None, metavar="EPOCHS",
                    help="override TrainConfig.finetune (loo-full fine-tune epochs on the validation targets)")
    ap.add_argument("--finetune-lr", type=float, default=None, metavar="SHARE",
                    help="override TrainConfig.finetune_lr (share of the learning rate)")
    ap.add_argument("--model", type=json.loads, default={}, metavar="JSON",
                    help='LSTMConfig fields for every variant, e.g. \'{"attention": 20}\'')
    ap.add_argument("--train", type=json.loads, default={}, metavar="JSON",
                    help='TrainConfig fields, e.g. \'{"epochs": 5, "patience": 2}\'')
    ap.add_argument("--tag", default="", help="results file suffix: quality-<name>-<tag>.json")
    ap.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    ap.add_argument("--one-type", action="store_true",
                    help="ablation: every event becomes a click, so the event-type embedding carries nothing "
                         "(multi-behaviour data: taobao's pv/cart/fav/buy, synth's click/browse); needs --tag")
    a = ap.parse_args()
    if a.one_type and not a.tag:
        ap.error("--one-type needs --tag (its results must not overwrite the defaults' file)")
    overrides = {k: v for k, v in (("finetune", a.finetune), ("finetune_lr", a.finetune_lr)) if v is not None}
    overrides.update(a.train)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    for name in (list(SETS) if "all" in a.sets else a.sets):
        res = run_set(name, a.seeds, a.ablation, a.budget, a.threads, a.rehearse, overrides, a.model,
                      not a.no_baselines, types=not a.one_type)
        res["command"] = "benchmarks/quality.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        rows = {f"{k} (mean of {len(v['seeds'])})": v["mean"] for k, v in res["models"].items()}
        base = res["baselines"] or {}
        print(f"\n{name} ({res['protocol']})\n" + metrics_table({**rows, **base}))
        print(metrics_table({**rows, **base}, ("Precision@10", "F1@10", "Precision@20", "F1@20", "AUC")))
        for label, v in res["models"].items():
            print(f"{label}: " + ", ".join(f"seed {sd}: NDCG@10 {r['NDCG@10']:.4f} HR@10 {r['HR@10']:.4f} "
                                           + (f"[before fine-tune: NDCG@10 {r['test_before_finetune']['NDCG@10']:.4f} "
                                              f"HR@10 {r['test_before_finetune']['HR@10']:.4f}] "
                                              if "test_before_finetune" in r else "")
                                           + f"(valid NDCG@10 {r['valid_NDCG@10']:.4f} HR@10 {r['valid_HR@10']:.4f}; "
                                           f"{r['train_seconds']:.0f} s, "
                                           f"best epoch {r['best_epoch']}, then {r['finetune_epochs']} fine-tune epochs)"
                                           for sd, r in zip(v["seeds"], v["runs"])))
        suffix = ("-rehearse" if a.rehearse else "") + (f"-{a.tag}" if a.tag else "")
        (results / f"quality-{name}{suffix}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
