"""Streaming performance against a real Kafka broker (BENCHMARKS.md, "Streaming performance").

    ./run python benchmarks/streaming.py                                   # ml-100k, both guarantees
    ./run python benchmarks/streaming.py --guarantees at-least-once --rates 0.5 --events 50000
    ./run python benchmarks/streaming.py --data events.csv --format csv --columns ... --bundle bundles/x

Data: ml-100k (../shared/data/ml-100k/ml-100k.inter, or under $STREAMREC_DATA), else synthetic
click/browse streams (model.synth) with enough users for --events events. A small model
(dim 32, hidden 64, 2 epochs, TEMPORAL-stream) is trained and exported (k=20, m=50) unless
--bundle is given. One Kafka broker (KRaft, 127.0.0.1) serves every run; each run gets fresh
topics, a fresh app id (consumer group) and a fresh RocksDB folder, and one worker process
(`streamrec worker`, ONNX Runtime 1 thread), with `streamrec evaluate-live` reading in the
background and `streamrec replay --order none` producing.

  throughput  per guarantee: replay every event at max speed; events/s from the first input
              record to the last recommendation record (Kafka timestamps, evaluate-live report).
              Latency percentiles of these runs are backlog figures (events wait in Kafka).
  latency     at-least-once, offered rates = --rates x the measured max throughput: a slice of
              the first --slice events (time order, capped at --rate-seconds of the slowest rate)
              replayed at that rate; p50/p95/p99 from produce time to publish time.
  ceiling     the bare ONNX step of the same bundle, batch 1 (and 64), 1 thread, tight loop
              (benchmarks/onnx_step.py rate()); pipeline throughput / ceiling.
  state       packed UserState bytes per user (full seen window m, top k, 16 event ids), the
              values actually in RocksDB after the at-least-once run, the data folder per user.
  recovery    stop that worker, delete its RocksDB folder, start it again with the same app id:
              seconds until GET /health says ready (state restored from the changelog topic),
              beside the start time of a fresh worker with no state.

Prints a table; writes benchmarks/results/streaming.json (every figure, the machine's core
count and load averages: other processes on the machine make timings noisy).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter
from pathlib import Path

from cli.processes import Processes as SharedProcesses
from streams.sequencer import is_progress_key

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMREC_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_DATA = DATA / "ml-100k" / "ml-100k.inter"
RESULTS = ROOT / "benchmarks" / "results"
SHORT = {"at-least-once": "alo", "exactly-once": "eos"}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- child processes ----------------------------------------------------------------------
class Processes(SharedProcesses):
    """Children with their output in LOGS/NAME.out (see cli/processes.py)."""

    def __init__(self, logs: Path):
        super().__init__()
        self.logs = logs

    def start(self, args: list[str], name: str) -> subprocess.Popen:  # type: ignore[override]
        self.logs.mkdir(parents=True, exist_ok=True)
        proc = super().start(args, self.logs / f"{name}.out", cwd=ROOT)
        proc.name = name  # type: ignore[attr-defined]
        return proc

    def tail(self, name: str, n: int = 15) -> str:
        lines = []
        for ext in ("out",):
            p = self.logs / f"{name}.{ext}"
            if p.exists():
                lines += p.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return {}


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


class Bench:
    """One benchmark session: the broker, the bundle, the data flags, and the runs."""

    def __init__(self, a: argparse.Namespace, work: Path, procs: Processes, brokers: str, bundle_dir: Path,
                 data_flags: list[str]):
        self.a, self.work, self.procs, self.brokers = a, work, procs, brokers
        self.bundle_dir, self.data_flags = bundle_dir, data_flags
        self.tag = time.strftime("%H%M%S")

    def topics(self, label: str) -> list[str]:
        base = f"bench-{self.tag}-{label}"
        return ["--clicks-topic", f"{base}-clicks", "--browses-topic", f"{base}-browses",
                "--output-topic", f"{base}-recs", "--dlq-topic", f"{base}-dlq"]

    def app_id(self, label: str) -> str:
        return f"bench-streaming-{self.tag}-{label}"

    def start_worker(self, label: str, guarantee: str, name: str | None = None,
                     log_level: str = "warning") -> tuple[subprocess.Popen, int, float]:
        """Start a worker; returns it, its web port and the seconds from launch to /health ready."""
        from streams.broker import free_port

        port = free_port()
        name = name or f"worker-{label}"
        t0 = time.monotonic()
        proc = self.procs.start(cli("worker", "--bundle", str(self.bundle_dir), "--brokers", self.brokers,
                                    *self.topics(label), "--guarantee", guarantee, "--app-id", self.app_id(label),
                                    "--data-dir", str(self.state_dir(label)), "--web-host", "127.0.0.1",
                                    "--web-port", str(port), "--log-level", log_level), name)
        deadline = t0 + self.a.ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited ({proc.returncode}):\n{self.procs.tail(name)}")
            if health(port).get("ready"):
                return proc, port, time.monotonic() - t0
            time.sleep(0.1)
        self.procs.stop(proc)
        raise RuntimeError(f"worker {name} not ready after {self.a.ready_timeout:.0f} s:\n{self.procs.tail(name)}")

    def state_dir(self, label: str) -> Path:
        return self.work / "state" / label

    def run(self, label: str, guarantee: str, data_flags: list[str], rate: float | None) -> dict:
        """Worker + evaluate-live (background) + replay; returns the figures of the run (worker stopped
        unless the caller asks to keep it: see ``run_keep``)."""
        res, worker, port = self.run_keep(label, guarantee, data_flags, rate)
        self.procs.stop(worker)
        return res

    def run_keep(self, label: str, guarantee: str, data_flags: list[str], rate: float | None):
        la = loadavg()
        worker, port, ready_s = self.start_worker(label, guarantee)
        try:
            return self._measure(label, guarantee, data_flags, rate, worker, port, ready_s, la)
        except BaseException:
            for proc in [p for p in self.procs.procs if getattr(p, "name", "").endswith(label)]:
                self.procs.stop(proc)  # no leftover process may load the next run
            self.procs.stop(worker)
            raise

    def _measure(self, label, guarantee, data_flags, rate, worker, port, ready_s, la):
        say(f"  worker ready in {ready_s:.1f} s (web port {port})")
        report_path = self.work / f"live-{label}.json"
        live = self.procs.start(cli("evaluate-live", *data_flags, "--bundle", str(self.bundle_dir),
                                    "--brokers", self.brokers, *self.topics(label), "--timeout", "60", "--json",
                                    "--no-progress", "--report", str(report_path)), f"live-{label}")
        speed = ["--rate", f"{rate:.3f}"] if rate else ["--max-speed"]
        t0 = time.monotonic()
        replay = self.procs.start(cli("replay", *data_flags, "--brokers", self.brokers, *self.topics(label),
                                      *speed, "--order", "none", "--json", "--no-progress"), f"replay-{label}")
        try:
            replay.wait(timeout=self.a.run_timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(replay)
            raise RuntimeError(f"replay {label} did not finish in {self.a.run_timeout:.0f} s") from None
        replay_s = time.monotonic() - t0
        self.procs.procs.remove(replay)
        out = (self.procs.logs / f"replay-{label}.out").read_text().strip().splitlines()
        if replay.returncode != 0 or not out:
            raise RuntimeError(f"replay {label} failed (exit {replay.returncode}):\n{self.procs.tail(f'replay-{label}')}")
        summary = json.loads(out[-1])
        say(f"  replay: {summary['sent']:,} events sent in {replay_s:.1f} s ({summary['rate']:,.0f} events/s offered)")
        try:
            live.wait(timeout=self.a.run_timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(live)
            raise RuntimeError(f"evaluate-live {label} did not finish in {self.a.run_timeout:.0f} s") from None
        self.procs.procs.remove(live)
        if not report_path.exists():
            raise RuntimeError(f"evaluate-live {label} wrote no report (exit {live.returncode}):\n"
                               f"{self.procs.tail(f'live-{label}')}")
        report = json.loads(report_path.read_text())
        h = health(port)
        thr, lat, counts = report["throughput"], report["latency_ms"], report["counts"]
        res = {"label": label, "guarantee": guarantee, "offered_rate_target": rate,
               "replay": {k: summary.get(k) for k in ("events", "sent", "failures", "seconds", "rate", "order")},
               "events_per_s": thr.get("events_per_s"), "seconds": thr.get("seconds"), "outputs": thr.get("outputs"),
               "per_second": thr.get("per_second"),
               "latency_ms": lat, "complete": report["complete"], "counts": counts, "metrics": report["metrics"],
               "worker_ready_s": round(ready_s, 2), "worker_counts": h.get("counts", {}),
               "worker_rejected": h.get("rejected", {}), "app_id": self.app_id(label),
               "loadavg_before": la, "loadavg_after": loadavg(), "evaluate_live_exit": live.returncode}
        say(f"  {thr.get('outputs', 0):,} recommendations, {thr.get('events_per_s', 0):,.0f} events/s end to end, "
            f"latency p50 {lat.get('p50', float('nan')):,.0f} / p95 {lat.get('p95', float('nan')):,.0f} / "
            f"p99 {lat.get('p99', float('nan')):,.0f} ms; complete={report['complete']}, "
            f"duplicates={counts.get('duplicates')}, load {res['loadavg_after']}")
        return res, worker, port


# ---- phases -------------------------------------------------------------------------------
def load_data(a: argparse.Namespace, work: Path) -> tuple[list, list[str], dict]:
    """The events, the --data/--format flags the CLI commands get, and a description."""
    from model.data import load
    from model.synth import CSV_COLUMNS, SynthConfig, generate, write_csv

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
        want = a.events or 100_000
        users = math.ceil(want / 30)  # ~36 events per synthetic user on average
        while True:
            events = generate(SynthConfig(users=users, items=2000, seed=0))
            if len(events) >= want:
                break
            users = math.ceil(users * want / len(events) * 1.05)
        info = {"source": "synthetic (model.synth)", "users": users, "items": 2000, "seed": 0}
        flags = []
    if a.events and a.events < len(events):
        events = sorted(events, key=lambda e: e.ts)[: a.events]  # the first N in time order (stable)
        flags = []
        info["truncated_to"] = a.events
    if not flags:
        path = write_csv(events, work / "events.csv")
        flags = ["--data", str(path), "--format", "csv", "--columns", CSV_COLUMNS]
    info.update(events=len(events), users=len({e.user_id for e in events}), items=len({e.item_id for e in events}),
                event_types=dict(Counter(e.event_type for e in events)))
    return events, flags, info


def slice_flags(events: list, n: int, work: Path) -> list[str]:
    from model.synth import CSV_COLUMNS, write_csv

    path = write_csv(sorted(events, key=lambda e: e.ts)[:n], work / f"slice-{n}.csv")
    return ["--data", str(path), "--format", "csv", "--columns", CSV_COLUMNS]


def make_bundle(a: argparse.Namespace, events: list, work: Path) -> tuple[Path, dict]:
    if a.bundle:
        return Path(a.bundle).resolve(), {"bundle": str(Path(a.bundle).resolve()), "trained": False}
    from export.onnx_export import export_bundle
    from model import checkpoint
    from model.config import TrainConfig
    from model.pipeline import train

    t0 = time.monotonic()
    run_dir, bundle_dir = work / "model", work / "bundle"
    doc = train(events, "temporal", run_dir, {"dim": 32, "hidden": 64}, TrainConfig(epochs=a.epochs),
                {"name": "bench-streaming"}, progress=False, with_baselines=False)
    train_s = time.monotonic() - t0
    export_bundle(checkpoint.load(run_dir), bundle_dir, k=20, m=50)
    info = {"bundle": str(bundle_dir), "trained": True, "train_seconds": round(train_s, 1),
            "export_seconds": round(time.monotonic() - t0 - train_s, 1), "epochs": a.epochs,
            "model_kw": {"dim": 32, "hidden": 64}, "offline_test": doc.get("model")}
    return bundle_dir, info


def ceiling(bundle_dir: Path, a: argparse.Namespace) -> dict:
    from export.runtime import Bundle

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from onnx_step import rate  # the same loop as the ceiling benchmark

    bundle = Bundle.load(bundle_dir, threads=1)
    out = {"threads": 1, "seconds": a.ceiling_seconds, "repeats": a.ceiling_repeats, "loadavg_before": loadavg()}
    for batch in (1, 64):
        runs = rate(bundle, batch, a.ceiling_seconds, a.ceiling_repeats)
        med = statistics.median(runs)
        out[f"batch{batch}"] = {"events_per_s": med, "runs": runs, "us_per_step": 1e6 * batch / med}
    return out


def packed_state_bytes(bundle_dir: Path) -> dict:
    from export.runtime import Bundle
    from streams.logic import initial_state
    from streams.state import RECENT_IDS, UserState

    bundle = Bundle.load(bundle_dir, threads=1)
    mf = bundle.manifest
    init = initial_state(bundle)
    full = dataclasses.replace(init, seen=tuple(range(2, 2 + mf.m)), top_items=tuple(range(2, 2 + mf.k)),
                               top_scores=[0.0] * mf.k, recent_ids=tuple(range(RECENT_IDS)), count=1, last_ts=1)
    assert UserState.unpack(full.pack(), mf.layers, mf.hidden).m == mf.m
    return {"initial": len(init.pack()), "full_window": len(full.pack()), "layers": mf.layers, "hidden": mf.hidden,
            "k": mf.k, "m": mf.m, "recent_ids": RECENT_IDS,
            "formula": "50 + 8*L*H + 4*m + 8*k + 8*ids"}


def rocksdb_state(data_dir: Path) -> dict:
    """Users and value sizes in the worker's RocksDB folder (after the worker stopped), and its size."""
    out: dict = {"dir_bytes": sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())}
    try:
        from rocksdict import AccessType, Options, Rdict

        keys = values = users = 0
        dbs = sorted(p for p in data_dir.rglob("*.db") if p.is_dir())
        for p in dbs:
            db = Rdict(str(p), options=Options(raw_mode=True), access_type=AccessType.read_only())
            try:
                for k, v in db.items():
                    if k.startswith(b"__faust") or is_progress_key(k):  # not users
                        continue
                    users += 1
                    keys += len(k)
                    values += len(v)
            finally:
                db.close()
        out.update(partitions=len(dbs), users=users, mean_value_bytes=values / users if users else None,
                   mean_key_bytes=keys / users if users else None,
                   dir_bytes_per_user=out["dir_bytes"] / users if users else None)
    except Exception as exc:  # noqa: BLE001 - a figure we leave out, with the reason
        out["error"] = f"reading RocksDB: {exc!r}"
    return out


def changelog_records(brokers: str, app_id: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=brokers.split(","), group_id=None, enable_auto_commit=False)
    try:
        topics = [t for t in c.topics() if t.startswith(app_id) and t.endswith("-changelog")]
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or ()]
        begin, end = c.beginning_offsets(tps), c.end_offsets(tps)
        return {"topics": topics, "records": sum(end[tp] - begin[tp] for tp in tps)}
    finally:
        c.close()


def recovery(bench: Bench, label: str, guarantee: str, worker, events: list, fresh_ready_s: float) -> dict:
    """Stop the worker, measure its state, delete its RocksDB folder, restart with the same app id."""
    bench.procs.stop(worker)
    data_dir = bench.state_dir(label)
    out: dict = {"label": label, "guarantee": guarantee, "rocksdb": rocksdb_state(data_dir)}
    try:
        out["changelog"] = changelog_records(bench.brokers, bench.app_id(label))
    except Exception as exc:  # noqa: BLE001
        out["changelog"] = {"error": repr(exc)}
    out["loadavg_before"] = loadavg()
    # control: the same restart with the RocksDB folder kept (nothing to restore)
    worker, _, warm_s = bench.start_worker(label, guarantee, name=f"worker-{label}-restart", log_level="info")
    bench.procs.stop(worker)
    shutil.rmtree(data_dir)
    busiest, n = Counter(e.user_id for e in events).most_common(1)[0]
    worker, port, ready_s = bench.start_worker(label, guarantee, name=f"worker-{label}-recovery", log_level="info")
    out.update(ready_s=round(ready_s, 2), restart_with_state_ready_s=round(warm_s, 2),
               fresh_start_ready_s=round(fresh_ready_s, 2), restore_s_estimate=round(ready_s - warm_s, 2),
               loadavg_after=loadavg())
    rec = get_json(f"http://127.0.0.1:{port}/recommendations/{busiest}")
    out["check"] = {"user": busiest, "events_in_data": n, "events_in_restored_state": (rec or {}).get("events")}
    out["restored_state_ok"] = bool(rec) and rec.get("events") == n
    bench.procs.stop(worker)
    return out


# ---- report -------------------------------------------------------------------------------
def fmt(x, spec: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(doc: dict) -> str:
    d, b, lines = doc["data"], doc.get("bundle", {}), []
    m = doc.get("machine", {})
    name = d.get("name", d["source"]) + (" (first events in time order)" if d.get("truncated_to") else "")
    lines.append(f"\nstreaming benchmark: {name}: {d['events']:,} events, {d['users']:,} users, "
                 f"{d['items']:,} items, types {d['event_types']}")
    lines.append(f"bundle: {b.get('model_version')} (n_items {b.get('n_items')}, L{b.get('layers')} "
                 f"H{b.get('hidden')}, k {b.get('k')}, m {b.get('m')}); worker: 1 process, 8 partitions, "
                 "ONNX Runtime 1 thread")
    lines.append(f"machine: {m.get('nproc')} cores, load average at start {m.get('loadavg_start')} and at end "
                 f"{m.get('loadavg_end')} (other jobs on the machine: timings are noisy)")
    ceil = doc.get("ceiling", {}).get("batch1", {}).get("events_per_s")
    if doc.get("max_speed"):
        lines.append("\nthroughput at max speed (replay --max-speed --order none, every event; latency here is a "
                     "BACKLOG figure: events wait in Kafka)")
        lines.append(f"{'guarantee':<15}{'events/s':>10}{'seconds':>9}{'offered/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
                     f"{'p99 ms':>9}{'max ms':>9}{'/ceiling':>10}{'dups':>6}  complete")
        for r in doc["max_speed"]:
            lat = r["latency_ms"]
            ratio = r["events_per_s"] / ceil if ceil and r.get("events_per_s") else None
            lines.append(f"{r['guarantee']:<15}{fmt(r['events_per_s']):>10}{fmt(r['seconds'], '.1f'):>9}"
                         f"{fmt(r['replay']['rate']):>11}{fmt(lat.get('p50')):>9}{fmt(lat.get('p95')):>9}"
                         f"{fmt(lat.get('p99')):>9}{fmt(lat.get('max')):>9}{fmt(ratio, '.1%'):>10}"
                         f"{fmt(r['counts'].get('duplicates'), 'd'):>6}  {r['complete']}")
    if doc.get("fixed_rate"):
        fr = doc["fixed_rate"]
        lines.append(f"\nlatency at fixed offered rates ({fr['guarantee']}, the first {fr['slice_events']:,} events, "
                     f"rates relative to {fmt(fr['max_events_per_s'])} events/s), produce -> publish")
        lines.append(f"{'share':>6}{'target/s':>10}{'offered/s':>11}{'through/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
                     f"{'p99 ms':>9}{'max ms':>9}  complete")
        for r in fr["runs"]:
            lat = r["latency_ms"]
            lines.append(f"{fmt(r['share'], '.0%'):>6}{fmt(r['offered_rate_target']):>10}{fmt(r['replay']['rate']):>11}"
                         f"{fmt(r['events_per_s']):>11}{fmt(lat.get('p50'), ',.1f'):>9}{fmt(lat.get('p95'), ',.1f'):>9}"
                         f"{fmt(lat.get('p99'), ',.1f'):>9}{fmt(lat.get('max'), ',.0f'):>9}  {r['complete']}")
    if doc.get("ceiling"):
        c = doc["ceiling"]
        lines.append(f"\nceiling (bare ONNX step, 1 thread): batch 1 {fmt(c['batch1']['events_per_s'])} events/s "
                     f"({c['batch1']['us_per_step']:.0f} us/step); batch 64 {fmt(c['batch64']['events_per_s'])} events/s")
        for g, ratio in doc.get("ceiling_ratio", {}).items():
            lines.append(f"  pipeline / ceiling (batch 1), {g}: {ratio:.1%}")
    if doc.get("state"):
        s = doc["state"]
        p = s.get("packed", {})
        lines.append(f"\nstate per user: packed UserState {p.get('full_window')} B with a full window "
                     f"(L{p.get('layers')} H{p.get('hidden')}, m {p.get('m')}, k {p.get('k')}, {p.get('recent_ids')} ids; "
                     f"{p.get('initial')} B before any event)")
        r = s.get("rocksdb", {})
        if r.get("users"):
            lines.append(f"  in RocksDB after the {s.get('guarantee')} run: {r['users']:,} users, mean value "
                         f"{r['mean_value_bytes']:,.0f} B + key {r['mean_key_bytes']:.1f} B; folder "
                         f"{r['dir_bytes'] / 1e6:,.2f} MB = {r['dir_bytes_per_user']:,.0f} B/user (RocksDB files, "
                         "WAL and fixed overhead of 8 partitions included)")
        elif r:
            lines.append(f"  RocksDB: {r}")
    if doc.get("recovery"):
        r = doc["recovery"]
        cl = r.get("changelog", {})
        lines.append(f"\nrecovery ({r['guarantee']}): RocksDB folder deleted, same app id: ready in {r['ready_s']:.1f} s "
                     f"restoring {fmt(cl.get('records'))} changelog records; the same restart with the folder kept: "
                     f"{r['restart_with_state_ready_s']:.1f} s (restore ~{r['restore_s_estimate']:.1f} s); first start "
                     f"of that worker {r['fresh_start_ready_s']:.1f} s;\n  state of user {r['check']['user']} "
                     f"restored: {r['restored_state_ok']} "
                     f"({r['check']['events_in_restored_state']} of {r['check']['events_in_data']} events)")
    for e in doc.get("errors", []):
        lines.append(f"\nFAILED {e['step']}: {e['error'].splitlines()[0] if e['error'] else ''}")
    lines.append(f"\ntotal {doc.get('total_seconds', 0):.0f} s; {doc.get('results_file')}")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help=f"data file or folder (default {DEFAULT_DATA}, else synthetic)")
    ap.add_argument("--format", dest="fmt", help="its format (recbole, csv, ...)")
    ap.add_argument("--columns", help="csv column mapping")
    ap.add_argument("--sep", help="field separator override")
    ap.add_argument("--events", type=int, help="use the first N events in time order (synthetic: at least N; "
                                               "default: all, 100k synthetic)")
    ap.add_argument("--bundle", help="serve this bundle instead of training one")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    ap.add_argument("--guarantees", nargs="+", choices=list(SHORT), default=list(SHORT))
    ap.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 0.9],
                    help="offered rates as shares of the measured max throughput (default 0.25 0.5 0.9)")
    ap.add_argument("--slice", type=int, default=20_000, help="events per fixed-rate run at most (default 20000)")
    ap.add_argument("--rate-seconds", type=float, default=90.0,
                    help="cap the slice so the slowest fixed-rate run lasts at most this long (default 90)")
    ap.add_argument("--no-recovery", action="store_true", help="skip the state / recovery measurement")
    ap.add_argument("--ceiling-seconds", type=float, default=2.0)
    ap.add_argument("--ceiling-repeats", type=int, default=3)
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds a worker may take to be ready")
    ap.add_argument("--run-timeout", type=float, default=900.0, help="seconds a replay or evaluation may take")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder, deleted unless a step failed)")
    ap.add_argument("--out", default=str(RESULTS / "streaming.json"), help="results file")
    a = ap.parse_args()
    if bool(a.data) != bool(a.fmt):
        ap.error("--data and --format go together")

    started = time.monotonic()
    work = Path(a.workdir).resolve() if a.workdir else Path(tempfile.mkdtemp(prefix="streamrec-bench-streaming-"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes(work / "logs")
    out_path = Path(a.out)
    doc: dict = {"benchmark": "streaming", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "command": " ".join(sys.argv),
                 "machine": {"nproc": os.cpu_count(), "loadavg_start": loadavg(), "platform": platform.platform(),
                             "python": platform.python_version()},
                 "errors": [], "results_file": str(out_path)}

    def save() -> None:
        doc["total_seconds"] = round(time.monotonic() - started, 1)
        doc["machine"]["loadavg_end"] = loadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")

    def failed(step: str, exc: BaseException) -> None:
        say(f"FAILED {step}: {exc}")
        doc["errors"].append({"step": step, "error": str(exc), "traceback": traceback.format_exc()})
        save()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    broker = None
    say(f"{os.cpu_count()} cores, load average {doc['machine']['loadavg_start']}; work folder {work}")
    try:
        say("data")
        events, data_flags, doc["data"] = load_data(a, work)
        say(f"  {doc['data']['events']:,} events, {doc['data']['users']:,} users, {doc['data']['items']:,} items")
        say("model: " + ("reusing " + a.bundle if a.bundle else f"training (dim 32, hidden 64, {a.epochs} epochs) "
                         "and exporting (k 20, m 50)"))
        bundle_dir, doc["bundle"] = make_bundle(a, events, work)
        from export.manifest import Manifest

        mf = Manifest.from_json((bundle_dir / "manifest.json").read_text())
        doc["bundle"].update(model_version=mf.model_version, n_items=mf.n_items, layers=mf.layers, hidden=mf.hidden,
                             k=mf.k, m=mf.m)
        say(f"  {mf.model_version} ({doc['bundle'].get('train_seconds', 0)} s training)")
        save()

        say("ceiling: bare ONNX step, 1 thread")
        try:
            doc["ceiling"] = ceiling(bundle_dir, a)
            say(f"  batch 1: {doc['ceiling']['batch1']['events_per_s']:,.0f} events/s; "
                f"batch 64: {doc['ceiling']['batch64']['events_per_s']:,.0f} events/s")
        except Exception as exc:  # noqa: BLE001
            failed("ceiling", exc)
        try:
            doc["state"] = {"packed": packed_state_bytes(bundle_dir)}
        except Exception as exc:  # noqa: BLE001
            failed("state bytes", exc)
        save()

        say("starting Kafka")
        from streams.broker import start_broker

        broker = start_broker(name="bench-streaming", data_dir=work / "kafka", die_with_parent=True,
                              record_state=False)
        doc["broker"] = broker.bootstrap
        say(f"  broker at {broker.bootstrap}")
        bench = Bench(a, work, procs, broker.bootstrap, bundle_dir, data_flags)

        doc["max_speed"] = []
        base_guarantee = "at-least-once" if "at-least-once" in a.guarantees else a.guarantees[0]
        for g in a.guarantees:
            label = f"{SHORT[g]}-max"
            say(f"max speed, {g}: {len(events):,} events")
            try:
                res, worker, port = bench.run_keep(label, g, data_flags, None)
                doc["max_speed"].append(res)
                save()
                if g == base_guarantee and not a.no_recovery:
                    say(f"state and recovery ({g}): stop the worker, delete its RocksDB folder, start it again")
                    try:
                        rec = recovery(bench, label, g, worker, events, res["worker_ready_s"])
                        doc.setdefault("state", {}).update(rocksdb=rec.pop("rocksdb"), guarantee=g)
                        doc["recovery"] = rec
                        say(f"  ready in {rec['ready_s']:.1f} s (restart with its folder kept "
                            f"{rec['restart_with_state_ready_s']:.1f} s), "
                            f"{rec.get('changelog', {}).get('records')} changelog records; "
                            f"restored state ok: {rec['restored_state_ok']}")
                    except Exception as exc:  # noqa: BLE001
                        failed(f"recovery {g}", exc)
                procs.stop(worker)
            except Exception as exc:  # noqa: BLE001
                failed(f"max speed {g}", exc)
            save()
        ceil = doc.get("ceiling", {}).get("batch1", {}).get("events_per_s")
        if ceil:
            doc["ceiling_ratio"] = {r["guarantee"]: r["events_per_s"] / ceil for r in doc["max_speed"]
                                    if r.get("events_per_s")}

        base = next((r for r in doc["max_speed"] if r["guarantee"] == base_guarantee and r.get("events_per_s")), None)
        if a.rates and base is None:
            failed("fixed rates", RuntimeError(f"no measured max throughput for {base_guarantee}: rates skipped"))
        elif a.rates:
            top = base["events_per_s"]
            n = max(1000, min(a.slice, len(events), int(min(a.rates) * top * a.rate_seconds)))
            flags = slice_flags(events, n, work)
            doc["fixed_rate"] = {"guarantee": base_guarantee, "max_events_per_s": top, "slice_events": n, "runs": []}
            for share in a.rates:
                target = share * top
                label = f"{SHORT[base_guarantee]}-r{round(share * 100)}"
                say(f"fixed rate {share:.0%} of {top:,.0f} = {target:,.0f} events/s, {base_guarantee}, {n:,} events")
                try:
                    res = bench.run(label, base_guarantee, flags, target)
                    res["share"] = share
                    doc["fixed_rate"]["runs"].append(res)
                except Exception as exc:  # noqa: BLE001
                    failed(f"fixed rate {share}", exc)
                save()
    except KeyboardInterrupt:
        say("interrupted: stopping the workers and Kafka")
        doc["interrupted"] = True
        return_code = 130
    except Exception as exc:  # noqa: BLE001
        failed("setup", exc)
        return_code = 1
    else:
        return_code = 1 if doc["errors"] else 0
    finally:
        procs.stop_all()
        if broker is not None:
            broker.stop()
        save()
    print(table(doc), flush=True)
    if doc["errors"] or doc.get("interrupted") or a.workdir:
        print(f"work folder kept: {work} (logs in {work / 'logs'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return return_code


if __name__ == "__main__":
    sys.exit(main())
