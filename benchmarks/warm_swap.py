"""Warm vs cold swap of a new model version at the TEMPORAL cutoff (issue 10, "Measured, in the README").

    ./run python benchmarks/warm_swap.py                 # ml-100k; trains B (default model, ~1.5 min), ~5 min in all
    ./run python benchmarks/warm_swap.py --model small --repeats 1 --workdir /tmp/ws --out /tmp/ws.json   (~1.5 min)
    ./run python benchmarks/warm_swap.py --bundle B      # B given (trained on the events before T)

Run it from a separate worktree of the commit to measure (see benchmarks/streaming.py's docstring):
    cd /tmp/wt && STREAMREC_DATA=$DATA PYTHONPATH=/tmp/wt-path:/tmp/wt flock /tmp/bench.lock $PY benchmarks/warm_swap.py

The story: model A served ml-100k up to the TEMPORAL-stream cutoff T (90th percentile of the
timestamps); at T model B (trained on the events before T: --bundle, else trained here and exported
with k 20, m 50: the project's default model, as benchmarks/quality.py trains it, 1 torch thread,
seed 0; or with --model small the small one of benchmarks/streaming.py) takes over under its own
app id. What A published
does not enter B's figures (B has its own state table), so A is not run. Two swaps, each on fresh
topics, a fresh app id and a fresh RocksDB folder, one broker (KRaft, 127.0.0.1, 8 partitions),
repeated --repeats times (3) side by side, cold then warm:

  cold  the events before T are replayed into the input topics (a CSV of only those events,
        `streamrec replay --order none --max-speed`), then worker B starts with `--warm-from
        <epoch ms now>`: nothing in the topics is at or after that time, so it plans no warm-up and
        starts at the end of the topics with empty states.
  warm  the same, with `--warm-from earliest`: B steps every event already in the topics (the
        history before T) without publishing, then serves.

Once B is ready (cold) or its /health says counts.warmed = the number of events before T (warm),
the worker is paused (SIGSTOP), the events at/after T are replayed (`--cutoff temporal` of the whole
file, max speed) and the worker is resumed (SIGCONT), so it works them off as a backlog (--live
replays while it runs instead). Every ml-100k event has one type, so all go to one topic and a
user's events keep their order within a partition: --order none is exact here (checked). Event ids
are "<user>:<index in the user's time-sorted history>": the CSV of the events before T gives them
the ids they have in the whole file (checked: the ids, users, items and times of both replays equal
those of one replay of the whole file). The recommendations topic is read back
(streams/live_collect.py `collect`; streams/live_eval.py `LiveLog`, `live_ranks`).

Scoring (TEMPORAL-stream, as `streamrec evaluate-live`): a target (every event at/after T of a user
with an event before T) is scored against the list the worker published for the user's previous
event. For a user's first event after the swap, that previous event is from before the swap, and
B published nothing for it (the warm-up publishes nothing; the cold worker never saw it): those
"first-post-swap targets" are counted apart (`first_post_swap_targets`) and left out of the
figures. The figures cover the other targets, "after the user's first post-swap event" (N =
`targets_scored`):

  cold               live HR/NDCG/MRR@10 (and @20) of the cold worker;
  warm               the same for the warm worker;
  offline B, full    B stepped offline over every user's whole history (export/bundle_eval.py
                     `bundle_ranks`, serving rule: the last m seen items dropped, as the worker does)
                     on exactly those targets: warm must equal it target by target, in every run
                     (`checks.warm_equals_offline`: ranks compared one by one, not just the means;
                     a rank below k counts as a miss, as the published list holds k items);
  offline B, post-T  B stepped offline over each user's events at/after T only, i.e. what the cold
                     worker saw: cold should equal it (`checks.cold_equals_offline_post_swap`).

The serving rule is what the worker publishes; the README's "Offline quality" tables use the
history rule (every seen item masked), which on ml-100k, whose users have rated hundreds of
movies, gives about twice the HR@10 of the same model (`offline_B_all_targets_full_history` is the
serving-rule figure on every target, as `streamrec evaluate --bundle` gives it).

Also, for cold and warm (and both offline references): the figures over the targets among the
first N events after the swap in time order (N = 1,000, 2,000, 5,000, all: "the first N events
after the swap" of the issue; `first_n_events_after_swap`), and HR@10 by the number of the user's
own events after the swap before the target (1, 2, 3-5, 6-10, 11-20, >20), which says how long
cold lags (`hr10_by_post_swap_events_before_target`; the PNG next to --out plots it).

The cost of warming (warm run): `/health` is polled every --poll s (0.05) from the worker's launch;
seconds per million events = 1e6 x (t_done - t_first) / (warmed_done - warmed_first), where t_first
is the first poll that saw counts.warmed > 0 (warmed_first the count then) and t_done the first poll
that saw counts.warmed = the history. Beside it: the whole span from launch and from /ready to
t_done, and the same worker's serving drain rate (recommendations / (last - first output record
timestamp)) over the events after T, for both runs: only 10,000 events on ml-100k, about a second,
so a rough figure. `timing` holds the medians over the runs.

Writes --out (benchmarks/results/warm-swap.json) with the command, options, load averages around
each run, the data, the bundle, both runs (replays, warm plan as the worker logged it, health
counts, trajectory, figures) and the checks; prints a table. Exit 1 when a check fails (the
work folder is then kept, with every process's log).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from streaming import DATA, MODEL_KW, bundle_info, csv_flags, train_bundle
from streaming_runs import Bench, Processes, cli, done_count, health, loadavg, say

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = DATA / "ml-100k" / "ml-100k.inter"
RESULTS = ROOT / "benchmarks" / "results"
KS = (10, 20)
BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 10**9))


# ---- data -----------------------------------------------------------------------------------------
def prepare_data(a: argparse.Namespace, work: Path) -> dict:
    """Events, split, the pre-T CSV and its flags, the post-T flags; checks that ids line up."""
    from streamrec.model.data import load
    from streamrec.model.splits import split
    from streamrec.model.synth import CSV_COLUMNS
    from streamrec.streams.replay_plan import Topics, plan

    events = load(a.data, a.fmt)
    sp = split(events, "temporal")
    t = sp.cutoff_ts
    pre = [e for e in events if e.ts < t]  # file order kept: per-user ties stay in order
    pre_flags = csv_flags(pre, work / "before-cutoff.csv")
    full_flags = ["--data", str(a.data), "--format", a.fmt]
    # the ids, users, items and times each replay sends, against one replay of the whole file
    whole = [(m.event_id, m.key, m.value) for m in plan(events, Topics())]
    got_pre = [(m.event_id, m.key, m.value) for m in plan(load(pre_flags[1], "csv", columns=CSV_COLUMNS), Topics())]
    got_post = [(m.event_id, m.key, m.value) for m in plan(events, Topics(), from_ts=t)]
    ids_ok = got_pre + got_post == whole
    topics = {m.topic for m in plan(events, Topics())}
    if len(topics) != 1:
        raise SystemExit(f"the events go to {sorted(topics)}: --order none keeps per-user order only on one topic")
    return {"events": events, "split": sp, "cutoff_ts": t, "pre": len(pre), "post": len(events) - len(pre),
            "pre_flags": pre_flags, "post_flags": [*full_flags, "--cutoff", "temporal"], "ids_ok": ids_ok}


def train_default(events: list, work: Path) -> tuple[Path, dict]:
    """The project's default model (LSTMConfig and TrainConfig defaults, seed 0, 1 torch thread), exported k 20, m 50."""
    from streamrec.export.onnx_export import export_bundle
    from streamrec.model import checkpoint
    from streamrec.model.config import TrainConfig
    from streamrec.model.pipeline import train

    la, t0 = loadavg(), time.monotonic()
    run_dir, bundle_dir = work / "model", work / "bundle"
    doc = train(events, "temporal", run_dir, {}, TrainConfig(seed=0, threads=1), {"name": "bench-warm-swap"},
                progress=False, with_baselines=False)
    train_s = time.monotonic() - t0
    export_bundle(checkpoint.load(run_dir), bundle_dir, k=20, m=50)
    return bundle_dir, {"bundle": str(bundle_dir), "trained": True, "model": "default (LSTMConfig defaults)",
                        "train_seconds": round(train_s, 1), "best_epoch": doc.get("best_valid", {}).get("epoch"),
                        "offline_test": doc.get("model"), "loadavg_before": la, "loadavg_after": loadavg()}


# ---- one swap -------------------------------------------------------------------------------------
class Swap(Bench):
    """benchmarks/streaming_runs.Bench plus a worker started with --warm-from, watched from launch."""

    def launch(self, label: str, warm_from: str, want_warmed: int) -> tuple:
        from streamrec.streams.broker import free_port

        port, name = free_port(), f"worker-{label}"
        t0 = time.monotonic()
        proc = self.procs.start(cli("worker", "--bundle", str(self.bundle_dir), "--brokers", self.brokers,
                                    *self.topics(label), "--app-id", self.app_id(label),
                                    "--data-dir", str(self.state_dir(label)), "--web-host", "127.0.0.1",
                                    "--web-port", str(port), "--log-level", "info", "--warm-from", warm_from), name)
        ready_s = first = done = None
        trajectory: list[tuple[float, int]] = []  # (seconds since launch, counts.warmed), on change
        while time.monotonic() - t0 < self.a.ready_timeout + self.a.run_timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited ({proc.returncode}):\n{self.procs.tail(name)}")
            h = health(port)
            now = time.monotonic() - t0
            if h:
                if ready_s is None and h.get("ready"):
                    ready_s = now
                warmed = int(h.get("counts", {}).get("warmed", 0))
                if not trajectory or trajectory[-1][1] != warmed:
                    trajectory.append((round(now, 3), warmed))
                if warmed > 0 and first is None:
                    first = (now, warmed)
                if warmed >= want_warmed and ready_s is not None:
                    done = (now, warmed)
                    break
            time.sleep(self.a.poll)
        if done is None:
            self.procs.stop(proc)
            raise RuntimeError(f"worker {name}: not ready / warmed in time:\n{self.procs.tail(name)}")
        return proc, port, {"ready_s": round(ready_s, 3), "first": first, "done": done, "trajectory": trajectory}

    def wait_served(self, proc, port: int, want: int) -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.a.run_timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited ({proc.returncode}):\n{self.procs.tail(proc.name)}")
            h = health(port)
            if (done_count(h) or 0) >= want:
                return h
            time.sleep(0.2)
        raise RuntimeError(f"the worker answered {done_count(health(port))} of {want} events in time")


def warm_cost(w: dict, history: int) -> dict:
    """Seconds per million warm-up events from the /health trajectory (see the module docstring)."""
    (t1, n1), (t2, n2) = w["first"], w["done"]
    out = {"history_events": history, "first_seen": {"s": round(t1, 3), "warmed": n1},
           "done_seen": {"s": round(t2, 3), "warmed": n2}, "poll_s": None,
           "definition": "1e6 x (t_done - t_first) / (warmed_done - warmed_first); t = first /health poll that saw "
                         "warmed > 0 / warmed = history"}
    if n2 > n1 and t2 > t1:
        out["s_per_million"] = 1e6 * (t2 - t1) / (n2 - n1)
        out["events_per_s"] = (n2 - n1) / (t2 - t1)
    out["from_launch"] = {"s": round(t2, 3), "s_per_million": 1e6 * t2 / history}
    out["from_ready"] = {"s": round(t2 - w["ready_s"], 3), "s_per_million": 1e6 * (t2 - w["ready_s"]) / history}
    return out


def serve_rate(log) -> dict:
    ts = np.sort(np.array([o.timestamp for o in log.outputs.values()], dtype=np.int64))
    if ts.size < 2:
        return {"recommendations": int(ts.size)}
    span = max(int(ts[-1] - ts[0]), 1) / 1000
    return {"recommendations": int(ts.size), "seconds": span, "events_per_s": (ts.size - 1) / span,
            "definition": "(recommendations - 1) / (last - first output record timestamp)"}


def timing(runs: list[dict]) -> dict:
    """Medians over the runs: warm-up seconds per million events, serving drain events/s per mode."""
    def med(xs: list) -> float | None:
        xs = [x for x in xs if x is not None]
        return float(np.median(xs)) if xs else None

    warm = [r["warm_up"] for r in runs if r.get("warm_up")]
    out = {"warm_up_s_per_million": {"median": med([w.get("s_per_million") for w in warm]),
                                     "runs": [w.get("s_per_million") for w in warm]},
           "warm_up_events_per_s": {"median": med([w.get("events_per_s") for w in warm])},
           "warm_up_s_per_million_from_launch": {"median": med([w["from_launch"]["s_per_million"] for w in warm])},
           "serving_drain_events_per_s": {}}
    for mode in sorted({r["mode"] for r in runs}):
        xs = [r.get("serve", {}).get("events_per_s") for r in runs if r["mode"] == mode]
        out["serving_drain_events_per_s"][mode] = {"median": med(xs), "runs": xs}
    return out


def one_swap(a, bench: Swap, d: dict, mode: str, run: int = 0) -> tuple[dict, object]:
    """One swap (cold or warm): replay before T, start B, replay at/after T, read back. (figures, LiveLog)"""
    from streamrec.streams.live_collect import collect
    from streamrec.streams.live_eval import LiveLog
    from streamrec.streams.replay import Topics, event_id

    label = f"{mode}{run}"
    res = {"mode": mode, "run": run, "loadavg_before": loadavg(), "app_id": bench.app_id(label)}
    say(f"{mode} (run {run + 1}): replaying the {d['pre']:,} events before T (no worker running)")
    res["replay_before"], _ = bench.replay(label, d["pre_flags"], None)
    if res["replay_before"]["sent"] != d["pre"]:
        raise RuntimeError(f"{res['replay_before']['sent']} of {d['pre']} events before T sent")
    time.sleep(0.05)
    warm_from = "earliest" if mode == "warm" else str(int(time.time() * 1000))
    res["warm_from"] = warm_from
    res["loadavg_before_worker"] = loadavg()
    proc, port, w = bench.launch(label, warm_from, d["pre"] if mode == "warm" else 0)
    try:
        res["worker"] = w
        plan_line = [x for x in bench.procs.tail(f"worker-{label}", 400).splitlines() if "warm-up from" in x]
        res["warm_plan_log"] = plan_line[-1].strip() if plan_line else None
        if mode == "warm":
            res["warm_up"] = warm_cost(w, d["pre"])
            res["warm_up"]["poll_s"] = a.poll
            say(f"  warmed {w['done'][1]:,} events; {fmt(res['warm_up'].get('s_per_million'), ',.1f')} s per million "
                f"({fmt(res['warm_up'].get('events_per_s'))} events/s between the first and the last poll)")
        else:
            say(f"  ready in {w['ready_s']:.1f} s, counts.warmed = {w['done'][1]}")
        h0 = health(port)
        res["health_before_serving"] = h0.get("counts")
        if not a.live:
            os.killpg(proc.pid, signal.SIGSTOP)  # the events after T wait as a backlog
        try:
            say(f"  replaying the {d['post']:,} events at/after T{'' if a.live else ' (worker paused)'}")
            res["replay_after"], _ = bench.replay(label, d["post_flags"], None)
        finally:
            if not a.live:
                os.killpg(proc.pid, signal.SIGCONT)
        h = bench.wait_served(proc, port, d["post"])
        res["health_after"] = {"counts": h.get("counts"), "rejected": h.get("rejected")}
        res["loadavg_after"] = loadavg()
        sp = d["split"]
        log = LiveLog([event_id(u, p) for u, p in sp.test])
        collect(bench.brokers, Topics(clicks=bench.topic(label, "clicks"), browses=bench.topic(label, "browses"),
                                      output=bench.topic(label, "recs"), dlq=bench.topic(label, "dlq")),
                log, timeout=a.read_idle, progress=False)
        res["serve"] = serve_rate(log)
        res["read"] = {"inputs": len(log.inputs), "recommendations": len(log.outputs),
                       "duplicates": log.counts["duplicates"], "dead_letters": len(log.rejected),
                       "model_versions": dict(log.model_versions)}
        say(f"  {len(log.outputs):,} recommendations read ({log.counts['duplicates']} duplicates, "
            f"{len(log.rejected)} dead letters); serving drain {fmt(res['serve'].get('events_per_s'))} events/s")
    finally:
        bench.procs.stop(proc)
    return res, log


# ---- scoring --------------------------------------------------------------------------------------
def metrics(ranks: np.ndarray) -> dict:
    from streamrec.model.metrics import summarize

    m = summarize(ranks, None, KS)
    return {k: v for k, v in m.items() if k.split("@")[0] in ("HR", "NDCG", "MRR") or k == "n_targets"}


def offline_ranks(bundle, sp, after: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """B offline on ``after``: over each user's whole history, and over the events at/after T only."""
    from streamrec.export.bundle_eval import bundle_ranks
    from streamrec.model.encode import build_targets, encode_all

    m = bundle.manifest.m
    enc = encode_all(sp.sequences, bundle.items, bundle.types)
    full = bundle_ranks(bundle, enc, build_targets(enc, after, m))
    post_seqs = {u: sp.sequences[u][sp.train_len[u]:] for u in {u for u, _ in after}}
    enc_post = encode_all(post_seqs, bundle.items, bundle.types)
    post = bundle_ranks(bundle, enc_post, build_targets(enc_post, [(u, p - sp.train_len[u]) for u, p in after], m))
    return full, post


def listed(ranks: np.ndarray, k: int) -> np.ndarray:
    """Ranks as a published list of k items gives them: a target ranked below k is a miss (offline ranks
    go down to k + m, the graph's list; every figure at K <= k is the same either way)."""
    from streamrec.model.metrics import MISS

    return np.where(ranks <= k, ranks, MISS)


def by_bucket(ranks: dict[str, np.ndarray], since_swap: np.ndarray) -> list[dict]:
    out = []
    for lo, hi in BUCKETS:
        sel = (since_swap >= lo) & (since_swap <= hi)
        if sel.any():
            out.append({"post_swap_events_before": f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"),
                        "targets": int(sel.sum()),
                        **{f"HR@10 {k}": float((r[sel] <= 10).mean()) for k, r in ranks.items()}})
    return out


def live_result(log, d: dict, bundle) -> tuple[np.ndarray, dict]:
    """One run's live ranks on the targets after the user's first post-swap event, and its counts."""
    from streamrec.streams.live_eval import live_ranks
    from streamrec.streams.replay import event_id

    sp = d["split"]
    after_mask = np.array([p > sp.train_len[u] for u, p in sp.test])
    r, st = live_ranks(log, sp, bundle.items)
    # B published nothing for a first-post-swap target's previous event (before T): no list, no rank
    first = [(u, p) for (u, p), keep in zip(sp.test, after_mask) if not keep]
    return listed(r[after_mask], bundle.k), {
        **dict(st),
        "first_post_swap_targets_with_a_list": sum(1 for u, p in first if log.output_of(event_id(u, p - 1)) is not None),
        "events_before_T_answered": sum(1 for c, rec in log.inputs.items() if rec.ts < d["cutoff_ts"] and c in log.outputs),
        "events_after_T_unanswered": sum(1 for c, rec in log.inputs.items()
                                         if rec.ts >= d["cutoff_ts"] and c not in log.outputs)}


def score(doc: dict, d: dict, lives: dict, bundle) -> bool:
    """The figures and checks from every run's ``live_result`` (``lives``: mode -> list of them)."""
    from streamrec.streams.replay import event_id
    from streamrec.streams.replay_plan import Topics, plan

    sp = d["split"]
    after_mask = np.array([p > sp.train_len[u] for u, p in sp.test])
    after = [t for t, keep in zip(sp.test, after_mask) if keep]
    say(f"scoring: {len(sp.test):,} targets, {int(after_mask.sum()):,} after the user's first post-swap event, "
        f"{int((~after_mask).sum()):,} first-post-swap targets")
    full, post = (listed(r, bundle.k) for r in offline_ranks(bundle, sp, after))
    ranks = {"offline B, full history": full, "offline B, post-T history only": post}
    checks, stats, reference = {}, {}, {"warm": full, "cold": post}
    for mode, runs in lives.items():
        stats[mode], differing = [], []
        for i, (r, st) in enumerate(runs):
            if i == 0:
                ranks[mode] = r
            diff = np.flatnonzero(r != reference[mode])
            differing.append({"run": i, "targets_differing": int(diff.size),
                              "first_differences": [{"target": after[j], mode: int(r[j]),
                                                     "offline": int(reference[mode][j])} for j in diff[:10]]})
            stats[mode].append(st)
        name = "warm_equals_offline" if mode == "warm" else "cold_equals_offline_post_swap"
        checks[name] = {"ok": all(x["targets_differing"] == 0 for x in differing), "runs": differing,
                        "compared": "ranks target by target (a rank below the list's k counts as a miss)"}
        checks[f"{mode}_clean"] = {"ok": all(st.get("order_violations", 0) == 0 and st.get("targets_unanswered", 0) == 0
                                             and st["events_before_T_answered"] == 0
                                             and st["events_after_T_unanswered"] == 0
                                             and st["first_post_swap_targets_with_a_list"] == 0
                                             for st in stats[mode]), "runs": stats[mode]}
    checks["event_ids_line_up"] = {"ok": d["ids_ok"]}
    since_swap = np.array([p - sp.train_len[u] for u, p in after])
    order = {m.event_id: i for i, m in enumerate(plan(d["events"], Topics(), from_ts=d["cutoff_ts"]))}
    place = np.array([order[event_id(u, p)] for u, p in after])  # the target's place among the events after T
    doc["scores"] = {
        "rule": "a target is scored against the list B published for the user's previous event; first-post-swap "
                "targets (previous event before T) have none and are counted apart",
        "targets": len(sp.test), "targets_scored": len(after), "first_post_swap_targets": int((~after_mask).sum()),
        "users_with_targets": len({u for u, _ in sp.test}),
        "metrics": {k: metrics(v) for k, v in ranks.items()},
        "offline_B_all_targets_full_history": offline_all(bundle, sp),
        "hr10_by_post_swap_events_before_target": by_bucket(ranks, since_swap),
        "first_n_events_after_swap": [{"first_events": n, "targets_scored": int((place < n).sum()),
                                       **{k: {m: v for m, v in metrics(r[place < n]).items() if m.endswith("@10")}
                                          for k, r in ranks.items()}}
                                      for n in (1000, 2000, 5000, d["post"]) if (place < n).any()],
        "live_stats": stats,
    }
    doc["checks"] = checks
    return all(c["ok"] for c in checks.values())


def offline_all(bundle, sp) -> dict:
    """B offline on every target (the first-post-swap ones included), full history: `streamrec evaluate --bundle`."""
    from streamrec.export.bundle_eval import bundle_ranks
    from streamrec.model.encode import build_targets, encode_all

    enc = encode_all(sp.sequences, bundle.items, bundle.types)
    return metrics(bundle_ranks(bundle, enc, build_targets(enc, sp.test, bundle.manifest.m)))


# ---- report ---------------------------------------------------------------------------------------
def fmt(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def table(doc: dict) -> str:
    s = doc.get("scores")
    lines = []
    if s:
        lines += [f"ml-100k TEMPORAL-stream, swap to B at T: {s['targets_scored']:,} targets after the user's first "
                  f"post-swap event ({s['first_post_swap_targets']:,} first-post-swap targets apart)",
                  f"{'':34} {'HR@10':>7} {'NDCG@10':>8} {'MRR@10':>7} {'HR@20':>7} {'N':>6}"]
        for k, m in s["metrics"].items():
            lines.append(f"{k:34} {m['HR@10']:7.4f} {m['NDCG@10']:8.4f} {m['MRR@10']:7.4f} {m['HR@20']:7.4f} "
                         f"{m['n_targets']:6,}")
        lines.append("HR@10 by post-swap events before the target: " + "; ".join(
            f"{b['post_swap_events_before']} ({b['targets']}): cold {b['HR@10 cold']:.3f} warm {b['HR@10 warm']:.3f}"
            for b in s["hr10_by_post_swap_events_before_target"] if "HR@10 cold" in b and "HR@10 warm" in b))
        for w in s.get("first_n_events_after_swap", []):
            lines.append(f"first {w['first_events']:,} events after the swap ({w['targets_scored']:,} targets): " + "; ".join(
                f"{k} HR@10 {w[k]['HR@10']:.4f} NDCG@10 {w[k]['NDCG@10']:.4f}" for k in ("cold", "warm") if k in w))
    t = doc.get("timing")
    if t:
        wu = t["warm_up_s_per_million"]
        lines.append(f"warm-up: {fmt(wu['median'], ',.1f')} s per million events (median of "
                     f"{', '.join(fmt(x, ',.1f') for x in wu['runs'])}; {fmt(t['warm_up_events_per_s']['median'])} "
                     f"events/s; from the worker's launch {fmt(t['warm_up_s_per_million_from_launch']['median'], ',.1f')})")
        lines.append("serving drain, events/s (median): " + "; ".join(
            f"{m} {fmt(v['median'])} ({', '.join(fmt(x) for x in v['runs'])})"
            for m, v in t["serving_drain_events_per_s"].items()))
    for k, c in doc.get("checks", {}).items():
        lines.append(f"check {k}: {'ok' if c['ok'] else 'FAILED ' + json.dumps(c)[:600]}")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = doc["scores"]["hr10_by_post_swap_events_before_target"]
    names = [n for n in ("cold", "warm") if f"HR@10 {n}" in rows[0]]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, [r[f"HR@10 {n}"] for r in rows], width, label=n)
    ax.set_xticks(x, [f"{r['post_swap_events_before']}\n({r['targets']})" for r in rows])
    ax.set_xlabel("the user's events after the swap before the target (targets)")
    ax.set_ylabel("HR@10")
    ax.set_title("ml-100k, swap to B at T: HR@10 (live; each equals B offline on its history)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


# ---- main -----------------------------------------------------------------------------------------
def options() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"timestamped events (default {DEFAULT_DATA})")
    ap.add_argument("--format", dest="fmt", default="recbole", help="their format (default recbole)")
    ap.add_argument("--bundle", help="bundle B (trained before T); default: train and export a small one")
    ap.add_argument("--model", choices=["default", "small"], default="default",
                    help="without --bundle: train the project's default model (as benchmarks/quality.py, 1 torch thread, "
                         "seed 0, early stopping; ~2-3 min) or the small one of benchmarks/streaming.py (dim 32, hidden "
                         "64, --epochs)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of --model small (default 2)")
    ap.add_argument("--modes", nargs="+", choices=["cold", "warm"], default=["cold", "warm"])
    ap.add_argument("--repeats", type=int, default=3,
                    help="swaps per mode, cold and warm side by side (default 3): timings are medians; the figures "
                         "must be the same in every run (checked)")
    ap.add_argument("--live", action="store_true",
                    help="replay the events after T while the worker runs (default: paused, so they drain as a backlog)")
    ap.add_argument("--poll", type=float, default=0.05, help="seconds between /health polls (default 0.05)")
    ap.add_argument("--ready-timeout", type=float, default=180.0)
    ap.add_argument("--run-timeout", type=float, default=900.0)
    ap.add_argument("--read-idle", type=float, default=5.0,
                    help="stop reading the topics after this many seconds without a new record (default 5)")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder, deleted unless a step failed)")
    ap.add_argument("--out", default=str(RESULTS / "warm-swap.json"), help="results file (a .png beside it)")
    return ap


def main() -> int:
    from streamrec.export.runtime import Bundle
    from streamrec.streams.broker import start_broker

    a = options().parse_args()
    a.batch_max = a.batch_wait = None  # what Bench reads: the worker's defaults
    work = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="streamrec-warm-swap-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    doc: dict = {"benchmark": "warm-swap", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "command": "python " + shlex.join(sys.argv), "options": vars(a),
                 "machine": {"nproc": os.cpu_count(), "loadavg_start": loadavg(), "platform": platform.platform()},
                 "runs": [], "errors": []}
    t_start = time.monotonic()

    def save() -> None:
        doc["total_seconds"] = round(time.monotonic() - t_start, 1)
        doc["machine"]["loadavg_end"] = loadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, default=str) + "\n")

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    procs, broker, ok = Processes(work / "logs"), None, False
    say(f"{os.cpu_count()} cores, load average {doc['machine']['loadavg_start']}; work folder {work}")
    try:
        d = prepare_data(a, work)
        sp = d["split"]
        doc["data"] = {"source": a.data, "format": a.fmt, "events": len(d["events"]), "cutoff_ts": d["cutoff_ts"],
                       "cutoff_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d["cutoff_ts"] / 1000)),
                       "events_before_T": d["pre"], "events_at_or_after_T": d["post"], "targets": len(sp.test),
                       "event_ids_line_up": d["ids_ok"]}
        say(f"data: {len(d['events']):,} events, {d['pre']:,} before T, {d['post']:,} at/after, "
            f"{len(sp.test):,} targets; event ids line up: {d['ids_ok']}")
        if a.bundle:
            bundle_dir, info = Path(a.bundle).resolve(), {"bundle": str(Path(a.bundle).resolve()), "trained": False}
        elif a.model == "small":
            say(f"model B: training ({MODEL_KW}, {a.epochs} epochs, TEMPORAL-stream: events before T) and exporting")
            bundle_dir, info = train_bundle(d["events"], work, a.epochs, "bench-warm-swap")
        else:
            say("model B: training the default model (TEMPORAL-stream: events before T, 1 thread, seed 0), exporting")
            bundle_dir, info = train_default(d["events"], work)
        doc["bundle"] = bundle_info(bundle_dir, info)
        save()
        broker = start_broker(name="bench-warm-swap", data_dir=work / "kafka", die_with_parent=True,
                              record_state=False)
        doc["broker"] = broker.bootstrap
        bench = Swap(a, work, procs, broker.bootstrap, bundle_dir, tag=time.strftime("%H%M%S"))
        bundle, lives = Bundle.load(bundle_dir, threads=1), {}
        for i in range(a.repeats):  # cold and warm side by side, repeated for the timings
            for mode in a.modes:
                res, log = one_swap(a, bench, d, mode, i)
                lives.setdefault(mode, []).append(live_result(log, d, bundle))
                del log
                doc["runs"].append(res)
                doc["timing"] = timing(doc["runs"])
                save()
        ok = score(doc, d, lives, bundle)
        if "scores" in doc and len(doc["scores"]["hr10_by_post_swap_events_before_target"]):
            doc["plot"] = plot(doc, out.with_suffix(".png"))
    except KeyboardInterrupt:
        doc["interrupted"] = True
    except Exception as exc:  # noqa: BLE001
        say(f"FAILED: {exc}")
        doc["errors"].append({"error": str(exc), "traceback": traceback.format_exc()})
    finally:
        procs.stop_all()
        if broker is not None:
            broker.stop()
        save()
    print(table(doc), flush=True)
    ok = ok and not doc["errors"] and not doc.get("interrupted")
    if not ok or a.workdir:
        print(f"work folder kept: {work} (logs in {work / 'logs'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
