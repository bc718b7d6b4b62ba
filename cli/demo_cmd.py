"""``streamrec demo``: the whole system on one machine, start to finish, in a few minutes.

Provisions and starts Kafka, trains a small model (synthetic click/browse data by default),
exports the bundle, starts the worker, replays the data set through Kafka, prints live
recommendations for a few users as they change, then the live metrics beside the offline ones
and the baselines, the worker's backlog-drain throughput and its latency at a paced rate it
sustains, writes plots, and stops everything. Ctrl-C at any point stops every process
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
from collections.abc import Callable
from pathlib import Path

from streamrec.cli.common import DATA_HELP
from streamrec.cli.main import CliError
from streamrec.cli.processes import Processes

#: The demo's model and training settings (tests/model/test_synth.py checks that this model
#: beats MostPopular and Markov on the demo data).
MODEL_KW = {"dim": 32, "hidden": 64, "dropout": 0.3, "transitions": 16}
DEMO_USERS, DEMO_ITEMS, DEMO_EPOCHS = 1000, 400, 15


def train_config(epochs: int = DEMO_EPOCHS):
    from streamrec.model.config import TrainConfig

    return TrainConfig(epochs=epochs, patience=3, lr=5e-3, lr_decay=1.0)


EPILOG = """\
what it does, step by step:
  1 data      synthetic click/browse streams (seeded; model/synth.py), or --data/--format
  2 kafka     a real Apache Kafka on 127.0.0.1 (jars from Maven Central, cached)
  3 train     the LSTM under the TEMPORAL-stream protocol; offline metrics beside the baselines
  4 export    the ONNX bundle, parity-checked against PyTorch
  5 stream    the worker (Faust, RocksDB state) + `streamrec replay` of the whole data set, in
              timestamp order, in two parts (three when the rest is long, see below):
                backlog  the first --backlog-share of the events at max speed; the worker's
                         backlog-drain throughput = events/s from the first to the last
                         recommendation of that part (Kafka record timestamps)
                paced    the rest at a fixed rate the worker sustains: --paced-share of the
                         drain rate (kept within %(floor)s..%(ceiling)s events/s), or --paced-rate; only
                         the last --paced-seconds worth of events are paced, the ones before
                         them go at max speed and are drained first (catch-up)
              each part starts once the worker has answered every event before it, so the
              paced part meets an empty queue and its latency is service time, not queueing
  6 watch     live lists of a few users as they change
  7 measure   `streamrec evaluate-live` over the whole replay: live HR/NDCG/MRR (equal to the
              offline bundle figures); then the backlog-drain throughput and the latency
              percentiles (produce -> recommendation, Kafka timestamps) of the paced part only;
              plots in WORKDIR/plots (latency CDF of the paced part), figures in
              WORKDIR/demo.json, the live evaluation's report in WORKDIR/live.json
examples:
  streamrec demo
  streamrec demo --users 3000 --epochs 10
  streamrec demo --paced-rate 200            (latency at 200 events/s offered)
  streamrec demo --data ../shared/data/ml-100k/ml-100k.inter --format recbole
"""

#: Bounds of the derived paced rate (events/s); --paced-rate is taken as given.
PACED_FLOOR, PACED_CEILING = 10.0, 5000.0
#: Longest wait for the worker to answer a replayed part without any new answer (s).
STALL_S = 60.0
EPILOG = EPILOG % {"floor": f"{PACED_FLOOR:,.0f}", "ceiling": f"{PACED_CEILING:,.0f}"}


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
    g = p.add_argument_group("throughput and latency (see step 5)")
    g.add_argument("--backlog-share", type=float, default=0.4, metavar="F",
                   help="share of the events (the earliest) replayed at max speed to measure the backlog-drain "
                        "throughput, 0.05..0.8 (default 0.4)")
    g.add_argument("--paced-share", type=float, default=0.5, metavar="F",
                   help="paced rate as a share of the measured drain rate, 0..1 (default 0.5)")
    g.add_argument("--paced-rate", "--rate", type=float, metavar="EVENTS_PER_S",
                   help="pace at this rate instead of the derived one (taken as given; --rate: its old name)")
    g.add_argument("--paced-seconds", type=float, default=60.0, metavar="S",
                   help="pace at most the latest rate*S events (S seconds at the paced rate); earlier ones of "
                        "the rest go at max speed first and are answered before pacing starts (default 60)")
    p.set_defaults(func=run)


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    if bool(args.data) != bool(args.fmt):
        raise CliError("--data and --format go together")
    _check_flags(args)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    broker = None
    started = time.monotonic()
    # SIGTERM (e.g. from a supervisor) gets the same clean stop as Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        data_flags, events = _data(args, work)
        parts = _parts(events, args)
        say("2/7 starting Apache Kafka (first run: fetches the broker jars from Maven Central)")
        import shutil

        from streamrec.streams.broker import load, start_broker

        # a fresh broker: a kept one still holds the last run's events, which a new worker would
        # consume first, then drop this run's events as repeats of their ids
        running = load("demo")
        if not (running and any(b.is_running() for b in running.brokers)):  # else start_broker says so
            shutil.rmtree(work / "kafka", ignore_errors=True)
        broker = start_broker(name="demo", data_dir=work / "kafka", die_with_parent=True,
                              progress=lambda s: print(f"   {s}", flush=True))
        print(f"   broker at {broker.bootstrap}")
        run_dir, bundle_dir, manifest = _train_and_export(args, work, events)
        tag = time.strftime("%Y%m%d-%H%M%S")
        worker, web_port = _start_worker(procs, work, bundle_dir, broker.bootstrap, tag)
        live = procs.start([sys.executable, "-m", "streamrec.cli.main", "evaluate-live", *data_flags, "--bundle", str(bundle_dir),
                            "--brokers", broker.bootstrap, "--json", "--no-progress", "--compare-offline",
                            "--report", str(work / "live.json"), "--timeout", "60"],
                           work / "evaluate-live.log", stdout=subprocess.PIPE)
        watcher = Watcher(broker.bootstrap, _busy_users(events, args.watch))
        watcher.start()
        say(f"5/7 replaying {len(events):,} events through Kafka (strict per-user order): first a backlog of "
            f"{parts['backlog']:,} at max speed, then the rest paced; "
            f"6/7 live lists of {', '.join(watcher.users)} as they change")
        figures = _stream(args, work, data_flags, broker.bootstrap, parts, watcher, worker, web_port)
        say("7/7 live evaluation (reading the recommendations topic until every event is answered)")
        out, _ = live.communicate(timeout=900)
        report = json.loads(out.decode().strip().splitlines()[-1])
        figures["paced"].update(_paced_latency(watcher, figures.pop("_paced_sent")))
        watcher.stop()
        (work / "demo.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        report["plots"] = [str(p) for p in _plots(report, figures, work / "plots")]
        _print_results(report, figures, run_dir, manifest, _health(web_port))
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
    from streamrec.cli.common import load_events
    from streamrec.model.synth import CSV_COLUMNS, SynthConfig, generate, write_csv

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

    from streamrec.cli.tables import metrics_table
    from streamrec.export.onnx_export import export_bundle
    from streamrec.model import checkpoint
    from streamrec.model.pipeline import train

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
    from streamrec.streams.broker import free_port

    port = free_port()
    say(f"5/7 starting the worker (log: {work / 'worker.log'}; http://127.0.0.1:{port}/recommendations/USER)")
    worker = procs.start([sys.executable, "-m", "streamrec.cli.main", "worker", "--bundle", str(bundle_dir), "--brokers", brokers,
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

    from streamrec.model.splits import cutoff

    t = cutoff([e.ts for e in events])
    return [u for u, _ in Counter(e.user_id for e in events if e.ts >= t).most_common(n)]


class Watcher(threading.Thread):
    """Reads the recommendations and dead-letter topics from the beginning: notes when each input
    record (by its ``source`` coordinates) was answered (Kafka record timestamp of its first
    answer, ms), which the demo's throughput and latency figures come from, and prints the watched
    users' lists as they change."""

    def __init__(self, brokers: str, users: list[str], show: int = 5, limit: int = 8):
        from streamrec.cli.replay_cmd import env_default

        super().__init__(daemon=True)
        self.brokers, self.users, self.show, self.limit = brokers, users, show, limit
        self.output_topic = env_default("STREAMREC_OUTPUT_TOPIC", "recommendations")
        self.dlq_topic = env_default("STREAMREC_DLQ_TOPIC", "events.dlq")
        self.printed: dict[str, int] = {u: 0 for u in users}
        self.answered: dict[tuple[str, int, int], int] = {}  # source -> timestamp of its first answer
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except Exception as exc:  # noqa: BLE001 - reported by the demo when it needs the figures
            self.error = f"{type(exc).__name__}: {exc}"

    def _read(self) -> None:
        from kafka import KafkaConsumer

        from streamrec.streams.replay import source_of

        consumer = KafkaConsumer(self.output_topic, self.dlq_topic, bootstrap_servers=self.brokers.split(","),
                                 group_id=None, auto_offset_reset="earliest", isolation_level="read_committed",
                                 allow_auto_create_topics=False, check_crcs=False, fetch_max_wait_ms=100,
                                 consumer_timeout_ms=500)
        wanted = {u.encode() for u in self.users}
        try:
            while not self._halt.is_set():
                for msg in consumer:
                    if msg.topic == self.output_topic:
                        try:
                            rec = json.loads(msg.value)
                            s = rec["source"]
                            source = (str(s["topic"]), int(s["partition"]), int(s["offset"]))
                        except (TypeError, ValueError, KeyError):
                            continue
                        if msg.key in wanted:
                            self._show(rec)
                    else:
                        source = source_of(msg.value)
                        if source is None:
                            continue
                    self.answered.setdefault(source, msg.timestamp)
                    if self._halt.is_set():
                        break
        finally:
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


# ---- the replay in parts: backlog (max speed) -> drain rate -> [catch-up] -> paced ---------------
Sent = list[tuple[tuple[str, int, int], int]]  # (source coordinates, produce timestamp ms) per event


def _cut(ts: list[int], n: int) -> int:
    """The first index >= n where the timestamp changes (so a cut never splits events of one ts,
    and ``--limit``/``--from-ts`` select exactly the parts)."""
    while 0 < n < len(ts) and ts[n - 1] == ts[n]:
        n += 1
    return n


def _check_flags(args) -> None:
    if not 0.05 <= args.backlog_share <= 0.8:
        raise CliError(f"--backlog-share {args.backlog_share}: must be within 0.05..0.8 (the rest holds the "
                       "test period, the last 10% of time)")
    if not 0 < args.paced_share <= 1:
        raise CliError(f"--paced-share {args.paced_share}: must be within 0..1 (a share of the drain rate)")
    if args.paced_rate is not None and args.paced_rate <= 0:
        raise CliError(f"--paced-rate {args.paced_rate}: must be > 0 events/s")
    if args.paced_seconds <= 0:
        raise CliError(f"--paced-seconds {args.paced_seconds}: must be > 0")


def _parts(events, args) -> dict:
    """The backlog cut: events [0, backlog) in timestamp order go at max speed."""
    ts = sorted(int(e.ts) for e in events)
    backlog = _cut(ts, round(args.backlog_share * len(ts)))
    if not 0 < backlog < len(ts):
        raise CliError(f"cannot cut {len(ts):,} events at {args.backlog_share:.0%} (timestamps tie): "
                       "try another --backlog-share")
    return {"ts": ts, "backlog": backlog}


def _replay(data_flags: list[str], brokers: str, log: Path, *, limit: int | None = None,
            from_ts: int | None = None, rate: float | None = None) -> tuple[dict, Sent]:
    """One `streamrec replay` of a slice (strict per-user order); its summary and what it sent."""
    cmd = [sys.executable, "-m", "streamrec.cli.main", "replay", *data_flags, "--brokers", brokers, "--json", "--log", str(log)]
    cmd += ["--from-ts", str(from_ts)] if from_ts is not None else []
    cmd += ["--limit", str(limit)] if limit is not None else []
    cmd += ["--rate", f"{rate:.3f}"] if rate else ["--max-speed"]
    replay = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    if replay.returncode != 0:
        raise CliError(f"replay failed (exit {replay.returncode})")
    sent = []
    with open(log, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            sent.append(((d["topic"], int(d["partition"]), int(d["offset"])), int(d["timestamp"])))
    return json.loads(replay.stdout.strip().splitlines()[-1]), sent


def _wait_answered(watcher: Watcher, worker: subprocess.Popen, sent: Sent, what: str, work: Path,
                   health: Callable[[], dict], stall: float = STALL_S) -> list[int]:
    """Wait until the worker answered every event of ``sent``; the answers' timestamps (ms)."""
    pending = {c for c, _ in sent}
    last_left, last_change = len(pending), time.monotonic()
    while pending:
        pending = {c for c in pending if c not in watcher.answered}
        now = time.monotonic()
        if watcher.error or not watcher.is_alive():
            raise CliError(f"reading the recommendations topic failed: {watcher.error or 'the reader stopped'}")
        if worker.poll() is not None:
            raise CliError(f"the worker exited ({worker.returncode}); see {work / 'worker.log'}")
        if len(pending) < last_left:
            last_left, last_change = len(pending), now
        elif pending and now - last_change > stall:
            raise CliError(f"the worker answered {len(sent) - len(pending):,} of the {len(sent):,} {what} events, "
                           f"then nothing for {stall:.0f} s (its counters: {health().get('counts')}); "
                           f"see {work / 'worker.log'}")
        if pending:
            time.sleep(0.2)
    return [watcher.answered[c] for c, _ in sent]


def _stream(args, work: Path, data_flags: list[str], brokers: str, parts: dict, watcher: Watcher,
            worker: subprocess.Popen, web_port: int) -> dict:
    """Replay every event in parts (see the epilog); the figures for demo.json."""
    import numpy as np

    ts, backlog = parts["ts"], parts["backlog"]
    total = len(ts)
    summary, sent = _replay(data_flags, brokers, work / "replay-backlog.jsonl", limit=backlog)
    print(f"   backlog: {backlog:,} events sent at max speed in {summary['seconds']:.1f} s; "
          "waiting until the worker has answered them", flush=True)
    answers = sorted(_wait_answered(watcher, worker, sent, "backlog", work, lambda: _health(web_port)))
    span = (answers[-1] - answers[0]) / 1000.0
    if len(answers) < 2 or span <= 0:
        raise CliError(f"the backlog of {backlog:,} events is too small to measure a drain rate: "
                       "raise --backlog-share or give --paced-rate")
    drain = (len(answers) - 1) / span
    waited = float(np.median([watcher.answered[c] - t for c, t in sent]))  # queueing included
    figures: dict = {"events": total, "backlog": {
        "events": backlog, "share": backlog / total, "replay_events_per_s": summary["rate"],
        "drain_events_per_s": drain, "seconds": span, "latency_p50_ms": waited,
        "measures": "events/s from the first to the last recommendation of the backlog part (Kafka timestamps)"}}
    if args.paced_rate:
        rate, how = args.paced_rate, "--paced-rate"
    else:
        want = args.paced_share * drain
        rate = min(max(want, PACED_FLOOR), PACED_CEILING)
        how = f"{args.paced_share:.0%} of the drain rate"
        how += (f", raised to the floor of {PACED_FLOOR:,.0f}" if want < PACED_FLOOR else
                f", capped at {PACED_CEILING:,.0f}" if want > PACED_CEILING else "")
    start = _cut(ts, max(backlog, total - max(1, int(rate * args.paced_seconds))))
    if start >= total:
        start = backlog
    print(f"   backlog drained at {drain:,.0f} events/s; pacing the last {total - start:,} events at "
          f"{rate:,.0f} events/s ({how})", flush=True)
    catch_up = None
    if start > backlog:
        print(f"   catch-up: the {start - backlog:,} events before them at max speed first (keeps the paced part "
              f"within --paced-seconds {args.paced_seconds:g}), until the worker has answered them", flush=True)
        summary, sent = _replay(data_flags, brokers, work / "replay-catch-up.jsonl", from_ts=ts[backlog],
                                limit=start - backlog)
        _wait_answered(watcher, worker, sent, "catch-up", work, lambda: _health(web_port))
        catch_up = {"events": start - backlog, "replay_events_per_s": summary["rate"]}
    figures["catch_up"] = catch_up
    summary, sent = _replay(data_flags, brokers, work / "replay-paced.jsonl", from_ts=ts[start], rate=rate)
    print(f"   paced: {summary['sent']:,} events offered at {summary['rate']:,.0f} events/s", flush=True)
    figures["paced"] = {"events": total - start, "rate_events_per_s": rate, "how": how,
                        "offered_events_per_s": summary["rate"],
                        "measures": "latency produce -> recommendation (Kafka timestamps) of the paced part only"}
    figures["_paced_sent"] = sent
    return figures


def _paced_latency(watcher: Watcher, sent: Sent, wait: float = 15.0) -> dict:
    """Latency (answer timestamp - produce timestamp, ms) of the paced events: percentiles and CDF."""
    import numpy as np

    from streamrec.streams.live_eval import latency_stats

    deadline = time.monotonic() + wait  # evaluate-live has seen every answer; the reader may trail it a little
    while any(c not in watcher.answered for c, _ in sent) and time.monotonic() < deadline and watcher.is_alive():
        time.sleep(0.2)
    lat = [watcher.answered[c] - t for c, t in sorted(sent, key=lambda x: x[1]) if c in watcher.answered]
    out = {"latency_ms": latency_stats(lat), "unanswered": len(sent) - len(lat),
           "latency_cdf_ms": np.percentile(lat, np.arange(101)).tolist() if lat else []}
    if len(lat) >= 50:  # a queue that builds up shows as latency growing along the part
        fifths = np.array_split(np.asarray(lat, dtype=np.float64), 5)
        out["p50_first_fifth_ms"], out["p50_last_fifth_ms"] = (float(np.median(f)) for f in (fifths[0], fifths[-1]))
    return out


def _plots(report: dict, figures: dict, out_dir: Path) -> list[Path]:
    """The live evaluation's plots, with the latency CDF of the paced part only."""
    from streamrec.streams.live_report import write_plots

    paced = figures["paced"]
    marks = [(f"backlog drain {figures['backlog']['drain_events_per_s']:,.0f}/s",
              figures["backlog"]["drain_events_per_s"]), (f"paced {paced['rate_events_per_s']:,.0f}/s offered",
                                                            paced["rate_events_per_s"])]
    view = {**report, "latency_ms": paced["latency_ms"], "latency_cdf_ms": paced["latency_cdf_ms"],
            "throughput_marks": marks,
            "latency_cdf_title": f"latency CDF at {paced['rate_events_per_s']:,.0f} events/s offered (paced part)"}
    return write_plots(view, out_dir)


def _print_results(report: dict, figures: dict, run_dir: Path, manifest, health: dict) -> None:
    from streamrec.cli.tables import metrics_table

    offline = json.loads((run_dir / "metrics.json").read_text())
    cols = ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20")
    rows = {"LSTM live (Kafka)": report["metrics"], "LSTM offline (bundle)": report.get("offline", {})}
    print("\nlive vs offline, serving rule (the lists the worker published: seen items dropped)")
    print(metrics_table(rows, cols))
    print("\noffline, history rule of BENCHMARKS.md (the model vs the baselines)")
    print(metrics_table({"LSTM": offline["model"], **offline["baselines"]}, cols))
    b, p, c = figures["backlog"], figures["paced"], figures["catch_up"]
    print(f"\nbacklog drain: {b['drain_events_per_s']:,.0f} events/s (the first {b['share']:.0%} of the events, "
          f"{b['events']:,}, replayed at max speed; first to last recommendation of that part, {b['seconds']:.1f} s)")
    print(f"   (meanwhile the backlog's events waited p50 {b['latency_p50_ms'] / 1000:.1f} s for their "
          "recommendation: that is queueing, not service time)")
    where = f"the rest, {p['events']:,} events" if c is None else \
        f"the last {p['events']:,} events; the {c['events']:,} before them went at max speed first"
    achieved = p["offered_events_per_s"]
    offered = f"{p['rate_events_per_s']:,.0f}" + ("" if achieved >= 0.9 * p["rate_events_per_s"]
                                                   else f" (achieved {achieved:,.0f})")
    lat = p["latency_ms"]
    print(f"latency at {offered} events/s offered ({where}, paced at {p['how']}), "
          "produce -> recommendation (ms):")
    if lat.get("n"):
        print(f"   p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}  "
              f"over {lat['n']:,} events" + (f" ({p['unanswered']:,} unanswered)" if p["unanswered"] else ""))
    else:
        print("   not measured: no recommendation of the paced part was read")
    first, last = p.get("p50_first_fifth_ms"), p.get("p50_last_fifth_ms")
    if first is not None and last > 2 * first + 50:
        print(f"   attention: latency grew along the paced part (p50 {first:.0f} ms in its first fifth, {last:.0f} ms "
              "in its last): a queue built up, the worker did not sustain this rate; try --paced-share 0.25")
    if health:
        print(f"worker counters: {json.dumps(health.get('counts', {}))}; rejected by reason: "
              f"{json.dumps(health.get('rejected', {}))}; torch imported in the worker: {health.get('torch_imported')}")
    print(f"plots: {', '.join(report.get('plots', []))}, {run_dir / 'training_curve.png'}")
    print("figures: demo.json (backlog and paced parts), live.json (the live evaluation of the whole replay)")
