"""``streamrec demo``: the whole system on one machine, start to finish, in a few minutes.

Provisions and starts Kafka, trains a small model (synthetic click/browse data by default),
exports the bundle, starts the worker, replays the data set through Kafka, prints live
recommendations for a few users as they change, then the live metrics beside the offline ones
and the baselines, writes plots, and stops everything. Ctrl-C at any point stops every process
it started (the broker, the worker, the live evaluator).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cli.common import DATA_HELP
from cli.main import CliError
from cli.processes import Processes

#: The demo's model and training settings (tests/model/test_synth.py checks that this model
#: beats MostPopular and Markov on the demo data).
MODEL_KW = {"dim": 32, "hidden": 64, "dropout": 0.3, "transitions": 16}
DEMO_USERS, DEMO_ITEMS, DEMO_EPOCHS = 1000, 400, 15


def train_config(epochs: int = DEMO_EPOCHS):
    from model.config import TrainConfig

    return TrainConfig(epochs=epochs, patience=3, lr=5e-3, lr_decay=1.0)


EPILOG = """\
what it does, step by step:
  1 data      synthetic click/browse streams (seeded; model/synth.py), or --data/--format
  2 kafka     a real Apache Kafka on 127.0.0.1 (jars from Maven Central, cached)
  3 train     the LSTM under the TEMPORAL-stream protocol; offline metrics beside the baselines
  4 export    the ONNX bundle, parity-checked against PyTorch
  5 stream    the worker (Faust, RocksDB state) + `streamrec replay` of the whole data set
  6 watch     live lists of a few users as they change
  7 measure   `streamrec evaluate-live`: live HR/NDCG/MRR (equal to the offline bundle figures),
              latency percentiles, throughput; plots in WORKDIR/plots
examples:
  streamrec demo
  streamrec demo --users 3000 --epochs 10
  streamrec demo --data ../shared/data/ml-100k/ml-100k.inter --format recbole
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline end to end on one machine (a few minutes)",
                       description=__doc__.split("\n\n")[1], epilog=EPILOG + "\n" + DATA_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", metavar="PATH", help="a real data set instead of synthetic data")
    p.add_argument("--format", dest="fmt", metavar="FMT", help="its format (see below)")
    p.add_argument("--columns", help="csv column mapping")
    p.add_argument("--sep", help="field separator override")
    p.add_argument("--users", type=int, default=DEMO_USERS, help=f"synthetic users (default {DEMO_USERS})")
    p.add_argument("--items", type=int, default=DEMO_ITEMS, help=f"synthetic items (default {DEMO_ITEMS})")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed (default 0)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"training epochs at most (default {DEMO_EPOCHS})")
    p.add_argument("--workdir", default=os.environ.get("STREAMREC_DEMO_DIR", "runs/demo"),
                   help="where data, model, bundle, state, logs and plots go [STREAMREC_DEMO_DIR] (default runs/demo)")
    p.add_argument("--watch", type=int, default=3, help="users whose live lists are printed (default 3)")
    p.add_argument("--rate", type=float, help="replay rate in events/s (default: as fast as possible)")
    p.set_defaults(func=run)


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    if bool(args.data) != bool(args.fmt):
        raise CliError("--data and --format go together")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    broker = None
    started = time.monotonic()
    # SIGTERM (e.g. from a supervisor) gets the same clean stop as Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        data_flags, events = _data(args, work)
        say("2/7 starting Apache Kafka (first run: fetches the broker jars from Maven Central)")
        from streams.broker import start_broker

        broker = start_broker(name="demo", data_dir=work / "kafka", die_with_parent=True,
                              progress=lambda s: print(f"   {s}", flush=True))
        print(f"   broker at {broker.bootstrap}")
        run_dir, bundle_dir, manifest = _train_and_export(args, work, events)
        tag = time.strftime("%Y%m%d-%H%M%S")
        worker, web_port = _start_worker(procs, work, bundle_dir, broker.bootstrap, tag)
        live = procs.start([sys.executable, "-m", "cli.main", "evaluate-live", *data_flags, "--bundle", str(bundle_dir),
                            "--brokers", broker.bootstrap, "--json", "--no-progress", "--compare-offline",
                            "--plots", str(work / "plots"), "--report", str(work / "live.json"), "--timeout", "60"],
                           work / "evaluate-live.log", stdout=subprocess.PIPE)
        watcher = Watcher(broker.bootstrap, _busy_users(events, args.watch))
        watcher.start()
        say(f"5/7 replaying {len(events):,} events through Kafka (strict per-user order); "
            f"6/7 live lists of {', '.join(watcher.users)} as they change")
        replay = subprocess.run([sys.executable, "-m", "cli.main", "replay", *data_flags, "--brokers", broker.bootstrap,
                                 "--json", *(["--rate", str(args.rate)] if args.rate else [])],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        if replay.returncode != 0:
            raise CliError(f"replay failed (exit {replay.returncode})")
        print(f"   replay: {json.loads(replay.stdout.strip().splitlines()[-1])['rate']:,.0f} events/s offered")
        say("7/7 live evaluation (reading the recommendations topic until every event is answered)")
        out, _ = live.communicate(timeout=900)
        watcher.stop()
        report = json.loads(out.decode().strip().splitlines()[-1])
        _print_results(report, run_dir, work, manifest, _health(web_port))
        procs.stop(worker)
        print(f"\ndone in {time.monotonic() - started:.0f} s; everything is in {work}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the worker, the evaluator and Kafka ...", flush=True)
        return 130
    finally:
        procs.stop_all()
        if broker is not None:
            broker.stop()


def _data(args, work: Path):
    from cli.common import load_events
    from model.synth import CSV_COLUMNS, SynthConfig, generate, write_csv

    if args.data:
        say(f"1/7 data: {args.data}")
        events = load_events(args)
        flags = ["--data", args.data, "--format", args.fmt]
        flags += ["--columns", args.columns] if args.columns else []
        flags += ["--sep", args.sep] if args.sep else []
        return flags, events
    say(f"1/7 data: synthetic click/browse streams, {args.users} users, {args.items} items (seed {args.seed})")
    events = generate(SynthConfig(users=args.users, items=args.items, seed=args.seed))
    path = write_csv(events, work / "events.csv")
    print(f"   {len(events):,} events -> {path}")
    return ["--data", str(path), "--format", "csv", "--columns", CSV_COLUMNS], events


def _train_and_export(args, work: Path, events):
    import shutil

    from cli.tables import metrics_table
    from export.onnx_export import export_bundle
    from model import checkpoint
    from model.pipeline import train

    say("3/7 training the LSTM (TEMPORAL-stream protocol: the last 10% of time is the test period)")
    run_dir = work / "model"
    doc = train(events, "temporal", run_dir, MODEL_KW, train_config(args.epochs), {"name": "demo"})
    print(metrics_table({"LSTM": doc["model"], **doc["baselines"]}))
    say("4/7 exporting the ONNX bundle (parity-checked against PyTorch)")
    bundle_dir = work / "bundle"
    shutil.rmtree(bundle_dir, ignore_errors=True)
    manifest, report = export_bundle(checkpoint.load(run_dir), bundle_dir, k=20, m=30, model_id="lstm-demo")
    worst = max(c.max_abs for c in report.checks if "h_out" in c.name or "c_out" in c.name)
    print(f"   {manifest.model_version}: parity ok ({len(report.checks)} checks, worst state diff {worst:.1e})")
    return run_dir, bundle_dir, manifest


def _start_worker(procs: Processes, work: Path, bundle_dir: Path, brokers: str, tag: str):
    from streams.broker import free_port

    port = free_port()
    say(f"5/7 starting the worker (log: {work / 'worker.log'}; http://127.0.0.1:{port}/recommendations/USER)")
    worker = procs.start([sys.executable, "-m", "cli.main", "worker", "--bundle", str(bundle_dir), "--brokers", brokers,
                          "--app-id", f"streamrec-demo-{tag}", "--data-dir", str(work / "state" / tag),
                          "--web-host", "127.0.0.1", "--web-port", str(port), "--log-level", "warning"],
                         work / "worker.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise CliError(f"the worker exited ({worker.returncode}); see {work / 'worker.log'}")
        if _health(port).get("ready"):
            return worker, port
        time.sleep(0.5)
    raise CliError(f"the worker did not become ready in 120 s; see {work / 'worker.log'}")


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return {}


def _busy_users(events, n: int) -> list[str]:
    """Users with the most events in the test period (the last 10% of time)."""
    from collections import Counter

    from model.splits import cutoff

    t = cutoff([e.ts for e in events])
    return [u for u, _ in Counter(e.user_id for e in events if e.ts >= t).most_common(n)]


class Watcher(threading.Thread):
    """Prints the watched users' lists from the recommendations topic as they change."""

    def __init__(self, brokers: str, users: list[str], show: int = 5, limit: int = 8):
        super().__init__(daemon=True)
        self.brokers, self.users, self.show, self.limit = brokers, users, show, limit
        self.printed: dict[str, int] = {u: 0 for u in users}
        self._halt = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        try:
            consumer = KafkaConsumer("recommendations", bootstrap_servers=self.brokers.split(","), group_id=None,
                                     auto_offset_reset="earliest", isolation_level="read_committed",
                                     consumer_timeout_ms=500)
        except Exception as exc:  # noqa: BLE001 - the watcher is a nicety; never fail the demo for it
            print(f"   (live watch unavailable: {exc})")
            return
        wanted = {u.encode() for u in self.users}
        while not self._halt.is_set():
            for msg in consumer:
                if msg.key in wanted:
                    self._show(json.loads(msg.value))
                if self._halt.is_set():
                    break
        consumer.close()

    def _show(self, rec: dict) -> None:
        u = rec["user_id"]
        self.printed[u] += 1
        if self.printed[u] <= self.limit:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(rec["event_ts"] / 1000))
            top = ", ".join(rec["items"][: self.show])
            print(f"   {u:>8} @ {when} (event #{self.printed[u]}, {rec['source']['topic']}): {top} ...", flush=True)
        elif self.printed[u] == self.limit + 1:
            print(f"   {u:>8} ... (further updates not shown)", flush=True)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _print_results(report: dict, run_dir: Path, work: Path, manifest, health: dict) -> None:
    from cli.tables import metrics_table

    offline = json.loads((run_dir / "metrics.json").read_text())
    cols = ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20")
    rows = {"LSTM live (Kafka)": report["metrics"], "LSTM offline (bundle)": report.get("offline", {})}
    print("\nlive vs offline, serving rule (the lists the worker published: seen items dropped)")
    print(metrics_table(rows, cols))
    print("\noffline, history rule of BENCHMARKS.md (the model vs the baselines)")
    print(metrics_table({"LSTM": offline["model"], **offline["baselines"]}, cols))
    lat = report.get("latency_ms", {})
    thr = report.get("throughput", {})
    if lat:
        print(f"\nlatency produce -> recommendation (ms): p50 {lat.get('p50', 0):.1f}  p95 {lat.get('p95', 0):.1f}  "
              f"p99 {lat.get('p99', 0):.1f}  max {lat.get('max', 0):.1f}")
    if thr:
        print(f"throughput: {thr.get('events_per_s', 0):,.0f} events/s end to end")
    if health:
        print(f"worker counters: {json.dumps(health.get('counts', {}))}; rejected by reason: "
              f"{json.dumps(health.get('rejected', {}))}; torch imported in the worker: {health.get('torch_imported')}")
    print(f"plots: {', '.join(report.get('plots', []))}, {run_dir / 'training_curve.png'}")
