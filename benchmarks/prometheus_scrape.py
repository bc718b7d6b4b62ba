"""A real Prometheus scrapes a real worker while `streamrec replay` runs (issue 14 item 2).

What docker-compose.yml sets up (Kafka, the worker, Prometheus, Grafana), done here with local
processes, since no Docker engine runs on this machine:

  1. Kafka: `streamrec kafka start` (stopped at the end), or --brokers for a running one;
  2. a small bundle: synthetic click/browse events written with the stdlib, `streamrec train`
     (a few seconds) and `streamrec export`; or --bundle;
  3. `streamrec worker` on a free port, with topics and consumer group of this run only;
  4. the `prometheus` binary (Debian: apt-get install prometheus) scraping its GET /metrics every 1 s;
  5. `streamrec replay` of ~--seconds of events at --rate events/s, some of them invalid on purpose
     (an unknown event type, a too-long item id) so that the dead-letter panel has data;
  6. queries to Prometheus's HTTP API (/api/v1/query, /api/v1/query_range): totals, rates,
     latency quantiles, lag, dead letters by reason, the model info, and every query of the
     Grafana dashboard (deploy/grafana/dashboards/streamrec.json) over the run;
  7. writes OUT.json (the queries, their values, the command line), OUT.png (a screenshot of
     Prometheus's own graph page taken with headless Chromium, Debian: apt-get install chromium)
     and OUT.plot.png (matplotlib: the query_range results).

Every process it starts is stopped at the end, on an error and on Ctrl-C. It uses the `streamrec`
command line only (no import of the project's modules). Run it from the repository:

    ./run python benchmarks/prometheus_scrape.py                      # ~2 minutes on 2 cores
    ./run python benchmarks/prometheus_scrape.py --brokers 127.0.0.1:9092 --bundle bundles/m1 --seconds 30
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import json
import math
import os
import random
import shutil
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/streamrec.json"
CSV_COLUMNS = "user_id=user_id,item_id=item_id,ts=ts:ms,event_type=event_type"
JOB = "streamrec-worker"


class Failed(Exception):
    """A step failed; the message says which and where its log is."""


def say(msg: str) -> None:
    print(f"[prometheus-scrape] {msg}", file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Child side: SIGTERM when this script dies, however it dies (Linux PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


class Processes:
    """Children in sessions of their own (a terminal's Ctrl-C reaches only this script, which then
    stops them in reverse order: SIGTERM to the process group, SIGKILL after a grace period)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                say(f"stopping {name} (pid {proc.pid})")
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                except ProcessLookupError:
                    pass
        self.procs.clear()


def run_cli(streamrec: list[str], args: list[str], log: Path, procs: Processes, what: str) -> str:
    """Run one `streamrec` command to its end (as a child that Ctrl-C stops); its stdout."""
    proc = procs.start(what, [*streamrec, *args], log)
    proc.wait()
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise Failed(f"{what} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if log else ""
            raise Failed(f"{what}: the process exited ({proc.returncode}); log {log}:\n{tail}")
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise Failed(f"{what}: not within {timeout:.0f} s" + (f"; see {log}" if log else ""))


# --- data -----------------------------------------------------------------------------------------

def synthetic_events(events: int, seed: int) -> list[dict]:
    """Users who browse then click along item chains (so the model has something to learn), in
    sessions over 30 days; ~25 events per user; popular items first."""
    rng = random.Random(seed)
    users = max(20, events // 25)
    items = max(50, users // 2)
    start = 1_700_000_000_000
    out = []
    for u in range(users):
        ts = start + rng.randrange(30 * 86_400_000)
        item = int(rng.paretovariate(1.2)) % items
        for _ in range(max(2, int(rng.gauss(25, 6)))):
            item = (item + 1) % items if rng.random() < 0.6 else int(rng.paretovariate(1.2)) % items
            ts += rng.randrange(5_000, 600_000)
            out.append({"user_id": f"u{u}", "item_id": f"i{item}", "ts": ts,
                        "event_type": "click" if rng.random() < 0.7 else "browse"})
    out.sort(key=lambda e: e["ts"])
    return out[:events]


def with_bad_events(events: list[dict], seed: int) -> list[dict]:
    """The same events, with ~1% of an event type no model knows and ~0.5% with an item id over the
    256-character bound: the worker dead-letters them (unknown_event_type, invalid_id)."""
    rng = random.Random(seed + 1)
    out = []
    for e in events:
        out.append(e)
        r = rng.random()
        if r < 0.01:
            out.append({**e, "event_type": "share"})
        elif r < 0.015:
            out.append({**e, "item_id": "i" * 300})
    return out


def on_schedule(events: list[dict], rate: float, start_ms: int) -> list[dict]:
    """The events in their order with event times on the replay's schedule (the i-th at start + i/rate),
    as a live stream would have them: freshness (emitted_ts - event_ts) then reads as in production
    instead of the age of a history."""
    return [{**e, "ts": start_ms + int(i * 1000 / rate)} for i, e in enumerate(events)]


def write_csv(events: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["user_id", "item_id", "ts", "event_type"])
        w.writeheader()
        w.writerows(events)


# --- Prometheus -----------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url, timeout=30)
        if status != 200:
            raise Failed(f"Prometheus {path} {params}: HTTP {status} {body[:300]!r}")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise Failed(f"Prometheus {path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str, at: float) -> list[dict]:
        return [{"labels": r["metric"], "value": _num(r["value"][1])}
                for r in self.api("query", query=expr, time=f"{at:.3f}")["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float, origin: float) -> list[dict]:
        """Series of [seconds since origin, value]."""
        return [{"labels": r["metric"], "values": [[round(t - origin, 3), _num(v)] for t, v in r["values"]]}
                for r in self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                                  step=str(step))["result"]]

    def scalar(self, expr: str, at: float) -> float | None:
        rows = self.query(expr, at)
        return rows[0]["value"] if rows else None


def _num(v: str) -> float | None:
    x = float(v)
    return None if math.isnan(x) else round(x, 6)


def prometheus_config(path: Path, worker_port: int) -> None:
    # The same job as deploy/prometheus/prometheus.yml, at 1 s instead of 5 s (a 60 s run).
    path.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    f"scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{worker_port}']\n")


def quantile(metric: str, q: float, window: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[{window}])))"


def run_queries(prom: Prometheus, t0: float, t1: float) -> tuple[dict, dict]:
    """(instant queries at the end over the whole run, query_range series over the run)."""
    w = f"{math.ceil(t1 - t0)}s"
    instant_exprs = {
        "events_by_outcome": "sum by (outcome) (streamrec_events_total)",
        "dead_letters_by_reason": "sum by (reason) (streamrec_dead_letters_total)",
        "received_per_s_mean": f'sum(increase(streamrec_events_total{{outcome="received"}}[{w}])) / {t1 - t0:.3f}',
        "received_per_s_peak_5s": f'max_over_time(sum(rate(streamrec_events_total{{outcome="received"}}[5s]))[{w}:1s])',
        "dead_letters_per_s_mean": f"sum(increase(streamrec_dead_letters_total[{w}])) / {t1 - t0:.3f}",
        **{f"publish_latency_p{int(q * 100)}_s": quantile("streamrec_publish_latency_seconds", q, w)
           for q in (0.5, 0.95, 0.99)},
        **{f"freshness_p{int(q * 100)}_s": quantile("streamrec_freshness_seconds", q, w) for q in (0.5, 0.95, 0.99)},
        "onnx_step_p50_s": quantile("streamrec_onnx_step_seconds", 0.5, w),
        "onnx_step_p99_s": quantile("streamrec_onnx_step_seconds", 0.99, w),
        "onnx_step_mean_s": f"sum(rate(streamrec_onnx_step_seconds_sum[{w}])) / "
                            f"sum(rate(streamrec_onnx_step_seconds_count[{w}]))",
        "batch_size_mean": f"sum(rate(streamrec_batch_size_sum[{w}])) / sum(rate(streamrec_batch_size_count[{w}]))",
        "batch_size_p99": quantile("streamrec_batch_size", 0.99, w),
        "consumer_lag_max": f"max_over_time(sum(streamrec_consumer_lag)[{w}:1s])",
        "consumer_lag_end": "sum(streamrec_consumer_lag)",
        "state_users": "sum(streamrec_state_users)",
        "ready": "sum(streamrec_ready)",
        "model_info": "streamrec_model_info",
        "scrapes": f'count_over_time(up{{job="{JOB}"}}[{w}])',
        "scrapes_up": f'sum_over_time(up{{job="{JOB}"}}[{w}])',
        "scrape_duration_max_s": f'max_over_time(scrape_duration_seconds{{job="{JOB}"}}[{w}])',
    }
    instant = {name: {"query": expr, "result": prom.query(expr, t1)} for name, expr in instant_exprs.items()}
    range_exprs = {
        "throughput": 'sum by (outcome) (rate(streamrec_events_total{outcome=~"received|emitted|rejected"}[5s]))',
        "publish_latency": " or ".join(
            f'label_replace({quantile("streamrec_publish_latency_seconds", q, "5s")}, "q", "p{int(q * 100)}", "", "")'
            for q in (0.5, 0.95, 0.99)),
        "freshness": " or ".join(
            f'label_replace({quantile("streamrec_freshness_seconds", q, "5s")}, "q", "p{int(q * 100)}", "", "")'
            for q in (0.5, 0.95, 0.99)),
        "consumer_lag": "sum(streamrec_consumer_lag)",
        "dead_letters": "sum by (reason) (rate(streamrec_dead_letters_total[5s]))",
        "batch_size_mean": "sum(rate(streamrec_batch_size_sum[5s])) / sum(rate(streamrec_batch_size_count[5s]))",
    }
    ranged = {name: {"query": expr, "step_s": 1, "x": "seconds since the replay started",
                     "series": prom.query_range(expr, t0 - 5, t1, 1, t0)} for name, expr in range_exprs.items()}
    return instant, ranged


def dashboard_check(prom: Prometheus, t0: float, t1: float) -> list[dict]:
    """Every query of the Grafana dashboard run over the replay against this Prometheus, with
    $__rate_interval as Grafana sets it for a 1 s scrape interval (4 scrapes: 4s)."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "4s")
            series = prom.query_range(expr, t0, t1, 2, t0)
            points = sum(1 for s in series for _, v in s["values"] if v is not None)
            out.append({"panel": panel["title"], "expr": expr, "series": len(series), "points": points,
                        "legend": sorted({target.get("legendFormat", "").replace("{{", "").replace("}}", "")
                                          .replace("__auto", "") or "-"})})
    return out


# --- pictures -------------------------------------------------------------------------------------

GRAPHS = [  # (expression, what it shows) for Prometheus's graph page
    ('sum by (outcome) (rate(streamrec_events_total{outcome=~"received|emitted|rejected"}[5s]))',
     "throughput by outcome"),
    (" or ".join(f'label_replace(histogram_quantile({q}, sum by (le) (rate(streamrec_publish_latency_seconds_bucket'
                 f'[5s]))), "q", "p{int(q * 100)}", "", "")' for q in (0.5, 0.95, 0.99)),
     "publish latency p50/p95/p99"),
    (" or ".join(f'label_replace(histogram_quantile({q}, sum by (le) (rate(streamrec_freshness_seconds_bucket'
                 f'[5s]))), "q", "p{int(q * 100)}", "", "")' for q in (0.5, 0.95, 0.99)),
     "freshness p50/p95/p99"),
    ("sum by (reason) (rate(streamrec_dead_letters_total[5s]))", "dead letters by reason"),
    ("sum by (topic) (streamrec_consumer_lag)", "consumer lag"),
    ("streamrec_model_info", "model version"),
]


def screenshot(chromium: str, prom: Prometheus, seconds: int, out: Path, work: Path) -> str | None:
    """Prometheus's own graph page (Debian ships the classic UI at /classic/graph), one graph per
    expression of GRAPHS over the last `seconds`, rendered by headless Chromium."""
    page = "/classic/graph" if http_get(prom.base + "/classic/graph")[0] == 200 else "/graph"
    params = {}
    for i, (expr, _) in enumerate(GRAPHS):
        params.update({f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": f"{seconds}s"})
    url = f"{prom.base}{page}?{urllib.parse.urlencode(params)}"
    height = 150 + 745 * len(GRAPHS)
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={work / 'chromium'}", f"--window-size=1400,{height}", "--virtual-time-budget=15000",
            f"--screenshot={out}", url]
    run = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if run.returncode != 0 or not out.exists() or out.stat().st_size < 10_000:
        say(f"the screenshot failed (exit {run.returncode}): {run.stderr[-500:]}")
        return None
    return url


def plot(ranged: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("throughput", "events/s", "outcome"), ("publish_latency", "seconds", "q"), ("freshness", "seconds", "q"),
              ("dead_letters", "dead letters/s", "reason"), ("consumer_lag", "records", None)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True)
    for ax, (name, unit, label) in zip(axes, panels):
        for s in ranged[name]["series"]:
            xs = [t for t, v in s["values"] if v is not None]
            ys = [v for _, v in s["values"] if v is not None]
            ax.plot(xs, ys, label=s["labels"].get(label, name) if label else name, lw=1.2)
        query = ranged[name]["query"]
        ax.set_title(query if len(query) < 110 else f"{name.replace('_', ' ')} p50/p95/p99: histogram_quantile(q, "
                     f"sum by (le) (rate(streamrec_{name}_seconds_bucket[5s])))", fontsize=8)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("seconds since the replay started (Prometheus query_range, step 1 s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- the run --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", help="a running Kafka (default: start one with `streamrec kafka start`)")
    p.add_argument("--bundle", type=Path, help="a bundle to serve (default: train and export a small one)")
    p.add_argument("--rate", type=float, default=150.0, help="events/s offered by the replay (default 150)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the replay (default 60)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prometheus-scrape",
                   help="output prefix: OUT.json, OUT.png, OUT.plot.png (default benchmarks/results/prometheus-scrape)")
    p.add_argument("--streamrec", help="the streamrec command (default: beside this Python, else ./run streamrec)")
    p.add_argument("--prometheus", default=shutil.which("prometheus"),
                   help="the prometheus binary (default: on PATH; Debian: apt-get install prometheus)")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                   help="headless Chromium for the screenshot (default: on PATH; without it only the plot)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, data, Prometheus's TSDB)")
    args = p.parse_args(argv)

    if not args.prometheus or not Path(args.prometheus).exists():
        p.error("no prometheus binary: install it (Debian: apt-get install prometheus) or pass --prometheus PATH")
    if args.bundle and not (args.bundle / "manifest.json").exists():
        p.error(f"--bundle {args.bundle}: no manifest.json there (make one with streamrec export)")
    if not DASHBOARD.exists():
        p.error(f"{DASHBOARD} is missing: run this from the repository")
    beside = Path(sys.executable).with_name("streamrec")
    streamrec = (args.streamrec.split() if args.streamrec
                 else [str(beside)] if beside.exists() else [str(ROOT / "run"), "streamrec"])

    def on_term(signum, frame):  # noqa: ARG001 - SIGTERM stops everything as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
    work = Path(tempfile.mkdtemp(prefix="prometheus-scrape-"))
    procs = Processes()
    kafkas: list[str] = []  # brokers this run started (stopped at the end)
    keep = args.keep
    try:
        return run(args, streamrec, work, procs, kafkas)
    except Failed as e:
        say(f"error: {e}")
        keep = True  # the logs the message points to
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        procs.stop_all()
        for name in kafkas:
            say(f"stopping Kafka {name}")
            subprocess.run([*streamrec, "kafka", "stop", "--name", name], capture_output=True, timeout=120)
        if keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, streamrec: list[str], work: Path, procs: Processes, kafkas: list[str]) -> int:
    tag = f"promscrape-{int(time.time())}"
    brokers = args.brokers
    if not brokers:
        name = "prometheus-scrape"
        say(f"starting Kafka ({' '.join(streamrec)} kafka start --name {name})")
        kafkas.append(name)
        text = run_cli(streamrec, ["kafka", "start", "--name", name, "--fresh"], work / "kafka.log", procs, "kafka start")
        brokers = [line for line in text.splitlines() if line.strip()][-1].strip()
        say(f"Kafka at {brokers}")

    n_events = int(args.rate * args.seconds)
    events = synthetic_events(n_events, seed=7)
    replayed = with_bad_events(events, seed=7)
    write_csv(events, work / "train.csv")
    bundle = args.bundle
    if bundle is None:
        say(f"training a small model on {len(events):,} synthetic events (streamrec train, 2 epochs)")
        run_cli(streamrec, ["train", "--data", str(work / "train.csv"), "--format", "csv", "--columns", CSV_COLUMNS,
                            "--protocol", "temporal", "--out", str(work / "model"), "--epochs", "2", "--dim", "16",
                            "--hidden", "32", "--no-baselines", "--time-budget", "120"],
                work / "train.log", procs, "streamrec train")
        bundle = work / "bundle"
        run_cli(streamrec, ["export", "--model", str(work / "model"), "--out", str(bundle), "--k", "10", "--m", "20",
                            "--model-id", "lstm-prometheus-scrape"], work / "export.log", procs, "streamrec export")
    manifest = json.loads((bundle / "manifest.json").read_text())

    topics = ["--clicks-topic", f"{tag}-clicks", "--browses-topic", f"{tag}-browses",
              "--output-topic", f"{tag}-recommendations", "--dlq-topic", f"{tag}-dlq"]
    port = free_port()
    say(f"starting the worker on port {port} (log {work / 'worker.log'})")
    worker = procs.start("worker", [*streamrec, "worker", "--bundle", str(bundle), "--brokers", brokers, *topics,
                                    "--app-id", tag, "--data-dir", str(work / "state"), "--web-host", "127.0.0.1",
                                    "--web-port", str(port), "--log-level", "warning"], work / "worker.log")
    wait_for("the worker's GET /ready", lambda: http_get(f"http://127.0.0.1:{port}/ready")[0] == 200, 180,
             worker, work / "worker.log")

    prom_port = free_port()
    prometheus_config(work / "prometheus.yml", port)
    say(f"starting Prometheus on port {prom_port} (scraping 127.0.0.1:{port}/metrics every 1 s)")
    prom_proc = procs.start("prometheus", [args.prometheus, f"--config.file={work / 'prometheus.yml'}",
                                           f"--storage.tsdb.path={work / 'tsdb'}",
                                           f"--web.listen-address=127.0.0.1:{prom_port}"], work / "prometheus.log")
    prom = Prometheus(prom_port)
    wait_for("Prometheus's /-/ready", lambda: http_get(prom.base + "/-/ready")[0] == 200, 60, prom_proc,
             work / "prometheus.log")
    wait_for("Prometheus's first scrape of the worker", lambda: prom.scalar(f'up{{job="{JOB}"}}', time.time()) == 1,
             30, prom_proc, work / "prometheus.log")
    build = prom.api("status/buildinfo")

    say(f"replaying {len(replayed):,} events at {args.rate:g}/s ({len(replayed) - len(events)} invalid on purpose)")
    t0 = time.time()
    write_csv(on_schedule(replayed, args.rate, int(t0 * 1000)), work / "replay.csv")
    replay_args = ["replay", "--data", str(work / "replay.csv"), "--format", "csv", "--columns", CSV_COLUMNS,
                   "--brokers", brokers, *topics, "--rate", f"{args.rate:g}", "--no-progress", "--json",
                   "--log", str(work / "sent.jsonl")]
    out = run_cli(streamrec, replay_args, work / "replay.log", procs, "streamrec replay")
    summary = next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("{")), {})
    sent = summary.get("sent", len(replayed))
    # How far the replay's sends trailed the schedule the event times were put on (its start-up, mostly):
    # part of every freshness figure below, not of the publish latency (measured from the send).
    behind = sorted(r["timestamp"] - r["ts"] for r in map(json.loads, open(work / "sent.jsonl")))
    behind_ms = {"p50": behind[len(behind) // 2], "min": behind[0], "max": behind[-1]} if behind else None

    def answered() -> bool:
        received = prom.scalar('sum(streamrec_events_total{outcome="received"})', time.time())
        lag = prom.scalar("sum(streamrec_consumer_lag)", time.time())
        return received is not None and received >= sent and lag == 0

    wait_for("every replayed event counted by the worker", answered, 60, worker, work / "worker.log")
    time.sleep(3)  # a few more scrapes after the last event
    t1 = time.time()
    say(f"replay done in {t1 - t0:.0f} s; querying Prometheus")

    instant, ranged = run_queries(prom, t0, t1)
    panels = dashboard_check(prom, t0, t1)
    health = json.loads(http_get(f"http://127.0.0.1:{port}/health")[1] or b"{}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    png, plot_png = args.out.with_suffix(".png"), args.out.with_suffix(".plot.png")
    url = None
    if args.chromium:
        say("screenshot of Prometheus's graph page (headless Chromium)")
        url = screenshot(args.chromium, prom, math.ceil(t1 - t0) + 15, png, work)
    else:
        say("no chromium on PATH: no screenshot (Debian: apt-get install chromium); the plot only")
    plot(ranged, plot_png, f"streamrec worker scraped by Prometheus {build.get('version')} every 1 s during "
                           f"`streamrec replay --rate {args.rate:g}` ({sent:,} events)")

    doc = {
        "what": "a real Prometheus scraping a real streamrec worker's GET /metrics every 1 s during a paced replay",
        "command": shlex.join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "prometheus": {"version": build.get("version"), "binary": args.prometheus, "scrape_interval_s": 1},
        "bundle": {"model_version": manifest.get("model_version"), "given": bool(args.bundle)},
        "replay": {"args": replay_args, "events": len(replayed), "invalid_on_purpose": len(replayed) - len(events),
                   "event_times": "on the replay's schedule from its start (t0 + i/rate), as in a live stream",
                   "send_behind_event_time_ms": behind_ms, "summary": summary},
        "window": {"start": t0, "end": t1, "seconds": round(t1 - t0, 3)},
        "instant": instant,
        "range": ranged,
        "dashboard_queries": panels,
        "worker_health_at_end": {k: health.get(k) for k in ("counts", "rejected", "ready")},
        "screenshot": ({"file": png.name, "what": "Prometheus's graph page (classic UI of Debian's build) rendered by "
                        "headless Chromium right after the run", "url": url, "graphs": [g for _, g in GRAPHS]}
                       if url else None),
        "plot": {"file": plot_png.name, "what": "matplotlib plot of the query_range results above"},
    }
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    report(doc)
    print("wrote", ", ".join(str(f) for f in (args.out.with_suffix(".json"), png if url else None, plot_png) if f))
    empty = [q["panel"] for q in panels if not q["points"]]
    if empty:
        say(f"dashboard queries that returned nothing: {sorted(set(empty))}")
    return 0


def report(doc: dict) -> None:
    inst = {k: v["result"] for k, v in doc["instant"].items()}

    def one(name: str) -> str:
        rows = inst[name]
        return "none" if not rows else ", ".join(
            (",".join(f"{v}" for v in r["labels"].values()) + "=" if r["labels"] else "") + f"{r['value']}" for r in rows)

    for name in inst:
        if name != "model_info":
            print(f"{name:28s} {one(name)}")
    print(f"{'model_info':28s} {[r['labels'] for r in inst['model_info']]}")


if __name__ == "__main__":
    sys.exit(main())
