"""Runs of the streaming benchmark (benchmarks/streaming.py): child processes, one worker per run.

Two kinds of run, each on fresh topics, a fresh app id (consumer group) and a fresh RocksDB folder:

  drain  ``Bench.drain``: every event is replayed into the input topics first (``streamrec replay
         --max-speed --order none``, no worker running), then the worker starts and works the
         backlog off. The worker's ``GET /health`` is polled (every 0.5 s, a few bytes) until
         processed + rejected reaches the events sent; then the recommendations and dead-letter
         topics are read from the beginning (``read_outputs``; isolation_level=read_committed under
         exactly-once) for their Kafka record timestamps (the worker's producer clock).
  live   ``Bench.live_run``: the worker starts first, ``streamrec replay --order none`` offers the
         events at a fixed rate (or at max speed); once the worker has answered them all,
         ``streamrec evaluate-live`` reads the topics from the beginning: latency and throughput
         come from its report (Kafka record timestamps, so reading afterwards changes nothing but
         the load on the machine during the run).

``batch_histogram`` reads the worker's micro-batch histogram from ``/health`` (absent from workers
that step one event at a time: batch 1 is assumed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cpu_use import cpu_cores, cpu_seconds, machine_ticks
from paced import paced_produce
from streamrec.cli.processes import Processes as SharedProcesses

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"at-least-once": "alo", "exactly-once": "eos"}

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a serve dependency
    _loads = json.loads


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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
        p = self.logs / f"{name}.out"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamrec.cli.main", *args]


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


def done_count(h: dict) -> int | None:
    """Events the worker has finished (processed + rejected), from its /health; None if not reported."""
    c = h.get("counts")
    if not isinstance(c, dict):
        return None
    processed = c.get("processed", c.get("emitted", 0) + c.get("duplicate", 0))
    return int(processed) + int(c.get("rejected", 0))


# ---- micro-batch histogram ---------------------------------------------------------------------
def _bucket_mid(b: int) -> float:
    """Mean batch size assumed for bucket b (sizes b/2+1 .. b, evenly): 1, 2, 3.5, 6.5, ..."""
    return 1.0 if b == 1 else (b // 2 + 1 + b) / 2


def batch_histogram(h: dict) -> dict:
    """The worker's ``batch_sizes`` (batches per power-of-two bucket: a batch of s events counts under
    the smallest power of two >= s), the buckets used, and the bucket holding the median event.
    Events per bucket are estimated as batches x the bucket's mid size (b/2+1 .. b evenly; the
    histogram has no event counts); the mean batch is exact (events received / batches). A worker
    without the histogram steps one event at a time."""
    raw = h.get("batch_sizes")
    if not isinstance(raw, dict) or not raw:
        return {"reported": False, "counts": None, "buckets_used": [1], "median_event_bucket": 1,
                "note": "no batch_sizes in /health (a worker that steps one event at a time): batch 1 assumed"}
    counts = {int(k): int(v) for k, v in raw.items()}
    used = sorted(b for b, v in counts.items() if v > 0)
    est = {b: counts[b] * _bucket_mid(b) for b in used}
    total, cum, median = sum(est.values()), 0.0, None
    for b in used:
        cum += est[b]
        if median is None and cum >= total / 2:
            median = b
    batches = sum(counts[b] for b in used)
    received = (h.get("counts") or {}).get("received")  # events taken in since start: the exact mean batch
    return {"reported": True, "counts": {str(b): counts[b] for b in sorted(counts)}, "batches": batches,
            "mean_batch": round(received / batches, 2) if received and batches else None,
            "events_estimate": round(total), "mean_batch_estimate": round(total / batches, 2) if batches else None,
            "buckets_used": used or [1], "median_event_bucket": median or 1,
            "events_share_estimate": {str(b): round(est[b] / total, 4) for b in used} if total else {}}


# ---- reading the worker's output ------------------------------------------------------------------
def read_outputs(brokers: str, output: str, dlq: str, isolation: str, expected: int, idle: float,
                 limit: float = 600.0) -> dict:
    """Read the recommendations and dead-letter topics from the beginning until ``expected`` distinct
    sources are answered, nothing new came for ``idle`` seconds, or ``limit`` seconds passed; Kafka
    record timestamps (ms) of both, distinct sources answered, duplicates (a source answered twice)."""
    import numpy as np
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=brokers.split(","), group_id=None, enable_auto_commit=False,
                      isolation_level=isolation, check_crcs=False, fetch_max_wait_ms=100,
                      allow_auto_create_topics=False, client_id="bench-streaming-drain-reader")
    rec_ts: list[int] = []
    dlq_ts: list[int] = []
    sources: set = set()
    unreadable = duplicates = 0
    try:
        tps = [TopicPartition(t, p) for t in (output, dlq) for p in sorted(c.partitions_for_topic(t) or ())]
        if not tps:
            return {"error": f"no partitions for {output} / {dlq}"}
        c.assign(tps)
        c.seek_to_beginning(*tps)
        last_new = t0 = time.monotonic()
        while len(sources) < expected and time.monotonic() - last_new < idle and time.monotonic() - t0 < limit:
            for tp, records in c.poll(timeout_ms=200, max_records=50_000).items():
                last_new = time.monotonic()
                out = rec_ts if tp.topic == output else dlq_ts
                for r in records:
                    out.append(r.timestamp)
                    try:
                        s = _loads(r.value)["source"]
                        key = (s["topic"], int(s["partition"]), int(s["offset"]))
                    except (TypeError, ValueError, KeyError):
                        unreadable += 1
                        continue
                    if key in sources:
                        duplicates += 1
                    sources.add(key)
    finally:
        c.close()
    both = np.array(rec_ts + dlq_ts, dtype=np.int64)
    return {"isolation_level": isolation, "recommendations": len(rec_ts), "dead_letters": len(dlq_ts),
            "records": int(both.size), "answered": len(sources), "duplicates": duplicates, "unreadable": unreadable,
            "expected": expected, "complete": len(sources) >= expected, "_ts": both}


def drain_figures(read: dict, ready_ms: int) -> dict:
    """Events/s of a drain from the Kafka timestamps in ``read`` (see ``Bench.drain``)."""
    import numpy as np

    ts = np.sort(read.pop("_ts"))
    n = int(ts.size)
    if n < 2:
        return {"events_per_s": None, "records": n}
    first, last = int(ts[0]), int(ts[-1])
    span = max(last - first, 1) / 1000
    lo, hi = int(ts[int(0.1 * (n - 1))]), int(ts[int(0.9 * (n - 1))])
    return {
        "events_per_s": (n - 1) / span, "seconds": span, "records": n,
        "definition": "(records - 1) / (last output timestamp - first output timestamp); records = "
                      "recommendations + dead letters, timestamps = Kafka record timestamps",
        "first_output_ms": first, "last_output_ms": last,
        "from_ready": {"events_per_s": n / max(last - ready_ms, 1) * 1000, "seconds": (last - ready_ms) / 1000,
                       "ready_ms": ready_ms, "first_output_after_ready_s": (first - ready_ms) / 1000,
                       "definition": "records / (last output timestamp - wall clock when /health first said "
                                     "ready; polled every 0.1 s)"},
        "middle_80": {"events_per_s": 0.8 * (n - 1) / max(hi - lo, 1) * 1000, "seconds": (hi - lo) / 1000,
                      "definition": "the records between the 10th and 90th percentile of the output timestamps"},
        "per_second": np.bincount((ts - first) // 1000).tolist(),
    }


# ---- one benchmark session -----------------------------------------------------------------------
class Bench:
    """The broker, a bundle, and runs against them (labels must be unique within a session)."""

    def __init__(self, a: argparse.Namespace, work: Path, procs: Processes, brokers: str, bundle_dir: Path,
                 tag: str | None = None, broker_pid: int | None = None):
        self.a, self.work, self.procs, self.brokers, self.bundle_dir = a, work, procs, brokers, bundle_dir
        self.tag = tag or time.strftime("%H%M%S")
        self.broker_pid = broker_pid  # for the CPU each live run took (None: not measured)

    def topics(self, label: str) -> list[str]:
        base = f"bench-{self.tag}-{label}"
        return ["--clicks-topic", f"{base}-clicks", "--browses-topic", f"{base}-browses",
                "--output-topic", f"{base}-recs", "--dlq-topic", f"{base}-dlq"]

    def topic(self, label: str, kind: str) -> str:
        return f"bench-{self.tag}-{label}-{kind}"

    def app_id(self, label: str) -> str:
        return f"bench-streaming-{self.tag}-{label}"

    def state_dir(self, label: str) -> Path:
        return self.work / "state" / f"{self.tag}-{label}"

    def worker_flags(self) -> list[str]:
        """--batch-max / --batch-wait / --consumer, only when given (an older worker does not know them)."""
        flags = []
        if getattr(self.a, "consumer", None) is not None:
            flags += ["--consumer", self.a.consumer]
        if self.a.batch_max is not None:
            flags += ["--batch-max", str(self.a.batch_max)]
        if self.a.batch_wait is not None:
            flags += ["--batch-wait", f"{self.a.batch_wait:g}"]
        return flags

    def start_worker(self, label: str, guarantee: str, name: str | None = None,
                     log_level: str = "warning") -> tuple[subprocess.Popen, int, float]:
        """Start a worker; returns it, its web port and the seconds from launch to /health ready
        (``proc.ready_ms``: the wall clock, epoch ms, when ready was first seen)."""
        from streamrec.streams.broker import free_port

        port = free_port()
        name = name or f"worker-{label}"
        t0 = time.monotonic()
        proc = self.procs.start(cli("worker", "--bundle", str(self.bundle_dir), "--brokers", self.brokers,
                                    *self.topics(label), "--guarantee", guarantee, "--app-id", self.app_id(label),
                                    "--data-dir", str(self.state_dir(label)), "--web-host", "127.0.0.1",
                                    "--web-port", str(port), "--log-level", log_level, *self.worker_flags()), name)
        deadline = t0 + self.a.ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited ({proc.returncode}):\n{self.procs.tail(name)}")
            if health(port).get("ready"):
                proc.ready_ms = int(time.time() * 1000)  # type: ignore[attr-defined]
                return proc, port, time.monotonic() - t0
            time.sleep(0.1)
        self.procs.stop(proc)
        raise RuntimeError(f"worker {name} not ready after {self.a.ready_timeout:.0f} s:\n{self.procs.tail(name)}")

    def stop_label(self, label: str) -> None:
        """Stop every process of a run (none may load the next run)."""
        for proc in [p for p in self.procs.procs if getattr(p, "name", "").endswith(label)]:
            self.procs.stop(proc)

    def replay(self, label: str, data_flags: list[str], rate: float | None) -> tuple[dict, float]:
        """``streamrec replay --order none`` to the end; its JSON summary and wall seconds."""
        speed = ["--rate", f"{rate:.3f}"] if rate else ["--max-speed"]
        t0 = time.monotonic()
        name = f"replay-{label}"
        replay = self.procs.start(cli("replay", *data_flags, "--brokers", self.brokers, *self.topics(label),
                                      *speed, "--order", "none", "--json", "--no-progress"), name)
        try:
            replay.wait(timeout=self.a.run_timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(replay)
            raise RuntimeError(f"replay {label} did not finish in {self.a.run_timeout:.0f} s") from None
        seconds = time.monotonic() - t0
        self.procs.procs.remove(replay)
        out = (self.procs.logs / f"{name}.out").read_text().strip().splitlines()
        if replay.returncode != 0 or not out:
            raise RuntimeError(f"replay {label} failed (exit {replay.returncode}):\n{self.procs.tail(name)}")
        summary = json.loads(out[-1])
        say(f"  replay: {summary['sent']:,} events sent in {seconds:.1f} s ({summary['rate']:,.0f} events/s offered)")
        return {k: summary.get(k) for k in ("events", "sent", "failures", "seconds", "rate", "order")}, seconds

    # -- drain: preloaded backlog ------------------------------------------------------------------
    def drain(self, label: str, guarantee: str, data_flags: list[str], keep: bool = False):
        """Preload every event, then start the worker and let it work the backlog off; returns the
        figures, and the worker and its port when ``keep`` (else it is stopped)."""
        la = loadavg()
        say("  preloading the input topics (no worker running)")
        summary, _ = self.replay(label, data_flags, None)
        sent = int(summary["sent"])
        la_worker = loadavg()
        worker, port, ready_s = self.start_worker(label, guarantee)
        try:
            ready_ms = worker.ready_ms  # type: ignore[attr-defined]
            say(f"  worker ready in {ready_s:.1f} s (web port {port}); draining {sent:,} events")
            cpu0 = cpu_seconds(worker.pid)
            wait = self._wait_drained(worker, port, sent)
            cpu1 = cpu_seconds(worker.pid)
            if cpu0 is not None and cpu1 is not None:  # from ready to drained (polled every 0.5 s)
                wait.update(worker_cpu_s=round(cpu1 - cpu0, 2), cpu_us_per_event=round(1e6 * (cpu1 - cpu0) / sent, 1))
            h = health(port)
            la_done = loadavg()
            iso = "read_committed" if guarantee == "exactly-once" else "read_uncommitted"
            read = read_outputs(self.brokers, self.topic(label, "recs"), self.topic(label, "dlq"), iso, sent,
                                self.a.read_idle, self.a.run_timeout)
            res = {"label": label, "guarantee": guarantee, "replay": summary, "worker_ready_s": round(ready_s, 2),
                   **drain_figures(read, ready_ms), "read": read, "wait": wait,
                   "batch_sizes": batch_histogram(h), "worker_counts": h.get("counts", {}),
                   "worker_rejected": h.get("rejected", {}), "worker_health": h, "app_id": self.app_id(label),
                   "worker_flags": self.worker_flags(), "loadavg_before": la, "loadavg_before_worker": la_worker,
                   "loadavg_after": la_done}
        except BaseException:
            self.stop_label(label)
            self.procs.stop(worker)
            raise
        if not keep:
            self.procs.stop(worker)
        b = res["batch_sizes"]
        say(f"  {res['records']:,} records ({read['recommendations']:,} recommendations, {read['dead_letters']:,} "
            f"dead letters, {read['duplicates']} duplicates): {fmt(res['events_per_s'])} events/s from the first "
            f"output ({fmt(res['from_ready']['events_per_s'] if res.get('from_ready') else None)} from ready; worker CPU "
            f"{fmt(wait.get('cpu_us_per_event'), '.1f')} us per event); "
            f"complete={read['complete']}; median event in batch bucket {b['median_event_bucket']}"
            f"{'' if b['reported'] else ' (no histogram)'}; load {la_done}")
        return res, worker, port

    def _wait_drained(self, worker, port: int, sent: int) -> dict:
        """Poll /health until processed + rejected >= sent, no progress for --drain-idle s, or --run-timeout."""
        t0 = last_change = time.monotonic()
        last = None
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited ({worker.returncode}) while draining:\n"
                                   f"{self.procs.tail(worker.name)}")
            n = done_count(health(port))
            now = time.monotonic()
            if n != last:
                last, last_change = n, now
            if n is not None and n >= sent:
                return {"drained": True, "seconds": round(now - t0, 1), "done": n}
            if now - last_change > self.a.drain_idle or now - t0 > self.a.run_timeout:
                say(f"  drain stalled at {n} of {sent} events: reading what is there")
                return {"drained": False, "seconds": round(now - t0, 1), "done": n}
            time.sleep(0.5)

    # -- live: replay while the worker runs ----------------------------------------------------------
    def live_run(self, label: str, guarantee: str, data_flags: list[str], rate: float | None,
                 events: list | None = None) -> dict:
        """Worker + events offered at ``rate`` (None: ``streamrec replay`` at max speed; with ``events``, the
        paced producer below) + evaluate-live after; the worker is stopped."""
        la = loadavg()
        worker, port, ready_s = self.start_worker(label, guarantee)
        try:
            return self._live(label, guarantee, data_flags, rate, worker, port, ready_s, la, events)
        finally:
            self.stop_label(label)
            self.procs.stop(worker)

    def _live(self, label, guarantee, data_flags, rate, worker, port, ready_s, la, events=None) -> dict:
        say(f"  worker ready in {ready_s:.1f} s (web port {port})")
        report_path = self.work / f"live-{label}.json"
        paced = rate is not None and events is not None  # else `streamrec replay` offers, in its own process
        pids = {"worker": worker.pid, "broker": self.broker_pid, "generator": os.getpid() if paced else None}
        cpu0, wall0 = {k: cpu_seconds(p) if p else None for k, p in pids.items()}, time.monotonic()
        ticks0 = machine_ticks()
        if paced:
            summary = paced_produce(self.brokers, self.topic(label, "clicks"), self.topic(label, "browses"), events, rate,
                                    producer=getattr(self.a, "producer", "librdkafka"),
                                    linger_ms=getattr(self.a, "producer_linger_ms", 0),
                                    warm=not getattr(self.a, "cold_producer", False))
            say(f"  paced producer: {summary['sent']:,} events sent in {summary['seconds']:.1f} s "
                f"({summary['rate']:,.0f} events/s offered)")
        else:
            summary, _ = self.replay(label, data_flags, rate)
        self._wait_drained(worker, port, summary["sent"])
        cpu = cpu_cores(pids, cpu0, time.monotonic() - wall0, ticks0)
        # evaluate-live reads the topics from the beginning and takes every time from Kafka's record timestamps,
        # so it reads after the run: while the run goes, the worker shares the 2 cores with the broker and the
        # replay only, not with a third Python process.
        live = self.procs.start(cli("evaluate-live", *data_flags, "--bundle", str(self.bundle_dir),
                                    "--brokers", self.brokers, *self.topics(label), "--timeout", "20", "--json",
                                    "--no-progress", "--report", str(report_path)), f"live-{label}")
        deadline = time.monotonic() + self.a.run_timeout
        while live.poll() is None:
            if worker.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited ({worker.returncode}) during the run:\n"
                                   f"{self.procs.tail(worker.name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"evaluate-live {label} did not finish in {self.a.run_timeout:.0f} s")
            time.sleep(0.2)
        self.procs.procs.remove(live)
        if not report_path.exists():
            raise RuntimeError(f"evaluate-live {label} wrote no report (exit {live.returncode}):\n"
                               f"{self.procs.tail(f'live-{label}')}")
        report = json.loads(report_path.read_text())
        h = health(port)
        thr, lat, counts = report["throughput"], report["latency_ms"], report["counts"]
        res = {"label": label, "guarantee": guarantee, "offered_rate_target": rate, "replay": summary,
               "events_per_s": thr.get("events_per_s"), "seconds": thr.get("seconds"), "outputs": thr.get("outputs"),
               "per_second": thr.get("per_second"), "latency_ms": lat,
               "latency_by_second": report.get("latency_by_second"), "complete": report["complete"],
               "counts": counts, "metrics": report["metrics"], "worker_ready_s": round(ready_s, 2),
               "batch_sizes": batch_histogram(h), "worker_counts": h.get("counts", {}),
               "worker_rejected": h.get("rejected", {}), "worker_health": h, "app_id": self.app_id(label),
               "worker_flags": self.worker_flags(), "loadavg_before": la, "loadavg_after": loadavg(),
               "evaluate_live_exit": live.returncode, "cpu_cores": cpu}
        say(f"  {thr.get('outputs', 0):,} recommendations, {fmt(thr.get('events_per_s'))} events/s end to end, "
            f"latency p50 {fmt(lat.get('p50'))} / p95 {fmt(lat.get('p95'))} / p99 {fmt(lat.get('p99'))} ms; "
            f"complete={report['complete']}, duplicates={counts.get('duplicates')}, load {res['loadavg_after']}")
        return res


def fmt(x, spec: str = ",.0f") -> str:
    import math

    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
