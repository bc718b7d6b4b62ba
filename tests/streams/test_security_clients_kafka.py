"""SASL/SSL for ``streamrec replay`` and ``streamrec evaluate-live``: the worker's flags and variables,
parsed alike (no Kafka), then the real commands against a broker whose clients must log in.

The broker (``sasl_listener``) has a SASL_PLAINTEXT listener beside the PLAINTEXT one; the commands
get only the SASL address, so every kafka-python client they create (replay: admin, producer and
the strict-order watcher; evaluate-live: its consumer) has to log in, and the test itself looks
at the topics through the PLAINTEXT address.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.cli.main import CliError, build_parser
from streamrec.streams.broker import Broker, free_port, start_broker
from streamrec.streams.config import SECURITY_SETTINGS, ConfigError, KafkaSecurity, WorkerConfig
from streamrec.streams.replay import ReplayConfig
from streamrec.streams.security import kafka_python_kwargs
from tests.factories import small_events
from tests.streams.workers import PARTITIONS, SASL_PASSWORD, SASL_USER, Names, sasl_listener, start_worker

REPO = Path(__file__).resolve().parents[2]
SECURITY_FLAGS = [s.flag for s in SECURITY_SETTINGS]
SASL = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN", "--sasl-username", SASL_USER]


# ---- flags and variables, without Kafka ----------------------------------------------------------
def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def security_actions(command: str) -> dict[str, tuple[str, str | None, str | None]]:
    """The command's security options: flag -> (dest, metavar, help)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[0]: (a.dest, a.metavar, a.help) for a in sub.choices[command]._actions
            if a.option_strings and a.option_strings[0] in SECURITY_FLAGS}


def test_worker_replay_and_evaluate_live_take_the_same_security_flags() -> None:
    worker = security_actions("worker")
    assert list(worker) == SECURITY_FLAGS
    assert security_actions("replay") == worker == security_actions("evaluate-live")
    for flag, (_, _, text) in worker.items():  # each help names its variable
        env = next(s.env for s in SECURITY_SETTINGS if s.flag == flag)
        assert f"[{env}]" in text


@pytest.mark.parametrize("command, required", [
    ("replay", ["--data", "d.csv", "--format", "csv"]),
    ("evaluate-live", ["--data", "d.csv", "--format", "csv", "--bundle", "b"]),
])
def test_flags_win_over_variables_and_the_password_comes_from_the_environment(
        command: str, required: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streamrec.cli.common import security_of

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    for name in [s.env for s in SECURITY_SETTINGS]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STREAMREC_SECURITY_PROTOCOL", "sasl-ssl")
    monkeypatch.setenv("STREAMREC_SASL_USERNAME", "from-env")
    monkeypatch.setenv("STREAMREC_SASL_PASSWORD", "pw-from-env")
    monkeypatch.setenv("STREAMREC_SASL_MECHANISM", "scram-sha-512")
    got = security_of(parse(command, *required, "--sasl-username", "from-flag", "--ssl-cafile", str(ca)))
    assert got == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "from-flag", "pw-from-env", ssl_cafile=ca)
    assert "pw-from-env" not in repr(got) and "pw-from-env" not in repr(ReplayConfig(security=got))
    assert kafka_python_kwargs(got) == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                        "sasl_plain_username": "from-flag", "sasl_plain_password": "pw-from-env",
                                        "ssl_cafile": str(ca)}
    assert KafkaSecurity.from_env(got.to_env()) == got
    monkeypatch.delenv("STREAMREC_SECURITY_PROTOCOL")
    assert security_of(parse(command, *required)).security_protocol == "PLAINTEXT"  # the default
    assert kafka_python_kwargs(security_of(parse(command, *required))) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("flags, message", [
    (["--security-protocol", "SASL_PLAINTEXT"], "needs --sasl-username and a password"),
    (["--security-protocol", "SASL_SSL", "--sasl-username", "u"], "needs --sasl-username and a password"),
    (["--security-protocol", "TLS"], "--security-protocol/STREAMREC_SECURITY_PROTOCOL: 'TLS' is not one of"),
    (["--sasl-mechanism", "GSSAPI"], "--sasl-mechanism/STREAMREC_SASL_MECHANISM: 'GSSAPI' is not one of"),
    (["--security-protocol", "SSL", "--ssl-cafile", "/nonexistent/ca.pem"], "/nonexistent/ca.pem is not a file"),
])
def test_replay_and_evaluate_live_refuse_what_the_worker_refuses(flags: list[str], message: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from streamrec.cli.common import security_of

    for name in [s.env for s in SECURITY_SETTINGS]:
        monkeypatch.delenv(name, raising=False)
    for command, required in (("replay", ["--data", "d", "--format", "csv"]),
                              ("evaluate-live", ["--data", "d", "--format", "csv", "--bundle", "b"])):
        with pytest.raises(CliError, match=message):
            security_of(parse(command, *required, *flags))
    fields = {s.flag: s.field for s in SECURITY_SETTINGS}
    with pytest.raises(ConfigError, match=message):  # the worker's own check: the same class, the same words
        WorkerConfig.from_env({"STREAMREC_BUNDLE": str(tmp_path)},
                              **{fields[flag]: value for flag, value in zip(flags[::2], flags[1::2])})


def test_a_refused_setting_stops_replay_before_it_reads_data_or_kafka(tmp_path: Path) -> None:
    run = streamrec("replay", "--data", tmp_path / "absent.csv", "--format", "csv", "--brokers", "127.0.0.1:1",
                    "--security-protocol", "SASL_PLAINTEXT", "--sasl-username", SASL_USER, timeout=60)
    assert run.returncode == 2
    assert "streamrec replay: error: --security-protocol SASL_PLAINTEXT needs --sasl-username and a password" \
        in run.stderr


# ---- the real commands against a broker that wants a login -------------------------------------------
def streamrec(*args: object, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "streamrec.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=clean | env)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, str]]:
    """A broker with a SASL_PLAINTEXT listener: (handle with the PLAINTEXT bootstrap, SASL address)."""
    port = free_port()
    broker = start_broker(data_dir=tmp_path_factory.mktemp("kafka-sasl"), name=None, record_state=False,
                          extra_config=sasl_listener(port), die_with_parent=True, timeout=180)
    try:
        yield broker, f"127.0.0.1:{port}"
    finally:
        broker.stop()


def topic_args(names: Names) -> list[str]:
    return ["--clicks-topic", names.clicks, "--browses-topic", names.browses, "--output-topic", names.recs,
            "--dlq-topic", names.dlq]


def count_records(bootstrap: str, topics: list[str]) -> int:
    """Records in ``topics`` (end offsets summed), read through the PLAINTEXT listener."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def existing_topics(bootstrap: str) -> set[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


@pytest.mark.kafka
def test_replay_and_evaluate_live_log_in_and_see_every_event(sasl_broker: tuple[Broker, str], bundle_dir: Path,
                                                             tmp_path: Path) -> None:
    from streamrec.model.synth import CSV_COLUMNS, write_csv

    broker, sasl = sasl_broker
    events = small_events(users=40, items=120, seed=34)
    data = ["--data", write_csv(events, tmp_path / "events.csv"), "--format", "csv", "--columns", CSV_COLUMNS]
    names = Names()
    # the worker logs in with the flag, replay and evaluate-live with the variable (the advised way)
    worker = start_worker(sasl, bundle_dir, names, tmp_path / "worker", *SASL, "--sasl-password", SASL_PASSWORD)
    try:
        worker.wait_ready()
        rep = streamrec("replay", *data, "--brokers", sasl, *topic_args(names), "--partitions", PARTITIONS, *SASL,
                        "--order", "strict", "--max-speed", "--json", "--no-progress",
                        STREAMREC_SASL_PASSWORD=SASL_PASSWORD)
        assert rep.returncode == 0, rep.stderr[-3000:] + worker.tail()
        summary = json.loads(rep.stdout)
        assert summary["sent"] == summary["events"] == len(events) and summary["failures"] == 0
        assert summary["order_timeouts"] == 0  # the watcher (a consumer) logged in and saw the worker's answers
        assert count_records(broker.bootstrap, [names.clicks, names.browses]) == len(events)
        live = streamrec("evaluate-live", *data, "--bundle", bundle_dir, "--brokers", sasl, *topic_args(names),
                         *SASL, "--json", "--no-progress", "--timeout", 60, STREAMREC_SASL_PASSWORD=SASL_PASSWORD)
        assert live.returncode == 0, live.stderr[-3000:] + worker.tail()
        assert worker.stop() == 0, worker.tail()
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(30)
    report = json.loads(live.stdout)
    c = report["counts"]
    assert report["complete"], c
    assert c["inputs"] == c["recommendations"] == len(events)
    assert c["rejected"] == c["order_violations"] == c["content_mismatches"] == 0
    off = streamrec("evaluate", "--bundle", bundle_dir, *data, "--protocol", "temporal", "--json", "--no-baselines")
    assert off.returncode == 0, off.stderr
    ref = json.loads(off.stdout)
    assert report["n_targets"] == ref["n_targets"] > 0
    for key in ("HR@10", "NDCG@10"):
        assert report["metrics"][key] == pytest.approx(ref["model"][key], abs=5e-5), key


@pytest.mark.kafka
def test_a_wrong_password_stops_replay_and_evaluate_live_with_a_reason(sasl_broker: tuple[Broker, str],
                                                                       bundle_dir: Path, tmp_path: Path) -> None:
    from streamrec.model.synth import CSV_COLUMNS, write_csv

    broker, sasl = sasl_broker
    events = small_events(users=10, items=120, seed=35)
    data = ["--data", write_csv(events, tmp_path / "events.csv"), "--format", "csv", "--columns", CSV_COLUMNS]
    names = Names()
    for command, extra, env in (
            ("replay", ["--order", "none", "--sasl-password", "nope"], {}),
            ("evaluate-live", ["--bundle", str(bundle_dir), "--timeout", "5"], {"STREAMREC_SASL_PASSWORD": "nope"})):
        start = time.monotonic()
        run = streamrec(command, *data, "--brokers", sasl, *topic_args(names), *SASL, *extra, "--no-progress",
                        timeout=120, **env)
        took = time.monotonic() - start
        assert run.returncode == 2, (command, run.returncode, run.stderr[-3000:])
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"streamrec {command}: error: cannot reach Kafka at {sasl} with SASL_PLAINTEXT"), last
        assert "check the credentials" in last and "nope" not in last
        assert took < 60, (command, took)  # kafka-python's bootstrap timeout (10 s), then out: no hang
    assert not {names.clicks, names.browses} & existing_topics(broker.bootstrap)  # replay created nothing
