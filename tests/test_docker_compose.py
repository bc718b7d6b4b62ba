"""docker-compose.yml's monitoring (issue 14 item 2): the compose file, Prometheus's scrape config and
Grafana's provisioning and dashboard agree with each other, with the repository and with the metrics
a worker really exposes.

No Docker engine runs here. The dashboard's PromQL is checked against the metric and label names of
a real exposition (``WorkerMetrics`` around a stand-in worker); the YAML files are parsed with PyYAML
(those tests skip with a message where it is missing); ``promtool`` checks the Prometheus config where
it is installed (Debian: ``apt-get install prometheus``). A real Prometheus scraping a real worker
during a replay: ``benchmarks/prometheus_scrape.py``."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.streams.codec import REASONS
from streamrec.streams.config import WorkerConfig
from streamrec.streams.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/streamrec.json"
DATASOURCES = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy/grafana/provisioning/dashboards/streamrec.yml"
#: Labels Prometheus adds to every scraped series (target labels), beside the worker's own.
TARGET_LABELS = {"instance", "job"}
#: PromQL words that are neither metrics nor functions (binary operators and modifiers).
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "on", "ignoring", "group_left", "group_right", "by",
                "without", "inf", "nan"}


def yaml_load(path: Path) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it is not in the test extra): "
                                              "the compose and provisioning YAML files are not checked")
    return yaml.safe_load(path.read_text())


# --- what the worker exposes --------------------------------------------------------------------

def exposition() -> str:
    """A real exposition of the worker's registry, built around a stand-in worker with every counter,
    reason and gauge set (the metric names and labels are what matter here)."""
    tp = SimpleNamespace(topic="clicks", partition=3)
    worker = SimpleNamespace(
        counts=Counter(received=10, emitted=8, duplicate=1, rejected=1), rejected=dict.fromkeys(REASONS, 1),
        in_flight=2, bundle=None, stream_time=1_700_000_000_000,
        manifest=SimpleNamespace(model_version="lstm-test-0123456789ab"),
        table_name="user-state-lstm-test-0123456789ab", config=SimpleNamespace(guarantee="at_least_once"))
    metrics = WorkerMetrics(worker)
    metrics.consumer_lag = lambda: [(tp, 5)]  # what a scrape reads of a running worker's consumer and table
    metrics.state_users = lambda: 7
    return metrics.exposition().decode()


def exposed() -> tuple[set[str], set[str]]:
    """(sample names, label names) of the exposition: what a PromQL query can select."""
    names, labels = set(), set()
    for family in text_string_to_metric_families(exposition()):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


# --- what a PromQL expression selects -----------------------------------------------------------

def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: every identifier that is not a function or
    aggregation (followed by '('), a keyword, a label list (by/without/on/ignoring (...)), a label
    matcher ({...}), a range ([...]) or a string."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group() in PROMQL_WORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def label_names(expr: str, legend: str = "") -> set[str]:
    """Labels an expression groups or matches by, and those its legend shows."""
    labels = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    labels.update(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    return labels


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def queries(dashboard: dict) -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in panels(dashboard) for t in p.get("targets", [])]


def test_promql_name_check_sees_metrics_and_only_them() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, instance) (rate(streamrec_publish_latency_bucket'
            '{job="streamrec-worker"}[$__rate_interval]))) / on (instance) group_left streamrec_ready > bool 0')
    assert metric_names(expr) == {"streamrec_publish_latency_bucket", "streamrec_ready"}
    assert label_names(expr, "{{instance}} p99") == {"le", "instance", "job"}
    assert "streamrec_publish_latency_bucket" not in exposed()[0]  # a misspelt name is caught below


def test_dashboard_queries_name_only_metrics_and_labels_the_worker_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names, labels = exposed()
    problems = []
    for title, target in queries(dashboard):
        expr, legend = target["expr"], target.get("legendFormat", "")
        used = metric_names(expr)
        if not used:
            problems.append(f"{title}: {expr!r} selects no metric")
        if unknown := used - names:
            problems.append(f"{title}: {expr!r} names {sorted(unknown)}, not in GET /metrics")
        if unknown := label_names(expr, legend) - labels - TARGET_LABELS:
            problems.append(f"{title}: {expr!r} / {legend!r} uses labels {sorted(unknown)}, not in GET /metrics")
    assert not problems, "\n".join(problems)
    assert len(queries(dashboard)) >= 10


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    """Throughput, latency percentiles, lag, dead letters by reason, the model version (issue 14), and
    the step time, batch size and state size; one provisioned datasource; a valid 24-column grid."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [re.sub(r"\s+", " ", t["expr"]) for _, t in queries(dashboard)]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert some(r"sum by \(outcome\) \(rate\(streamrec_events_total\b")
    assert some(r"sum by \(reason\) \(rate\(streamrec_dead_letters_total\b")
    for histogram in ("publish_latency_seconds", "freshness_seconds", "onnx_step_seconds", "batch_size"):
        for q in ("0.5", "0.95", "0.99"):
            assert some(rf"histogram_quantile\({q}, sum by \(le\) \(rate\(streamrec_{histogram}_bucket\["), (
                histogram, q)
    assert some(r"by \(topic, partition\) \(streamrec_consumer_lag\)")
    assert some(r"by \(model_version\b.*streamrec_model_info")
    assert some(r"streamrec_state_users")

    uids = {t["datasource"]["uid"] for _, t in queries(dashboard)} | {
        p["datasource"]["uid"] for p in panels(dashboard) if "datasource" in p}
    assert len(uids) == 1
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


# --- the compose file and the provisioning files ------------------------------------------------

def services() -> dict[str, dict]:
    return yaml_load(COMPOSE)["services"]


def mounts(service: dict) -> dict[str, Path]:
    """{container path: repository path} of a service's bind mounts of repository files."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_compose_has_prometheus_and_grafana_with_pinned_images_and_files_in_the_repo() -> None:
    s = services()
    assert {"kafka", "worker", "prometheus", "grafana"} <= s.keys()
    for name, service in s.items():
        if "build" not in service:  # the worker is built from this repository
            image, _, tag = service["image"].rpartition(":")
            assert image and tag and tag != "latest", f"{name}: pin the image's tag ({service['image']})"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} would listen on every interface"
    for name in ("prometheus", "grafana"):
        assert mounts(s[name]), name
        for target, source in mounts(s[name]).items():
            assert source.exists(), f"{name} mounts {source.relative_to(ROOT)} at {target}: missing in the repo"
    volumes = yaml_load(COMPOSE)["volumes"]
    for name, service in s.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("./", "$")):
                assert source in volumes, f"{name}: named volume {source} is not declared"


def test_prometheus_scrapes_the_workers_metrics_port_and_path() -> None:
    s = services()
    flags = dict(f.split("=", 1) for f in s["prometheus"]["command"] if "=" in f)
    assert mounts(s["prometheus"])[flags["--config.file"]] == PROMETHEUS_CONFIG
    command = s["worker"]["command"]
    port = (int(command[command.index("--web-port") + 1]) if "--web-port" in command
            else {f.name: f.default for f in dataclasses.fields(WorkerConfig)}["web_port"])
    config = yaml_load(PROMETHEUS_CONFIG)
    jobs = [j for j in config["scrape_configs"]
            if any(f"worker:{port}" in c["targets"] for c in j.get("static_configs", []))]
    assert len(jobs) == 1, f"no scrape job targets worker:{port}"
    assert jobs[0].get("metrics_path", "/metrics") == "/metrics"
    assert jobs[0].get("scheme", "http") == "http"


def test_grafana_provisions_the_datasource_and_the_dashboard_it_shows() -> None:
    s = services()
    grafana = mounts(s["grafana"])
    assert grafana["/etc/grafana/provisioning"] == DATASOURCES.parents[1]
    (source,) = yaml_load(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the service's name and Prometheus's own port
    dashboard = json.loads(DASHBOARD.read_text())
    assert {t["datasource"]["uid"] for _, t in queries(dashboard)} == {source["uid"]}
    (provider,) = yaml_load(DASHBOARD_PROVIDERS)["providers"]
    folder = provider["options"]["path"]
    assert grafana[folder] == DASHBOARD.parent  # the folder Grafana reads is the one mounted from the repo
    home = s["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/{DASHBOARD.name}"


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_prometheus_config() -> None:
    run = subprocess.run(["promtool", "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_compose_broker_shares_the_local_brokers_settings() -> None:
    """The settings the compose broker and ``streamrec kafka start`` both set agree (the image maps
    ``KAFKA_A_B_C`` to ``a.b.c``), the small index of streams/kafka_dist.py included."""
    from streamrec.streams.kafka_dist import server_properties

    env = services()["kafka"]["environment"]
    local = server_properties(1, "127.0.0.1", 9092, 9093, "1@127.0.0.1:9093", Path("/data"))
    where = {"listeners", "advertised.listeners", "listener.security.protocol.map", "controller.quorum.voters", "log.dirs"}
    shared = {key: value for key, value in local.items()
              if key not in where and "KAFKA_" + key.upper().replace(".", "_") in env}
    assert {"num.partitions", "group.initial.rebalance.delay.ms", "log.index.size.max.bytes"} <= shared.keys()
    for key, value in shared.items():
        assert str(env["KAFKA_" + key.upper().replace(".", "_")]) == value, key
