"""Two bundles' workers, paired: drains of the same preloaded backlog, interleaved A B B A ..., for a
throughput comparison that holds on a noisy machine (issue 12's bound on what a model may cost the
worker; the single-run figures of benchmarks/streaming.py moved by up to 1.5x between runs here).

    ./run python benchmarks/drain_pairs.py plain=BUNDLE_A candidate=BUNDLE_B --rounds 6 \\
        --out benchmarks/results/drain-pairs.json

Each round, for each bundle (order A B, then B A, ...) and each guarantee: fresh topics, the first
--events ml-100k events (time order; ../shared/data, or --data/--format) preloaded at full speed
with no worker running, then one worker (`streamrec worker`, ONNX Runtime 1 thread) drains them.
Per drain: events / seconds from /health ready to every event done (polled every 50 ms), and the
worker process's CPU seconds over that span per event (user + system, /proc: steal time is not in
it). The change of each bundle to the first is the ratio of the means over rounds; the per-round
ratios of adjacent runs are given as well. Uses its own broker, in a temporary folder deleted after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cpu_use import cpu_seconds
from paced import paced_produce
from streaming_runs import done_count, health, loadavg, say

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMREC_DATA", ROOT.parent / "shared" / "data"))
GUARANTEES = ("at-least-once", "exactly-once")


def worker_cmd(bundle: str, brokers: str, base: str, guarantee: str, port: int, state: Path) -> list[str]:
    return [sys.executable, "-m", "streamrec.cli.main", "worker", "--bundle", bundle, "--brokers", brokers,
            "--clicks-topic", f"{base}-clicks", "--browses-topic", f"{base}-browses", "--output-topic", f"{base}-recs",
            "--dlq-topic", f"{base}-dlq", "--app-id", base, "--data-dir", str(state / base), "--guarantee", guarantee,
            "--web-host", "127.0.0.1", "--web-port", str(port), "--log-level", "warning"]


def wait(port: int, proc: subprocess.Popen, until, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not until(health(port)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {what}: exited ({proc.poll()}) or timed out after {timeout:.0f} s")
        time.sleep(0.05)


def drain(bundle: str, brokers: str, events: list, guarantee: str, state: Path, timeout: float) -> dict:
    """One drain of ``events`` by a fresh worker of ``bundle``: events/s and CPU us per event."""
    from streamrec.streams.broker import free_port

    base, port = f"pairs-{uuid.uuid4().hex[:10]}", free_port()
    cmd = worker_cmd(bundle, brokers, base, guarantee, port, state)
    w = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # creates the topics
    try:
        wait(port, w, lambda h: h.get("ready"), timeout, "start")
    finally:
        w.terminate()
        w.wait(60)
    sent = paced_produce(brokers, f"{base}-clicks", f"{base}-browses", events, 1e9)["sent"]
    w = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(port, w, lambda h: h.get("ready"), timeout, "start")
        c0, t0 = cpu_seconds(w.pid), time.monotonic()
        wait(port, w, lambda h: (done_count(h) or 0) >= sent, timeout, "drain")
        c1, t1 = cpu_seconds(w.pid), time.monotonic()
    finally:
        w.terminate()
        w.wait(60)
    cpu = None if c0 is None or c1 is None else round(1e6 * (c1 - c0) / sent, 1)
    return {"events": sent, "seconds": round(t1 - t0, 2), "events_per_s": round(sent / (t1 - t0)),
            "cpu_us_per_event": cpu, "cores": None if cpu is None else round(cpu * sent / 1e6 / (t1 - t0), 2)}


def compare(runs: dict, names: list[str]) -> dict:
    """Each bundle against the first: ratio of means, per guarantee, for events/s and CPU per event."""
    out: dict = {}
    for g in GUARANTEES:
        base = runs[names[0]][g]
        for name in names[1:]:
            other = runs[name][g]
            mean = lambda rs, k: statistics.mean(r[k] for r in rs)  # noqa: E731
            out[f"{name} vs {names[0]}, {g}"] = {
                "events_per_s": round(mean(other, "events_per_s") / mean(base, "events_per_s") - 1, 4),
                "throughput_by_cpu": round(mean(base, "cpu_us_per_event") / mean(other, "cpu_us_per_event") - 1, 4),
                "per_round_events_per_s": [round(o["events_per_s"] / b["events_per_s"] - 1, 3) for b, o in zip(base, other)],
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", help="NAME=BUNDLE_DIR, two or more; the first is the reference")
    ap.add_argument("--rounds", type=int, default=6, help="drains per bundle and guarantee (default 6)")
    ap.add_argument("--events", type=int, default=40_000, help="events per drain (default 40000)")
    ap.add_argument("--data", type=Path, default=DATA / "ml-100k" / "ml-100k.inter")
    ap.add_argument("--format", dest="fmt", default="recbole")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a worker may take to start or drain")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drain-pairs.json")
    a = ap.parse_args()
    specs = [s.split("=", 1) for s in a.bundles]
    if len(specs) < 2 or any(len(s) != 2 for s in specs):
        ap.error("give two or more NAME=BUNDLE_DIR")
    from streamrec.model.data import load
    from streamrec.streams.broker import start_broker

    events = sorted(load(a.data, a.fmt), key=lambda e: e.ts)[: a.events]
    work = Path(tempfile.mkdtemp(prefix="streamrec-drain-pairs-"))
    broker = start_broker(name=None, data_dir=work / "kafka", die_with_parent=True)
    state = work / "state"
    names = [n for n, _ in specs]
    runs: dict = {n: {g: [] for g in GUARANTEES} for n in names}
    doc = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "bundles": dict(specs), "events": len(events),
           "data": str(a.data), "cores": os.cpu_count(), "loadavg_start": loadavg(), "runs": runs}
    try:
        for r in range(a.rounds):
            for name, bundle in (specs if r % 2 == 0 else specs[::-1]):
                for g in GUARANTEES:
                    res = drain(bundle, broker.bootstrap, events, g, state, a.timeout)
                    runs[name][g].append({**res, "round": r, "loadavg": loadavg()})
                    say(f"round {r}: {name} {g}: {res['events_per_s']:,} events/s, {res['cpu_us_per_event']} us CPU per event")
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc.update(loadavg_end=loadavg(), change=compare(runs, names))
    a.out.write_text(json.dumps(doc, indent=1))
    for k, v in doc["change"].items():
        say(f"{k}: events/s {v['events_per_s']:+.1%}, throughput by CPU per event {v['throughput_by_cpu']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
