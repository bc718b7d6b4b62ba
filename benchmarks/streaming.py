"""Streaming performance against a real Kafka broker (BENCHMARKS.md, "Streaming performance"; issue 13).

    ./run python benchmarks/streaming.py                         # ml-100k + Beauty-sized, both guarantees
    ./run python benchmarks/streaming.py --batch-max 256 --batch-wait 1       (flags for the worker)
    ./run python benchmarks/streaming.py --events 6000 --epochs 1 --no-recovery --rates 0.5 \\
        --rate-seconds 10 --ceiling-seconds 1 --ceiling-repeats 2 --large-bundle B --large-events 6000 \\
        --out benchmarks/results/streaming-dev.json                              (a short trial, ~3 min)

Run it from a separate worktree of the commit to measure, so that edits in the working clone cannot
reach a run midway (the environment's editable install points at the clone). The streamrec.*
namespace maps onto the top-level folders, so PYTHONPATH gets a folder whose streamrec/ links them:
    PY=$(./run env)/bin/python; DATA=$PWD/../shared/data     # in the clone (./run links the clone it runs in)
    git worktree add /tmp/wt HEAD && mkdir -p /tmp/wt-path/streamrec && \
      for p in model export streams cli; do ln -sfn /tmp/wt/$p /tmp/wt-path/streamrec/$p; done
    cd /tmp/wt && STREAMREC_DATA=$DATA PYTHONPATH=/tmp/wt-path:/tmp/wt $PY benchmarks/streaming.py

Data: ml-100k (../shared/data/ml-100k/ml-100k.inter, or under $STREAMREC_DATA), else synthetic
click/browse streams (model.synth); --events N keeps the first N in time order. A small model
(dim 32, hidden 64, no attention, dot-product scores: the recipe of every earlier run, kept when
issue 12 made attention 20 and cosine scores the defaults; --model adds or overrides fields;
--epochs 2, TEMPORAL-stream) is trained and exported (k 20, m 50) unless --bundle is given. One Kafka broker (KRaft, 127.0.0.1, 8 partitions per topic) serves every run;
each run gets fresh topics, a fresh app id and a fresh RocksDB folder, and one worker process
(`streamrec worker`, ONNX Runtime 1 thread, plus --batch-max / --batch-wait / --consumer only when given).
Phases, in this order, for the main bundle (the ceiling at batch 1 before them all):

  drain      per guarantee (headline): every event is replayed into the input topics first (`streamrec
             replay --max-speed --order none`, no worker running), then the worker starts and works the
             backlog off. events/s = (records - 1) / (last - first output timestamp): records =
             recommendations + dead letters, timestamps = their Kafka record timestamps (the worker's
             producer clock), read after the drain with isolation_level=read_committed under
             exactly-once. The first output's timestamp, not the worker's ready time, starts the
             clock: ready is only seen by polling /health (0.1 s), and may come after the first
             outputs; the figure from ready (records / (last output - ready)) and the rate of the
             middle 80% of the outputs are reported beside it, and the worker process's CPU seconds
             (user + system, /proc) from ready to drained per event: steal time is not in it (events/s
             of the same code differed by up to 1.5x on a shared VM; this, by up to 1.7x over 6 drains of one
             bundle in benchmarks/results/drain-pairs-cosine-default.json). Also: the worker's micro-batch
             histogram (`batch_sizes` in GET /health: batches per power-of-two bucket; a worker
             without it steps one event at a time, batch 1 is assumed) and the bucket holding the
             median event (events per bucket estimated as batches x the bucket's mid size).
  state      after the at-least-once drain (--no-recovery skips): packed UserState bytes per user,
  recovery   the values in RocksDB; then stop that worker, delete its RocksDB folder, start it again
             with the same app id: seconds until /health says ready (state restored from the
             changelog), beside a restart with the folder kept and the first start.
  concurrent only with --concurrent: replay at max speed while the worker runs (evaluate-live
             reading), events/s from the first input to the last recommendation.
  ceiling    the bare ONNX step of the same bundle, 1 thread, tight loop (benchmarks/onnx_step.py
             rate()), at batch 1 before any worker runs (and before Kafka starts: a broker warming up,
             a worker that has just stopped, slowed it by up to 2x for a few seconds), and after the drains at
             every batch-size bucket they used (the bucket's upper bound: 256 for batches of
             129..256), plus --ceiling-batches; medians of --ceiling-repeats runs of
             --ceiling-seconds. Ratios: drain events/s / ceiling at batch 1 (the headline ratio) and
             / ceiling at the bucket holding the median event.
  latency    at-least-once, offered rates = --rates (0.1 0.5 0.9) x the at-least-once drain events/s,
             and --fixed-rates (100) events/s: the first n events (time order; Beauty: whole users,
             below; n = rate x --rate-seconds, 1,000 .. --slice) offered at that rate while the worker
             runs, by a paced producer in this process (the replay's messages, each handed over when
             its time comes, no linger unless --producer-linger-ms, acks=all: paced.paced_produce; --producer librdkafka
             (default, confluent-kafka) or aiokafka (one Python send per record, as before); the
             producer shares the 2 cores with the worker and the broker, so the cheaper the better;
             kafka-python's producer in `streamrec replay` costs the most); then `streamrec
             evaluate-live` reads the topics: p50/p95/p99 from produce time to publish time (Kafka
             record timestamps; every event of the run, the worker's first seconds included), the
             rate achieved, the batch histogram.
             Buckets first used here get their ceiling too.

Then the same for a Beauty-sized bundle (--no-large skips): ../shared/data/beauty (12,101 items,
order-only, 198,502 events; --large-source synthetic: model.synth with 12,000 items) trained on
every event, dim 32, hidden 64, --large-epochs 1 (or --large-bundle DIR); replayed: every event of
the first users up to --large-events (Beauty's clock starts every user at once, so the first
events in time order would be every user's first one; synthetic: the first in time order): drain
per --large-guarantees, ceiling, ratios, latency at --large-rates (0.5) of its drain rate and at
--fixed-rates.

Prints a table; writes benchmarks/results/streaming.json (--out): per bundle ("main", "large") its
data, bundle, drain runs (with the batch histogram and /health at the end), ceiling by batch, ratio,
fixed_rate runs and a summary; the command line, the options, and the machine's core count and
load averages at start, end and around every run (other processes on the machine make timings
noisy). A full run takes about 15-25 minutes on this 2-core machine: training ~1 + ~2.5 min,
drains ~1-2 min each (preload included; 4 of them), recovery ~1 min, ceilings ~1 min per bundle,
latency runs up to ~75 s each (6 of them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from streaming_report import table
from streaming_runs import SHORT, Bench, Processes, loadavg, say
from streaming_state import packed_state_bytes, recovery

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMREC_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_DATA = DATA / "ml-100k" / "ml-100k.inter"
BEAUTY = DATA / "beauty" / "Beauty.txt"
RESULTS = ROOT / "benchmarks" / "results"
# the recipe of every earlier run (benchmarks/results/streaming*.json): issue 12 changed the defaults under it
MODEL_KW = {"dim": 32, "hidden": 64, "attention": 0, "cosine": 0.0}


@dataclasses.dataclass
class Session:
    """What every phase needs: the options, the work folder, the results document and its saving."""

    a: argparse.Namespace
    work: Path
    doc: dict
    out_path: Path
    started: float

    def save(self) -> None:
        self.doc["total_seconds"] = round(time.monotonic() - self.started, 1)
        self.doc["machine"]["loadavg_end"] = loadavg()
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.out_path.write_text(json.dumps(self.doc, indent=2, default=str) + "\n")

    def failed(self, step: str, exc: BaseException) -> None:
        say(f"FAILED {step}: {exc}")
        self.doc["errors"].append({"step": step, "error": str(exc), "traceback": traceback.format_exc()})
        self.save()


# ---- data and bundles -----------------------------------------------------------------------
def first_events(events: list, n: int | None) -> list:
    """The first ``n`` events in time order (stable), or all."""
    return sorted(events, key=lambda e: e.ts)[:n] if n and n < len(events) else events


def first_users(events: list, n: int | None) -> list:
    """Every event of the first users (in the data's order) up to ``n`` events, or all. For order-only
    data, whose clock starts every user at the same time: the first events in time order would be
    every user's first few, and `streamrec evaluate-live` finds no event before its cutoff."""
    if not n or n >= len(events):
        return events
    by_user: dict[str, list] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    out: list = []
    for evs in by_user.values():
        out += evs
        if len(out) >= n:
            break
    return out[:n]


def csv_flags(events: list, path: Path) -> list[str]:
    from streamrec.model.synth import CSV_COLUMNS, write_csv

    return ["--data", str(write_csv(events, path)), "--format", "csv", "--columns", CSV_COLUMNS]


def describe(events: list) -> dict:
    return {"events": len(events), "users": len({e.user_id for e in events}),
            "items": len({e.item_id for e in events}), "event_types": dict(Counter(e.event_type for e in events))}


def synthetic(want: int, items: int) -> tuple[list, dict]:
    """Synthetic click/browse events (model.synth, seed 0), at least ``want`` of them."""
    from streamrec.model.synth import SynthConfig, generate

    users = math.ceil(want / 30)  # ~36 events per synthetic user on average
    while True:
        events = generate(SynthConfig(users=users, items=items, seed=0))
        if len(events) >= want:
            return events, {"source": "synthetic (model.synth)", "users": users, "items": items, "seed": 0}
        users = math.ceil(users * want / len(events) * 1.05)


def load_data(a: argparse.Namespace, work: Path) -> tuple[list, list[str], dict]:
    """The main events, the --data/--format flags the CLI commands get, and a description."""
    from streamrec.model.data import load

    if a.data:
        path, fmt = Path(a.data), a.fmt
        events = load(path, fmt, columns=a.columns, sep=a.sep)
        flags = ["--data", str(path), "--format", fmt, *(["--columns", a.columns] if a.columns else []),
                 *(["--sep", a.sep] if a.sep else [])]
        info = {"source": str(path), "format": fmt}
    elif DEFAULT_DATA.exists():
        events = load(DEFAULT_DATA, "recbole")
        flags = ["--data", str(DEFAULT_DATA), "--format", "recbole"]
        info = {"source": str(DEFAULT_DATA), "format": "recbole", "name": "ml-100k"}
    else:
        events, info = synthetic(a.events or 100_000, 2000)
        flags = []
    if a.events and a.events < len(events):
        events, flags = first_events(events, a.events), []
        info["truncated_to"] = a.events
    if not flags:
        flags = csv_flags(events, work / "events.csv")
    info.update(describe(events))
    return events, flags, info


def large_data(a: argparse.Namespace, work: Path) -> tuple[list, list, list[str], dict]:
    """The Beauty-sized data: every event (to train on), the first --large-events (to replay), their flags."""
    from streamrec.model.data import load

    if a.large_source == "beauty":
        events = load(BEAUTY, "sequences")
        info = {"source": str(BEAUTY), "format": "sequences", "name": "beauty",
                "clock": "order only: a user's k-th event at a fixed base + k s (model.data)"}
    else:
        events, info = synthetic(a.large_events or 100_000, 12_000)
    info["trained_on"] = describe(events)
    if a.large_source == "beauty":
        replayed = first_users(events, a.large_events)
        info["replayed"] = "every event of the first users (file order), the last user cut at --large-events"
    else:
        replayed = first_events(events, a.large_events)
        info["replayed"] = "the first --large-events events in time order"
    if len(replayed) < len(events):
        info["truncated_to"] = a.large_events
    info.update(describe(replayed))
    return events, replayed, csv_flags(replayed, work / "large-events.csv"), info


def train_bundle(events: list, out: Path, epochs: int, name: str, model_kw: dict | None = None) -> tuple[Path, dict]:
    """Train the small model (``MODEL_KW``, TEMPORAL-stream; ``model_kw``: other LSTMConfig fields) on
    ``events``; export it (k 20, m 50)."""
    model_kw = model_kw or {}
    from streamrec.export.onnx_export import export_bundle
    from streamrec.model import checkpoint
    from streamrec.model.config import TrainConfig
    from streamrec.model.pipeline import train

    la, t0 = loadavg(), time.monotonic()
    run_dir, bundle_dir = out / "model", out / "bundle"
    doc = train(events, "temporal", run_dir, {**MODEL_KW, **model_kw}, TrainConfig(epochs=epochs), {"name": name},
                progress=False, with_baselines=False)
    train_s = time.monotonic() - t0
    export_bundle(checkpoint.load(run_dir), bundle_dir, k=20, m=50)
    return bundle_dir, {"bundle": str(bundle_dir), "trained": True, "train_seconds": round(train_s, 1),
                        "export_seconds": round(time.monotonic() - t0 - train_s, 1), "epochs": epochs,
                        "model_kw": {**MODEL_KW, **model_kw}, "offline_test": doc.get("model"), "loadavg_before": la,
                        "loadavg_after": loadavg()}


def bundle_info(bundle_dir: Path, info: dict) -> dict:
    from streamrec.export.manifest import Manifest

    mf = Manifest.from_json((bundle_dir / "manifest.json").read_text())
    return {**info, "model_version": mf.model_version, "n_items": mf.n_items, "layers": mf.layers,
            "hidden": mf.hidden, "k": mf.k, "m": mf.m}




# ---- ceiling --------------------------------------------------------------------------------
def ceiling(bundle_dir: Path, batches, a: argparse.Namespace, into: dict | None = None) -> dict:
    """The bare ONNX step (benchmarks/onnx_step.py rate(), 1 thread) at each batch size not in ``into`` yet."""
    from streamrec.export.runtime import Bundle

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from onnx_step import rate  # the same loop as the ceiling benchmark

    out = into if into is not None else {"threads": 1, "seconds": a.ceiling_seconds, "repeats": a.ceiling_repeats,
                                         "by_batch": {}, "loadavg": []}
    todo = sorted({int(b) for b in batches} - {int(b) for b in out["by_batch"]})
    if not todo:
        return out
    bundle, la = Bundle.load(bundle_dir, threads=1), loadavg()
    for batch in todo:
        runs = rate(bundle, batch, a.ceiling_seconds, a.ceiling_repeats)
        med = statistics.median(runs)
        out["by_batch"][str(batch)] = {"events_per_s": med, "runs": runs, "us_per_step": 1e6 * batch / med}
        say(f"  ceiling batch {batch}: {med:,.0f} events/s ({1e6 * batch / med:,.0f} us per step call)")
    out["by_batch"] = dict(sorted(out["by_batch"].items(), key=lambda kv: int(kv[0])))
    out["loadavg"].append({"batches": todo, "before": la, "after": loadavg()})
    return out


def ceiling_first(s: Session, bundle_dir: Path, sec: dict) -> None:
    """The ceiling at batch 1 before any worker runs (the main bundle's also before Kafka starts: a
    broker warming up, a worker just stopped, slowed it by up to 2x for a few seconds)."""
    say("ceiling: bare ONNX step, 1 thread, at batch 1 (no worker running)")
    try:
        sec["ceiling"] = ceiling(bundle_dir, {1}, s.a)
    except Exception as exc:  # noqa: BLE001
        s.failed(f"ceiling ({sec['name']}, batch 1)", exc)


def ratios(sec: dict) -> dict:
    """Drain events/s over the ceiling at batch 1 (the headline) and at the median event's batch bucket."""
    by = sec.get("ceiling", {}).get("by_batch", {})
    c1 = by.get("1", {}).get("events_per_s")
    out = {}
    for r in sec.get("drain", []):
        x = r.get("events_per_s")
        if not x:
            continue
        mb = r["batch_sizes"]["median_event_bucket"]
        cm = by.get(str(mb), {}).get("events_per_s")
        out[r["guarantee"]] = {"drain_events_per_s": x, "ceiling_batch1": c1, "to_batch1": x / c1 if c1 else None,
                               "median_event_bucket": mb, "ceiling_median_bucket": cm,
                               "to_median_bucket": x / cm if cm else None}
    return out


# ---- state and recovery (streaming_state.py) ---------------------------------------------------
def state_and_recovery(s: Session, bench: Bench, res: dict, worker, events: list) -> None:
    g = res["guarantee"]
    say(f"state and recovery ({g}): stop the worker, delete its RocksDB folder, start it again")
    rec = recovery(bench, res["label"], g, worker, events, res["worker_ready_s"])
    s.doc.setdefault("state", {}).update(rocksdb=rec.pop("rocksdb"), guarantee=g, after="drain")
    s.doc["recovery"] = rec
    say(f"  ready in {rec['ready_s']:.1f} s (restart with its folder kept {rec['restart_with_state_ready_s']:.1f} s), "
        f"{rec.get('changelog', {}).get('records')} changelog records; restored state ok: {rec['restored_state_ok']}")


# ---- phases of one bundle ---------------------------------------------------------------------
def drains(s: Session, bench: Bench, sec: dict, flags: list[str], guarantees: list[str],
           recovery_events: list | None) -> None:
    """The headline: a preloaded backlog drained, per guarantee (state and recovery after at-least-once)."""
    sec["drain"] = []
    for g in guarantees:
        label = f"{SHORT[g]}-drain"
        say(f"drain, {g}: {sec['data']['events']:,} events preloaded")
        with_recovery = recovery_events is not None and g == "at-least-once"
        try:
            res, worker, _ = bench.drain(label, g, flags, keep=with_recovery)
            sec["drain"].append(res)
            s.save()
            if with_recovery:
                try:
                    state_and_recovery(s, bench, res, worker, recovery_events)
                except Exception as exc:  # noqa: BLE001
                    s.failed(f"recovery {g}", exc)
                bench.procs.stop(worker)
        except Exception as exc:  # noqa: BLE001
            s.failed(f"drain {g} ({sec['name']})", exc)
        s.save()


def concurrent(s: Session, bench: Bench, sec: dict, flags: list[str], guarantees: list[str]) -> None:
    """Replay at max speed while the worker runs (the figure before issue 13; --concurrent)."""
    sec["max_speed"] = []
    for g in guarantees:
        say(f"replay while the worker runs, max speed, {g}")
        try:
            sec["max_speed"].append(bench.live_run(f"{SHORT[g]}-max", g, flags, None))
        except Exception as exc:  # noqa: BLE001
            s.failed(f"max speed {g} ({sec['name']})", exc)
        s.save()


def used_buckets(runs: list[dict]) -> set[int]:
    return {1} | {b for r in runs for b in r.get("batch_sizes", {}).get("buckets_used", [1])}


def latency(s: Session, bench: Bench, sec: dict, events: list, shares: list[float], fixed: list[float],
            slicer=first_events) -> None:
    """Latency at offered rates: shares of the at-least-once drain rate, and fixed rates (events/s);
    each run replays ``slicer(events, n)``."""
    a, g = s.a, "at-least-once"
    base = next((r for r in sec.get("drain", []) if r["guarantee"] == g and r.get("events_per_s")), None)
    if shares and base is None:
        s.failed(f"latency ({sec['name']})", RuntimeError(f"no {g} drain rate: the shares {shares} are skipped"))
        shares = []
    top = base["events_per_s"] if base else None
    targets = sorted([(x * top, x, None) for x in shares] + [(float(r), None, float(r)) for r in fixed])
    sec["fixed_rate"] = {"guarantee": g, "max_events_per_s": top,
                         "max_source": f"{g} drain events/s (from the first output)", "slice_max": a.slice,
                         "rate_seconds": a.rate_seconds, "runs": []}
    for target, share, fixed_rate in targets:
        n = max(1000, min(a.slice, len(events), int(target * a.rate_seconds)))
        label = f"{SHORT[g]}-r{round(share * 100)}" if share is not None else f"{SHORT[g]}-f{fixed_rate:g}"
        what = f"{share:.0%} of {top:,.0f}" if share is not None else "fixed"
        say(f"latency at {target:,.0f} events/s ({what}), {g}, the first {n:,} events")
        try:
            part = slicer(events, n)
            flags = csv_flags(part, s.work / f"slice-{bench.tag}-{n}.csv")
            res = bench.live_run(label, g, flags, target, events=part)
            res.update(share=share, fixed_rate=fixed_rate, slice_events=n)
            sec["fixed_rate"]["runs"].append(res)
        except Exception as exc:  # noqa: BLE001
            s.failed(f"latency {label} ({sec['name']})", exc)
        s.save()


def summary(sec: dict) -> dict:
    """The headline figures of one bundle, gathered from the phases' records."""
    drain = {r["guarantee"]: r for r in sec.get("drain", [])}
    return {
        "drain_events_per_s": {g: r.get("events_per_s") for g, r in drain.items()},
        "drain_worker_cpu_us_per_event": {g: r.get("wait", {}).get("cpu_us_per_event") for g, r in drain.items()},
        "ceiling_events_per_s": {b: v["events_per_s"] for b, v in sec.get("ceiling", {}).get("by_batch", {}).items()},
        "ratio_to_batch1": {g: r["to_batch1"] for g, r in sec.get("ratio", {}).items()},
        "batch_sizes": {g: r["batch_sizes"].get("counts") for g, r in drain.items()},
        "median_event_bucket": {g: r["batch_sizes"]["median_event_bucket"] for g, r in drain.items()},
        "latency_ms": [{"offered_target": r["offered_rate_target"], "share": r.get("share"),
                        **{q: r["latency_ms"].get(q) for q in ("p50", "p95", "p99")},
                        "through_events_per_s": r.get("events_per_s"), "complete": r.get("complete")}
                       for r in sec.get("fixed_rate", {}).get("runs", [])],
    }


def measure(s: Session, bench: Bench, sec: dict, events: list, flags: list[str], guarantees: list[str],
            shares: list[float], recovery_events: list | None, slicer=first_events) -> None:
    """Every phase for one bundle, into ``sec``: the ceiling at batch 1, drains (+ state/recovery), concurrent
    runs (if asked), the ceiling at the buckets used, the ratios, latency runs, ceilings of new buckets."""
    a = s.a
    if "ceiling" not in sec:
        ceiling_first(s, bench.bundle_dir, sec)
    drains(s, bench, sec, flags, guarantees, recovery_events)
    if a.concurrent:
        concurrent(s, bench, sec, flags, guarantees)
    say("ceiling: bare ONNX step, 1 thread, at the buckets the worker used")
    try:
        sec["ceiling"] = ceiling(bench.bundle_dir, used_buckets(sec["drain"]) | set(a.ceiling_batches), a,
                                 into=sec.get("ceiling"))
        sec["ratio"] = ratios(sec)
        for g, r in sec["ratio"].items():
            say(f"  {g}: drain / ceiling at batch 1 = {r['to_batch1']:.1%}")
    except Exception as exc:  # noqa: BLE001
        s.failed(f"ceiling ({sec['name']})", exc)
    s.save()
    latency(s, bench, sec, events, shares, a.fixed_rates, slicer)
    new = used_buckets(sec["fixed_rate"]["runs"]) - {int(b) for b in sec.get("ceiling", {}).get("by_batch", {})}
    if new and "ceiling" in sec:
        say(f"ceiling at the buckets first used by the latency runs: {sorted(new)}")
        try:
            ceiling(bench.bundle_dir, new, a, into=sec["ceiling"])
        except Exception as exc:  # noqa: BLE001
            s.failed(f"ceiling ({sec['name']}, latency buckets)", exc)
    sec["summary"] = summary(sec)
    s.save()


def large(s: Session, brokers: str, procs: Processes, tag: str, broker_pid: int | None = None) -> None:
    """The same figures for a Beauty-sized bundle (about 12,000 items)."""
    a = s.a
    sec = s.doc["large"] = {"name": "large"}
    t0 = time.monotonic()
    say(f"large: data ({a.large_source})")
    full, events, flags, sec["data"] = large_data(a, s.work)
    say(f"  {len(full):,} events to train on, the first {len(events):,} replayed "
        f"({sec['data']['users']:,} users, {sec['data']['items']:,} items)")
    if a.large_bundle:
        bundle_dir, info = Path(a.large_bundle).resolve(), {"bundle": str(Path(a.large_bundle).resolve()),
                                                            "trained": False}
    else:
        say(f"large: training (dim 32, hidden 64, {a.large_epochs} epoch(s)) on {len(full):,} events, exporting")
        bundle_dir, info = train_bundle(full, s.work / "large", a.large_epochs, f"bench-streaming-{a.large_source}")
    sec["bundle"] = bundle_info(bundle_dir, info)
    say(f"  {sec['bundle']['model_version']}: {sec['bundle']['n_items']:,} items "
        f"({info.get('train_seconds', 0)} s training)")
    s.save()
    bench = Bench(a, s.work, procs, brokers, bundle_dir, tag=f"{tag}-big", broker_pid=broker_pid)
    measure(s, bench, sec, events, flags, a.large_guarantees or a.guarantees, a.large_rates, None,
            first_users if a.large_source == "beauty" else first_events)
    sec["seconds"] = round(time.monotonic() - t0, 1)


# ---- main -----------------------------------------------------------------------------------
def options() -> argparse.ArgumentParser:
    from streamrec.streams.kafka_dist import INDEX_MAX_BYTES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ap.add_argument_group("data and model")
    d.add_argument("--data", help=f"data file or folder (default {DEFAULT_DATA}, else synthetic)")
    d.add_argument("--format", dest="fmt", help="its format (recbole, csv, ...)")
    d.add_argument("--columns", help="csv column mapping")
    d.add_argument("--sep", help="field separator override")
    d.add_argument("--events", type=int, help="use the first N events in time order (synthetic: at least N; "
                                              "default: all, 100k synthetic)")
    d.add_argument("--bundle", help="serve this bundle instead of training one")
    d.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    d.add_argument("--model", type=json.loads, default={}, metavar="JSON",
                   help='other LSTMConfig fields for the trained main bundle, e.g. \'{"attention": 20}\' (the '
                        "worker's cost of attending over the recent-items window)")
    r = ap.add_argument_group("runs")
    r.add_argument("--guarantees", nargs="+", choices=list(SHORT), default=list(SHORT))
    r.add_argument("--batch-max", type=int, help="pass --batch-max N to the worker (only when given)")
    r.add_argument("--batch-wait", type=float, help="pass --batch-wait MS to the worker (only when given)")
    r.add_argument("--consumer", choices=["loop", "thread"],
                   help="pass --consumer to the worker (only when given): where its Kafka consumer runs")
    r.add_argument("--rates", type=float, nargs="*", default=[0.1, 0.5, 0.9],
                   help="latency runs at these shares of the at-least-once drain rate (default 0.1 0.5 0.9)")
    r.add_argument("--fixed-rates", type=float, nargs="*", default=[100.0],
                   help="and at these offered rates, events/s (default 100)")
    r.add_argument("--producer", choices=["librdkafka", "aiokafka"], default="librdkafka",
                   help="the latency runs' paced load generator (default librdkafka: confluent-kafka, C; aiokafka: "
                        "one Python send per record, as runs before 2026-12-06; it costs the 2 cores ~3x more)")
    r.add_argument("--producer-linger-ms", type=int, default=0,
                   help="librdkafka's linger.ms for the paced generator (default 0: each record sent at once; "
                        "librdkafka's own default is 5: fewer, larger requests for the broker on the same cores; "
                        "the wait counts in the latency)")
    r.add_argument("--cold-producer", action="store_true",
                   help="the paced generator offers its first record before it has connected and read the "
                        "topics' metadata (the runs before 2026-12-07: its start-up then counts in the latency)")
    r.add_argument("--broker-config", action="append", default=[], metavar="KEY=VALUE",
                   help="a server.properties entry for the benchmark's broker, over streamrec's defaults "
                        "(repeatable; e.g. log.index.size.max.bytes=10485760, Kafka's own default; "
                        f"streamrec sets {INDEX_MAX_BYTES})")
    r.add_argument("--slice", type=int, default=60_000, help="events per latency run at most (default 60000)")
    r.add_argument("--rate-seconds", type=float, default=60.0,
                   help="events per latency run = rate x this, at least 1000 (default 60: runs of ~60 s)")
    r.add_argument("--concurrent", action="store_true",
                   help="also replay at max speed while the worker runs, per guarantee (the older throughput)")
    r.add_argument("--no-recovery", action="store_true", help="skip the state / recovery measurement")
    r.add_argument("--ceiling-seconds", type=float, default=2.0, help="seconds per ceiling run (default 2)")
    r.add_argument("--ceiling-repeats", type=int, default=3, help="ceiling runs per batch size, median (default 3)")
    r.add_argument("--ceiling-batches", type=int, nargs="*", default=[],
                   help="also time the bare step at these batch sizes (e.g. 64)")
    g = ap.add_argument_group("Beauty-sized bundle")
    g.add_argument("--no-large", action="store_true", help="skip the Beauty-sized bundle")
    g.add_argument("--large-bundle", help="serve this bundle (about 12k items) instead of training one")
    g.add_argument("--large-source", choices=["beauty", "synthetic"],
                   default="beauty" if BEAUTY.exists() else "synthetic",
                   help="its data: ../shared/data/beauty (default when present) or synthetic with 12,000 items")
    g.add_argument("--large-events", type=int, default=100_000,
                   help="replay N events (default 100000; Beauty: every event of the first users, synthetic: "
                        "the first in time order; training uses all)")
    g.add_argument("--large-epochs", type=int, default=1, help="training epochs (default 1)")
    g.add_argument("--large-guarantees", nargs="+", choices=list(SHORT), help="default: --guarantees")
    g.add_argument("--large-rates", type=float, nargs="*", default=[0.5],
                   help="latency at these shares of its at-least-once drain rate (default 0.5; plus --fixed-rates)")
    t = ap.add_argument_group("limits and output")
    t.add_argument("--ready-timeout", type=float, default=180.0, help="seconds a worker may take to be ready")
    t.add_argument("--run-timeout", type=float, default=900.0, help="seconds a replay, evaluation or drain may take")
    t.add_argument("--drain-idle", type=float, default=60.0,
                   help="give a drain up after this many seconds without progress in /health (default 60)")
    t.add_argument("--read-idle", type=float, default=30.0,
                   help="stop reading a drain's output after this many seconds without a new record (default 30)")
    t.add_argument("--workdir", help="keep everything here (default: a temporary folder, deleted unless a step failed)")
    t.add_argument("--out", default=str(RESULTS / "streaming.json"), help="results file")
    return ap


def main() -> int:
    ap = options()
    a = ap.parse_args()
    if bool(a.data) != bool(a.fmt):
        ap.error("--data and --format go together")
    if a.large_source == "beauty" and not BEAUTY.exists() and not a.no_large:
        ap.error(f"{BEAUTY} not found: pass --large-source synthetic or --no-large")
    from streamrec.streams.kafka_dist import parse_overrides

    try:
        a.broker_overrides = parse_overrides(a.broker_config)
    except ValueError as exc:
        ap.error(f"--broker-config {exc}")

    work = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="streamrec-bench-streaming-"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes(work / "logs")
    out_path = Path(a.out)
    doc: dict = {"benchmark": "streaming", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "command": "./run python " + shlex.join(sys.argv), "options": vars(a),
                 "machine": {"nproc": os.cpu_count(), "loadavg_start": loadavg(), "platform": platform.platform(),
                             "python": platform.python_version()},
                 "errors": [], "results_file": str(out_path)}
    s = Session(a, work, doc, out_path, time.monotonic())
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    broker = None
    say(f"{os.cpu_count()} cores, load average {doc['machine']['loadavg_start']}; work folder {work}")
    try:
        sec = doc["main"] = {"name": "main"}
        say("data")
        events, data_flags, sec["data"] = load_data(a, work)
        say(f"  {sec['data']['events']:,} events, {sec['data']['users']:,} users, {sec['data']['items']:,} items")
        if a.bundle:
            say(f"model: reusing {a.bundle}")
            bundle_dir, info = Path(a.bundle).resolve(), {"bundle": str(Path(a.bundle).resolve()), "trained": False}
        else:
            say(f"model: training (dim 32, hidden 64, {a.epochs} epochs{', ' + json.dumps(a.model) if a.model else ''}) "
                "and exporting (k 20, m 50)")
            bundle_dir, info = train_bundle(events, work, a.epochs, "bench-streaming", a.model)
        sec["bundle"] = bundle_info(bundle_dir, info)
        say(f"  {sec['bundle']['model_version']} ({info.get('train_seconds', 0)} s training)")
        try:
            doc["state"] = {"packed": packed_state_bytes(bundle_dir)}
        except Exception as exc:  # noqa: BLE001
            s.failed("state bytes", exc)
        s.save()
        ceiling_first(s, bundle_dir, sec)

        say("starting Kafka")
        from streamrec.streams.broker import start_broker

        broker = start_broker(name="bench-streaming", data_dir=work / "kafka", die_with_parent=True,
                              record_state=False, extra_config=a.broker_overrides)
        doc["broker"] = broker.bootstrap
        doc["broker_properties"] = dict(line.split("=", 1) for line in broker.properties.read_text().splitlines()
                                        if "=" in line and not line.startswith("#"))
        say(f"  broker at {broker.bootstrap}")
        tag = time.strftime("%H%M%S")
        bench = Bench(a, work, procs, broker.bootstrap, bundle_dir, tag=tag, broker_pid=broker.pid)
        doc["worker_flags"] = bench.worker_flags()
        measure(s, bench, sec, events, data_flags, a.guarantees, a.rates, None if a.no_recovery else events)
        if not a.no_large:
            try:
                large(s, broker.bootstrap, procs, tag, broker.pid)
            except Exception as exc:  # noqa: BLE001
                s.failed("large", exc)
    except KeyboardInterrupt:
        say("interrupted: stopping the workers and Kafka")
        doc["interrupted"] = True
        return_code = 130
    except Exception as exc:  # noqa: BLE001
        s.failed("setup", exc)
        return_code = 1
    else:
        return_code = 1 if doc["errors"] else 0
    finally:
        procs.stop_all()
        if broker is not None:
            broker.stop()
        s.save()
    print(table(doc), flush=True)
    if doc["errors"] or doc.get("interrupted") or a.workdir:
        print(f"work folder kept: {work} (logs in {work / 'logs'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return return_code


if __name__ == "__main__":
    sys.exit(main())
