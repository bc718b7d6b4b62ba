"""Soak: one worker at a steady offered rate for a long time (issue 6, "Bounded resources").

    ./run python benchmarks/soak.py                          # 30 minutes at 100 events/s, at-least-once
    ./run python benchmarks/soak.py --minutes 2              # smoke run (warmup shortened to 1 minute)
    ./run python benchmarks/soak.py --bundle bundles/x --brokers 127.0.0.1:9092 --rate 150 --guarantee exactly-once
    ./run python benchmarks/soak.py --replot benchmarks/results/soak.json   # summary + plot again, no run

The claim it checks: at a rate well below the worker's capacity (about 250-400 events/s with 1
ONNX thread on a loaded 2-core machine, see benchmarks/streaming.py), the worker's memory stays
flat and its consumer lag stays bounded for the whole run.

Data: synthetic click/browse streams (model.synth, --users users, --items items, seed 0), the
first --minutes x 60 x --rate events in timestamp order: users start at random times, so the
stream keeps bringing new users while older ones come back for more sessions (the state table
grows all along, as in production). Model: unless --bundle is given, a small model (dim 32,
hidden 64, --epochs epochs, TEMPORAL-stream) is trained on the first 2,000 synthetic users (same
seed and items, so the same catalog) and exported (k 20, m 50): benchmarks/streaming.py's
make_bundle. Kafka: a private KRaft broker on 127.0.0.1 unless --brokers is given; fresh topics,
app id (consumer group) and RocksDB folder per run.

Processes: one worker (`streamrec worker`, ONNX Runtime 1 thread, 8 partitions) and one producer,
`streamrec replay --rate R --order none` (paced at a fixed offered rate; event timestamps only
order the stream, they do not pace it). This script only watches; every --sample-every seconds:

  rss        the worker's resident memory (VmRSS of its process and any children, /proc); also
             its peak (VmHWM), its thread count and, with a private broker, the broker JVM's RSS
  cpu        the worker's CPU time over the interval, % of one core (utime + stime, /proc), and the
             time its threads were runnable but waited for a core (schedstat): other jobs' share
  lag        end offsets of the input topics (KafkaConsumer.end_offsets) minus the offsets the
             worker's consumer group (its --app-id) committed (KafkaAdminClient.
             list_consumer_group_offsets), summed over the partitions; in seconds = lag / rate.
             Faust commits every ~3 s, so a few hundred events of lag are just commit granularity
  health     GET /health counters of the worker: received, emitted, rejected, duplicate ...
  rocksdb    the size of the worker's RocksDB folder (--data-dir), bytes
  produced   the sum of the input topics' end offsets (what the producer really offered)
  backlog    produced - (processed + rejected): the lag without the commit interval's granularity

After the replay ends the script keeps sampling until the worker has caught up (lag 0 and every
produced event accounted for, at most --drain-timeout seconds), then stops the worker and the
broker (also on Ctrl-C or an error: cli/processes.py).

Summary (post-warmup = samples after the first --warmup minutes, before the drain): worker RSS at
the end of warmup, median, max, end, and its slope in MB per 10 minutes (least-squares line
through the post-warmup samples, and through the last 10 minutes only); lag p50/p99/max in events and max lag in seconds; offered rate
(producer) vs achieved (emitted per second) over the post-warmup window; counters and
reconciliation (produced = processed + rejected). Writes benchmarks/results/soak.json (every
sample, the summary, the machine's core count and load averages: other jobs make timings noisy)
and benchmarks/results/soak.png (RSS and lag over time).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import RESULTS, train_bundle  # noqa: E402
from cpu_use import cpu_seconds  # noqa: E402
from streaming_runs import Bench, Processes, cli, health, loadavg, say  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN_USERS = 2000  # users the model is trained on when no --bundle is given
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---- what one sample reads --------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def proc_status(pid: int) -> dict:
    """VmRSS and VmHWM in kB and Threads of one process ({} if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(val.split()[0])
    except (OSError, ValueError):
        pass
    return out


def runq_wait_seconds(pid: int) -> float:
    """Time the threads of one process spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat,
    2nd field, ns): high when other jobs crowd the cores."""
    total = 0
    for f in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(f.read_text().split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass  # RocksDB deletes files while we walk
    return total


class Lag:
    """End offsets of the input topics and the group's committed offsets (kafka-python)."""

    def __init__(self, brokers: str, group: str, topics: list[str]):
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        servers = [b.strip() for b in brokers.split(",") if b.strip()]
        self.group, self.topics = group, topics
        self.admin = KafkaAdminClient(bootstrap_servers=servers, client_id="streamrec-soak-admin")
        self.consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                                      client_id="streamrec-soak-offsets")
        self.partitions: list = []

    def _partitions(self) -> list:
        from kafka import TopicPartition

        if len(self.partitions) == 0 or len({tp.topic for tp in self.partitions}) < len(self.topics):
            tps = []
            for t in self.topics:
                parts = self.consumer.partitions_for_topic(t)
                if not parts:
                    self.consumer.topics()  # refresh metadata: the topic may have been created since
                    parts = self.consumer.partitions_for_topic(t)
                tps += [TopicPartition(t, p) for p in sorted(parts or ())]
            self.partitions = tps
        return self.partitions

    def read(self) -> dict:
        tps = self._partitions()
        if not tps:
            return {"produced": 0, "committed": 0, "lag": 0}
        ends = self.consumer.end_offsets(tps)
        if hasattr(self.admin, "list_consumer_group_offsets"):  # kafka-python 2.x
            committed = self.admin.list_consumer_group_offsets(self.group)
        else:  # kafka-python 3.x renamed it
            committed = self.admin.list_group_offsets({self.group: None}).get(self.group, {})
        produced = sum(ends.values())
        done = sum(max(0, committed[tp].offset) if tp in committed else 0 for tp in tps)
        per_topic = {t: sum(ends[tp] - max(0, committed[tp].offset if tp in committed else 0)
                            for tp in tps if tp.topic == t) for t in self.topics}
        return {"produced": produced, "committed": done, "lag": produced - done, "lag_per_topic": per_topic}

    def close(self) -> None:
        for c in (self.consumer, self.admin):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


class Sampler:
    def __init__(self, worker_pid: int, port: int, lag: Lag, state_dir: Path, rate: float, broker_pid: int | None):
        self.pid, self.port, self.lag, self.state_dir, self.rate = worker_pid, port, lag, state_dir, rate
        self.broker_pid = broker_pid
        self.t0 = time.monotonic()
        self.last_cpu = (time.monotonic(), self._cpu(), self._wait())
        self.samples: list[dict] = []

    def _cpu(self) -> float:
        return sum(cpu_seconds(p) or 0.0 for p in tree(self.pid))  # 0 for a process gone meanwhile

    def _wait(self) -> float:
        return sum(runq_wait_seconds(p) for p in tree(self.pid))

    def sample(self, phase: str) -> dict:
        now, cpu, wait = time.monotonic(), self._cpu(), self._wait()
        t_prev, cpu_prev, wait_prev = self.last_cpu
        self.last_cpu = (now, cpu, wait)
        pids = tree(self.pid)
        st = [proc_status(p) for p in pids]
        s: dict = {"t": round(now - self.t0, 2), "phase": phase, "wall": time.strftime("%H:%M:%S"),
                   "rss_mb": round(sum(x.get("VmRSS", 0) for x in st) / 1024, 2),
                   "hwm_mb": round(sum(x.get("VmHWM", 0) for x in st) / 1024, 2),
                   "threads": sum(x.get("Threads", 0) for x in st), "processes": len(pids),
                   "cpu_pct": round(100 * (cpu - cpu_prev) / (now - t_prev), 1) if now > t_prev else None,
                   "cpu_s": round(cpu, 2),
                   # % of the interval the worker's threads (summed) waited for a CPU: the machine's other jobs
                   "runq_wait_pct": round(100 * max(0.0, wait - wait_prev) / (now - t_prev), 1) if now > t_prev
                   else None}
        try:
            s.update(self.lag.read())
            s["lag_s"] = round(s["lag"] / self.rate, 2)
        except Exception as exc:  # noqa: BLE001 - a slow broker must not end a 30-minute run
            s["lag_error"] = repr(exc)[:200]
        h = health(self.port)
        s["health_ok"] = bool(h)
        s["counts"] = h.get("counts", {})
        if h and "produced" in s:  # not bounded below by the commit interval, unlike the committed lag
            s["backlog"] = s["produced"] - s["counts"].get("processed", 0) - s["counts"].get("rejected", 0)
        s["rejected"] = h.get("rejected", {})
        s["rocksdb_bytes"] = dir_bytes(self.state_dir)
        if self.broker_pid:
            s["broker_rss_mb"] = round(proc_status(self.broker_pid).get("VmRSS", 0) / 1024, 1)
        s["loadavg"] = loadavg()
        self.samples.append(s)
        return s


# ---- the run ------------------------------------------------------------------------------------
class SoakBench(Bench):
    """benchmarks/streaming.py's worker launcher, with the soak's own topic and group names."""

    def topics(self, label: str) -> list[str]:
        base = f"soak-{self.tag}-{label}"
        return ["--clicks-topic", f"{base}-clicks", "--browses-topic", f"{base}-browses",
                "--output-topic", f"{base}-recs", "--dlq-topic", f"{base}-dlq"]

    def app_id(self, label: str) -> str:
        return f"soak-{self.tag}-{label}"


def stream_events(a: argparse.Namespace, work: Path) -> tuple[list[str], dict]:
    """Write the first minutes x 60 x rate synthetic events (time order) to a CSV; its replay flags."""
    from collections import Counter

    from streamrec.model.synth import CSV_COLUMNS, SynthConfig, generate, write_csv

    want = math.ceil(a.minutes * 60 * a.rate)
    users = a.users
    while True:
        events = generate(SynthConfig(users=users, items=a.items, seed=0))
        if len(events) >= want:
            break
        users = math.ceil(users * want / len(events) * 1.05)
        say(f"  {len(events):,} events are fewer than {want:,}: {users:,} users")
    total = len(events)
    events.sort(key=lambda e: e.ts)  # stable: ties keep the per-user order
    events = events[:want]
    path = write_csv(events, work / "events.csv")
    info = {"source": "synthetic (model.synth)", "users_generated": users, "items": a.items, "seed": 0,
            "generated_events": total, "events": len(events), "users": len({e.user_id for e in events}),
            "event_types": dict(Counter(e.event_type for e in events)),
            "event_time_span_h": round((events[-1].ts - events[0].ts) / 3.6e6, 1)}
    return ["--data", str(path), "--format", "csv", "--columns", CSV_COLUMNS], info


def make_bundle(a: argparse.Namespace, events: list, work: Path) -> tuple[Path, dict]:
    """--bundle as given, else the small model (benchmarks/streaming.py's) trained on ``events`` and exported."""
    if a.bundle:
        return Path(a.bundle).resolve(), {"bundle": str(Path(a.bundle).resolve()), "trained": False}
    return train_bundle(events, work, a.epochs, "bench-soak")


def train_events(a: argparse.Namespace) -> list:
    from streamrec.model.synth import SynthConfig, generate

    # the same seed and catalog: the item structure is drawn first, so these are the first users of the stream data
    return generate(SynthConfig(users=min(TRAIN_USERS, a.users), items=a.items, seed=0))


def lstsq_slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    i = (len(xs) - 1) * q
    lo, hi = math.floor(i), math.ceil(i)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def _last_slope(post: list[dict], seconds: float) -> float | None:
    """RSS slope (MB per 10 min) over the last ``seconds`` of the post-warmup samples: has it levelled off?"""
    tail = [s for s in post if s["t"] >= post[-1]["t"] - seconds]
    slope = lstsq_slope([s["t"] for s in tail], [s["rss_mb"] for s in tail])
    return None if slope is None else round(slope * 600, 2)


def summarize(doc: dict) -> dict:
    samples, rate = doc["samples"], doc["config"]["rate"]
    warm = doc["config"]["warmup_minutes"] * 60
    steady = [s for s in samples if s["phase"] == "steady"]
    post = [s for s in steady if s["t"] >= doc["timeline"].get("replay_start_t", 0) + warm]
    out: dict = {"samples": len(samples), "post_warmup_samples": len(post)}
    if not post:
        return out
    rss = [s["rss_mb"] for s in post]
    slope = lstsq_slope([s["t"] for s in post], rss)
    out["rss_mb"] = {"warmup_end": rss[0], "median": statistics.median(rss), "max": max(rss), "end": rss[-1],
                     "min": min(rss), "slope_mb_per_10min": None if slope is None else round(slope * 600, 2),
                     "growth_mb": round(rss[-1] - rss[0], 2),
                     "slope_last_10min_mb_per_10min": _last_slope(post, 600),
                     "overall_max": max(s["rss_mb"] for s in samples), "peak_hwm": max(s["hwm_mb"] for s in samples)}
    lags = [s["lag"] for s in post if "lag" in s]
    if lags:
        out["lag_events"] = {"p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": max(lags),
                             "overall_max": max(s.get("lag", 0) for s in samples if s["phase"] != "drain")}
        out["lag_s"] = {k: round(v / rate, 2) for k, v in out["lag_events"].items()}
    backlog = [max(0, s["backlog"]) for s in post if "backlog" in s]
    if backlog:
        out["backlog_events"] = {"p50": percentile(backlog, 0.5), "p99": percentile(backlog, 0.99),
                                 "max": max(backlog)}
    cpu = [s["cpu_pct"] for s in post if s.get("cpu_pct") is not None]
    if cpu:
        out["cpu_pct"] = {"median": statistics.median(cpu), "max": max(cpu)}
    wait = [s["runq_wait_pct"] for s in post if s.get("runq_wait_pct") is not None]
    if wait:
        out["runq_wait_pct"] = {"median": statistics.median(wait), "max": max(wait)}
    a, b = post[0], post[-1]
    dt = b["t"] - a["t"]
    if dt > 0 and "produced" in a and "produced" in b:
        offered = (b["produced"] - a["produced"]) / dt
        achieved = (b["counts"].get("emitted", 0) - a["counts"].get("emitted", 0)) / dt
        out["rate"] = {"target": rate, "offered": round(offered, 2), "achieved_emitted": round(achieved, 2),
                       "ratio": round(achieved / offered, 4) if offered else None, "window_s": round(dt, 1)}
    rb = [s["rocksdb_bytes"] for s in post]
    out["rocksdb_mb"] = {"warmup_end": round(rb[0] / 1e6, 2), "end": round(rb[-1] / 1e6, 2),
                         "max": round(max(rb) / 1e6, 2)}
    brss = [s["broker_rss_mb"] for s in post if s.get("broker_rss_mb")]
    if brss:
        out["broker_rss_mb"] = {"warmup_end": brss[0], "end": brss[-1], "max": max(brss)}
    last = samples[-1]
    c = last.get("counts", {})
    out["final"] = {"produced": last.get("produced"), "lag": last.get("lag"), "counts": c,
                    "rejected": last.get("rejected", {}),
                    "reconciled": last.get("produced") == c.get("processed", 0) + c.get("rejected", 0)
                    if c else None,
                    "health_failures": sum(1 for s in samples if not s["health_ok"]),
                    "lag_errors": sum(1 for s in samples if "lag_error" in s)}
    return out


# ---- report -----------------------------------------------------------------------------------
def f(x, spec: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(doc: dict) -> str:
    c, s, d = doc["config"], doc.get("summary", {}), doc.get("data", {})
    m = doc["machine"]
    lines = [f"\nsoak benchmark: {c['minutes']:g} min at {c['rate']:g} events/s offered, {c['guarantee']}, "
             f"1 worker (ONNX Runtime 1 thread, 8 partitions), warmup {c['warmup_minutes']:g} min, "
             f"sample every {c['sample_every']:g} s"]
    if d:
        lines.append(f"data: {d.get('events', 0):,} synthetic events of {d.get('users', 0):,} users "
                     f"({d.get('users_generated', 0):,} generated), {d.get('items', 0):,} items, "
                     f"types {d.get('event_types')}")
    b = doc.get("bundle", {})
    if b:
        lines.append(f"bundle: {b.get('model_version')} (n_items {b.get('n_items')}, L{b.get('layers')} "
                     f"H{b.get('hidden')}, k {b.get('k')}, m {b.get('m')})")
    lines.append(f"machine: {m.get('nproc')} cores, load average at start {m.get('loadavg_start')} and at end "
                 f"{m.get('loadavg_end')} (other jobs on the machine)")
    r = s.get("rss_mb")
    if r:
        lines.append(f"\nworker RSS (MB)   after warmup {f(r['warmup_end'], ',.1f')}   median {f(r['median'], ',.1f')}"
                     f"   max {f(r['max'], ',.1f')}   end {f(r['end'], ',.1f')}   slope {f(r['slope_mb_per_10min'], '+,.2f')}"
                     f" MB / 10 min (least squares, post-warmup)   growth {f(r['growth_mb'], '+,.1f')} MB")
        lines.append(f"                  slope over the last 10 min {f(r.get('slope_last_10min_mb_per_10min'), '+,.2f')} "
                     f"MB / 10 min; max over the whole run {f(r['overall_max'], ',.1f')}, peak VmHWM "
                     f"{f(r['peak_hwm'], ',.1f')}")
    lg, ls = s.get("lag_events"), s.get("lag_s")
    if lg:
        lines.append(f"consumer lag      p50 {f(lg['p50'])}   p99 {f(lg['p99'])}   max {f(lg['max'])} events"
                     f"   (= {f(ls['p50'], ',.1f')} / {f(ls['p99'], ',.1f')} / {f(ls['max'], ',.1f')} s at "
                     f"{c['rate']:g} events/s; max incl. warmup {f(lg['overall_max'])})")
        lines.append("                  (end offsets - the group's committed offsets: Faust commits every ~3 s)")
    bl = s.get("backlog_events")
    if bl:
        lines.append(f"backlog           p50 {f(bl['p50'])}   p99 {f(bl['p99'])}   max {f(bl['max'])} events"
                     "   (produced - processed - rejected from /health: not held up by the commit interval)")
    rt = s.get("rate")
    if rt:
        lines.append(f"rate              offered {f(rt['offered'], ',.1f')} events/s, achieved {f(rt['achieved_emitted'], ',.1f')}"
                     f" emitted/s ({f(rt['ratio'], '.1%')}) over {f(rt['window_s'])} s post-warmup")
    if s.get("cpu_pct"):
        w = s.get("runq_wait_pct", {})
        lines.append(f"worker CPU        median {f(s['cpu_pct']['median'], '.0f')}% max {f(s['cpu_pct']['max'], '.0f')}% of one core"
                     + (f"; threads waiting for a CPU median {f(w.get('median'), '.0f')}% max {f(w.get('max'), '.0f')}%"
                        " (summed over threads)"
                        if w else ""))
    if s.get("rocksdb_mb"):
        rb = s["rocksdb_mb"]
        lines.append(f"RocksDB folder    {f(rb['warmup_end'], ',.1f')} MB after warmup, {f(rb['end'], ',.1f')} MB at the end")
    if s.get("broker_rss_mb"):
        br = s["broker_rss_mb"]
        lines.append(f"broker JVM RSS    {f(br['warmup_end'], ',.0f')} MB after warmup, max {f(br['max'], ',.0f')}, "
                     f"end {f(br['end'], ',.0f')}")
    fin = s.get("final")
    if fin:
        cnt = fin["counts"]
        lines.append(f"final             produced {f(fin['produced'])}, processed {f(cnt.get('processed'))}, emitted "
                     f"{f(cnt.get('emitted'))}, rejected {f(cnt.get('rejected', 0))} {fin['rejected'] or ''}, "
                     f"duplicate {f(cnt.get('duplicate', 0))}, redelivered {f(cnt.get('redelivered', 0))}; "
                     f"lag {f(fin['lag'])}; produced = processed + rejected: {fin['reconciled']}")
        lines.append(f"                  /health failures {fin['health_failures']}, lag read errors {fin['lag_errors']}")
    tl = doc.get("timeline", {})
    if tl.get("drain_s") is not None:
        lines.append(f"drain             {tl['drain_s']:.1f} s after the replay ended until caught up"
                     f" ({'caught up' if tl.get('caught_up') else 'NOT caught up'})")
    rp = doc.get("replay")
    if rp:
        lines.append(f"replay            sent {f(rp.get('sent'))} of {f(rp.get('events'))}, {f(rp.get('failures'))} failures, "
                     f"{f(rp.get('seconds'), ',.1f')} s, {f(rp.get('rate'), ',.1f')} events/s")
    for e in doc.get("errors", []):
        lines.append(f"\nFAILED {e['step']}: {e['error'].splitlines()[0] if e['error'] else ''}")
    lines.append(f"\ntotal {doc.get('total_seconds', 0):.0f} s; {doc.get('results_file')}; {doc.get('plot_file')}")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> Path | None:
    samples = doc["samples"]
    if len(samples) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, tl = doc["config"], doc["timeline"]
    t0 = tl.get("replay_start_t", 0)
    mins = [(s["t"] - t0) / 60 for s in samples]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    a1.plot(mins, [s["rss_mb"] for s in samples], label="worker RSS", color="tab:blue")
    r = doc.get("summary", {}).get("rss_mb")
    post = [s for s in samples if s["phase"] == "steady" and s["t"] >= t0 + c["warmup_minutes"] * 60]
    if r and r.get("slope_mb_per_10min") is not None and len(post) > 2:
        xs = [(s["t"] - t0) / 60 for s in post]
        slope = r["slope_mb_per_10min"] / 10  # per minute
        my, mx = statistics.fmean(s["rss_mb"] for s in post), statistics.fmean(xs)
        a1.plot([xs[0], xs[-1]], [my + slope * (xs[0] - mx), my + slope * (xs[-1] - mx)], ls="--", color="black",
                lw=1, label=f"least squares: {r['slope_mb_per_10min']:+.1f} MB / 10 min")
    a1b = a1.twinx()
    a1b.plot(mins, [s["rocksdb_bytes"] / 1e6 for s in samples], color="tab:green", alpha=0.6, lw=1)
    a1b.set_ylabel("RocksDB folder (MB)", color="tab:green")
    a1.set(ylabel="worker RSS (MB)", title=f"soak: {c['rate']:g} events/s offered, {c['guarantee']}, "
                                          f"{c['minutes']:g} min")
    a1.set_ylim(bottom=0)
    a1b.set_ylim(bottom=0)
    lag_t = [m for m, s in zip(mins, samples) if "lag" in s]
    a2.plot(lag_t, [s["lag"] for s in samples if "lag" in s], color="tab:red", label="consumer lag (committed)")
    a2.plot([m for m, s in zip(mins, samples) if "backlog" in s],
            [max(0, s["backlog"]) for s in samples if "backlog" in s], color="tab:orange", lw=1, alpha=0.8,
            label="backlog (produced - processed)")
    a2.set(xlabel="minutes since the replay started", ylabel="lag (events)")
    a2.set_ylim(bottom=0)
    a2b = a2.secondary_yaxis("right", functions=(lambda x: x / c["rate"], lambda y: y * c["rate"]))
    a2b.set_ylabel(f"lag (s at {c['rate']:g} events/s)")
    for ax in (a1, a2):
        ax.axvline(c["warmup_minutes"], color="grey", ls=":", lw=1, label="end of warmup")
        if tl.get("replay_end_t") is not None:
            ax.axvline((tl["replay_end_t"] - t0) / 60, color="grey", ls="--", lw=1, label="replay ended (drain after)")
        ax.grid(alpha=0.3)
    a1.legend(loc="lower right", fontsize=8)
    a2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replot(path: Path) -> int:
    doc = json.loads(path.read_text())
    doc["summary"] = summarize(doc)
    doc["plot_file"] = str(plot(doc, path.with_suffix(".png")))
    doc["results_file"] = str(path)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(table(doc), flush=True)
    return 1 if doc.get("errors") else 0


# ---- main -------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="how long the producer offers events (default 30)")
    ap.add_argument("--rate", type=float, default=100.0,
                    help="offered events/s (default 100); keep it well below the worker's capacity "
                         "(~250-400 events/s here, benchmarks/streaming.py), or lag grows by design")
    ap.add_argument("--guarantee", choices=["at-least-once", "exactly-once"], default="at-least-once",
                    help="the worker's processing guarantee (default at-least-once)")
    ap.add_argument("--bundle", help="serve this bundle (default: train and export a small model first, ~1 min)")
    ap.add_argument("--batch-max", type=int, help="pass --batch-max N to the worker (only when given)")
    ap.add_argument("--batch-wait", type=float, help="pass --batch-wait MS to the worker (only when given)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs when no --bundle (default 2)")
    ap.add_argument("--brokers", help="use this Kafka (default: start a private broker, stopped at the end)")
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between two samples (default 10)")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="minutes left out of the summary figures (default 3; at most half of --minutes)")
    ap.add_argument("--users", type=int, default=20_000,
                    help="synthetic users generated (default 20000); the stream is the first minutes x 60 x rate "
                         "events in time order, so new users keep arriving while older ones return")
    ap.add_argument("--items", type=int, default=2000, help="synthetic catalog size (default 2000)")
    ap.add_argument("--drain-timeout", type=float, default=120.0,
                    help="seconds to wait for the worker to catch up after the replay (default 120)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds the worker may take to be ready")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder, deleted unless a step failed)")
    ap.add_argument("--out", default=str(RESULTS / "soak.json"), help="results file (the plot goes beside it, .png)")
    ap.add_argument("--replot", metavar="JSON",
                    help="run nothing: recompute the summary, table and plot of an earlier soak.json (in place)")
    a = ap.parse_args()
    if a.replot:
        return replot(Path(a.replot).resolve())
    if a.rate <= 0 or a.minutes <= 0 or a.sample_every <= 0:
        ap.error("--rate, --minutes and --sample-every must be > 0")
    warmup = min(a.warmup, a.minutes / 2)

    started = time.monotonic()
    work = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="streamrec-bench-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes(work / "logs")
    out_path = Path(a.out).resolve()
    png_path = out_path.with_suffix(".png")
    os.environ["STREAMREC_THREADS"] = "1"  # the worker's ONNX Runtime threads (no flag given: the env decides)
    doc: dict = {"benchmark": "soak", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
                 "config": {"minutes": a.minutes, "rate": a.rate, "guarantee": a.guarantee,
                            "sample_every": a.sample_every, "warmup_minutes": warmup, "users": a.users,
                            "items": a.items, "onnx_threads": 1, "partitions": 8},
                 "machine": {"nproc": os.cpu_count(), "loadavg_start": loadavg(), "platform": platform.platform(),
                             "python": platform.python_version()},
                 "timeline": {}, "errors": [], "samples": [], "results_file": str(out_path)}

    def save() -> None:
        doc["total_seconds"] = round(time.monotonic() - started, 1)
        doc["machine"]["loadavg_end"] = loadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        tmp.replace(out_path)

    def failed(step: str, exc: BaseException) -> None:
        say(f"FAILED {step}: {exc}")
        doc["errors"].append({"step": step, "error": str(exc), "traceback": traceback.format_exc()})

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    broker, lag = None, None
    say(f"{os.cpu_count()} cores, load average {doc['machine']['loadavg_start']}; work folder {work}")
    try:
        want = math.ceil(a.minutes * 60 * a.rate)
        say(f"data: the first {want:,} events in time order of {a.users:,} synthetic users")
        data_flags, doc["data"] = stream_events(a, work)
        say(f"  {doc['data']['events']:,} events of {doc['data']['users']:,} users "
            f"(of {doc['data']['generated_events']:,} generated), {doc['data']['event_time_span_h']} h of event time")
        say("model: " + ("reusing " + a.bundle if a.bundle else f"training on {TRAIN_USERS:,} users (dim 32, hidden "
                         f"64, {a.epochs} epochs) and exporting (k 20, m 50)"))
        bundle_dir, doc["bundle"] = make_bundle(a, [] if a.bundle else train_events(a), work)
        from streamrec.export.manifest import Manifest

        mf = Manifest.from_json((bundle_dir / "manifest.json").read_text())
        doc["bundle"].update(model_version=mf.model_version, n_items=mf.n_items, layers=mf.layers, hidden=mf.hidden,
                             k=mf.k, m=mf.m)
        say(f"  {mf.model_version}")
        save()

        if a.brokers:
            brokers = a.brokers
        else:
            say("starting Kafka")
            from streamrec.streams.broker import start_broker

            broker = start_broker(name=None, record_state=False, die_with_parent=True, data_dir=work / "kafka")
            brokers = broker.bootstrap
        doc["broker"] = {"bootstrap": brokers, "private": broker is not None}
        say(f"  broker at {brokers}")

        bench = SoakBench(a, work, procs, brokers, bundle_dir)
        label = "run"
        topic_flags = bench.topics(label)
        inputs = [topic_flags[1], topic_flags[3]]
        doc["topics"] = dict(zip(topic_flags[::2], topic_flags[1::2]))
        doc["app_id"] = bench.app_id(label)
        say(f"worker ({a.guarantee}, app id {doc['app_id']})")
        worker, port, ready_s = bench.start_worker(label, a.guarantee)
        doc["timeline"]["worker_ready_s"] = round(ready_s, 2)
        say(f"  ready in {ready_s:.1f} s (pid {worker.pid}, web port {port})")
        broker_pid = broker._proc.pid if broker is not None and broker._proc is not None else None
        lag = Lag(brokers, doc["app_id"], inputs)
        sampler = Sampler(worker.pid, port, lag, bench.state_dir(label), a.rate, broker_pid)
        doc["samples"] = sampler.samples
        sampler.sample("idle")

        say(f"replay: {doc['data']['events']:,} events at {a.rate:g} events/s (~{want / a.rate / 60:.1f} min)")
        replay = procs.start(cli("replay", *data_flags, "--brokers", brokers, *topic_flags, "--rate", f"{a.rate:g}",
                                 "--order", "none", "--json", "--no-progress"), "replay")
        doc["timeline"]["replay_start_t"] = round(time.monotonic() - sampler.t0, 2)
        next_at = time.monotonic() + a.sample_every
        last_say = 0.0
        while replay.poll() is None:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}) mid-run:\n{procs.tail(f'worker-{label}')}")
            time.sleep(max(0.0, min(next_at - time.monotonic(), 1.0)))
            if time.monotonic() < next_at:
                continue
            next_at += a.sample_every
            s = sampler.sample("steady")
            if time.monotonic() - last_say >= 60:
                last_say = time.monotonic()
                el = (s["t"] - doc["timeline"]["replay_start_t"]) / 60
                say(f"  {el:5.1f} min: RSS {s['rss_mb']:,.1f} MB, CPU {f(s['cpu_pct'], '.0f')}%, lag "
                    f"{f(s.get('lag'))} events, produced {f(s.get('produced'))}, emitted "
                    f"{f(s['counts'].get('emitted'))}, RocksDB {s['rocksdb_bytes'] / 1e6:,.1f} MB, load {s['loadavg']}")
                save()
        doc["timeline"]["replay_end_t"] = round(time.monotonic() - sampler.t0, 2)
        out = (procs.logs / "replay.out").read_text(errors="replace").strip().splitlines()
        procs.procs.remove(replay)
        try:
            doc["replay"] = json.loads(out[-1])
        except (IndexError, ValueError):
            doc["replay"] = {}
        if replay.returncode != 0:
            failed("replay", RuntimeError(f"replay exit {replay.returncode}:\n{procs.tail('replay')}"))
        say(f"replay done: {f(doc['replay'].get('sent'))} sent in {f(doc['replay'].get('seconds'), ',.1f')} s "
            f"({f(doc['replay'].get('rate'), ',.1f')} events/s); draining")

        t_end, caught = time.monotonic(), False
        while time.monotonic() - t_end < a.drain_timeout:
            time.sleep(min(2.0, a.sample_every))
            s = sampler.sample("drain")
            c = s["counts"]
            if s.get("lag") == 0 and s.get("produced") and \
                    c.get("processed", 0) + c.get("rejected", 0) >= s["produced"]:
                caught = True
                break
        doc["timeline"].update(drain_s=round(time.monotonic() - t_end, 1), caught_up=caught)
        if not caught:
            failed("drain", RuntimeError(f"the worker did not catch up within {a.drain_timeout:.0f} s"))
        say(f"  drained in {doc['timeline']['drain_s']} s: caught up {caught}")
        t_stop = time.monotonic()
        procs.stop(worker)
        doc["timeline"]["worker_stop_s"] = round(time.monotonic() - t_stop, 2)
        doc["timeline"]["worker_exit"] = worker.returncode
    except KeyboardInterrupt:
        say("interrupted: stopping the worker and Kafka")
        doc["interrupted"] = True
    except Exception as exc:  # noqa: BLE001
        failed("run", exc)
    finally:
        if lag is not None:
            lag.close()
        procs.stop_all()
        if broker is not None:
            broker.stop()
        try:
            doc["summary"] = summarize(doc)
        except Exception as exc:  # noqa: BLE001
            failed("summary", exc)
        try:
            doc["plot_file"] = str(plot(doc, png_path))
        except Exception as exc:  # noqa: BLE001
            failed("plot", exc)
        save()
    print(table(doc), flush=True)
    keep = doc["errors"] or doc.get("interrupted") or a.workdir
    if keep:
        print(f"work folder kept: {work} (logs in {work / 'logs'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 130 if doc.get("interrupted") else (1 if doc["errors"] else 0)


if __name__ == "__main__":
    sys.exit(main())
