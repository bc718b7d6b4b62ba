"""Shadow (issue 10): a second model version runs beside the serving one on the real broker, on the same
input topics under its own app id (consumer group, state changelog) and publishes to its own topic;
`streamrec evaluate-live --shadow-topic` shows both side by side, and each version's live figures equal
the offline evaluation of its bundle over the same events. The shadow is SIGKILLed half-way: the serving
worker answers everything regardless, the comparison counts what only one version answered, and the
restarted shadow catches up to the same figures as an uninterrupted run. Without a data set
(`--since T`: the targets are the events the topics hold) both versions equal their bundles offline too.

Each user's events are all clicks or all browses (``one_topic_per_user``): both workers then apply every
user's events in time order without `replay --order strict` (which watches one output topic only)."""
from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from streamrec.export.bundle_eval import bundle_ranks, evaluate_bundle, evaluate_bundle_on
from streamrec.export.runtime import Bundle
from streamrec.model.encode import build_targets, encode_all
from streamrec.model.events import by_user
from streamrec.model.metrics import summarize
from streamrec.model.prepare import prepare
from streamrec.model.synth import CSV_COLUMNS, write_csv
from streamrec.streams.replay import ReplayConfig, Topics, plan, replay
from tests.factories import make_bundle
from tests.streams.test_live_eval import streamrec
from tests.streams.workers import PARTITIONS, Distinct, Names, Reader, one_topic_per_user, source_of, start_worker

pytestmark = pytest.mark.kafka  # ~35 s on this machine: not slow

METRICS = ("HR@10", "NDCG@10", "MRR@10")
TOL = 5e-5  # live lists carry float32 scores through JSON: as tests/streams/test_live_eval.py
START_S = 180.0  # a worker's start: ~5 s here, once 93 s on the shared machine (its cause not found)


@pytest.fixture(scope="module")
def shadow_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session bundle's data and shape, another seed and fewer epochs: another model version."""
    return make_bundle(tmp_path_factory.mktemp("shadow-bundle") / "b2", epochs=2, seed=1)


def send(broker: str, topics: Topics, messages: list) -> dict[str, tuple]:
    """Replay ``messages`` (no order gate); event id -> (topic, partition, offset)."""
    log = io.StringIO()
    summary = replay(messages, ReplayConfig(brokers=broker, topics=topics, order="none", partitions=PARTITIONS),
                     progress=False, log=log)
    assert summary.sent == len(messages) and summary.failures == 0, summary.errors
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    return {d["event_id"]: (d["topic"], d["partition"], d["offset"]) for d in lines}


def read(broker: str, topic: str, n: int) -> list:
    reader = Reader(broker, topic)
    records = reader.read_until(Distinct(n, stall_s=60), timeout=180)
    reader.close()
    return records


def compare(broker: str, names: Names, shadow_topic: str, shadow_dlq: str, data: Path | str, serving_dir: Path,
            shadow_dir: Path, out: Path, timeout: float) -> tuple[int, dict]:
    """`streamrec evaluate-live` in compare mode, as a user runs it; (exit status, JSON report). ``data``: the
    data set's CSV, or ``since:<epoch ms>`` for the targets from the topics themselves."""
    targets = (["--since", str(data).split(":", 1)[1]] if str(data).startswith("since:") else
               ["--data", data, "--format", "csv", "--columns", CSV_COLUMNS])
    r = streamrec("evaluate-live", *targets, "--brokers", broker,
                  "--clicks-topic", names.clicks, "--browses-topic", names.browses, "--output-topic", names.recs,
                  "--dlq-topic", names.dlq, "--bundle", serving_dir, "--shadow-topic", shadow_topic,
                  "--shadow-bundle", shadow_dir, "--shadow-dlq-topic", shadow_dlq, "--timeout", timeout,
                  "--json", "--no-progress", "--plots", out, "--report", out / "compare.json")
    assert r.returncode in (0, 1), r.stderr[-3000:]
    cmp = json.loads(r.stdout)
    assert json.loads((out / "compare.json").read_text()) == cmp
    assert (out / "compare.png").stat().st_size > 20_000
    return r.returncode, cmp


def test_a_shadow_answers_the_same_events_under_its_own_version_and_live_equals_offline_for_both(
        kafka_broker, bundle_dir, shadow_bundle_dir, tmp_path):
    broker = kafka_broker.bootstrap
    serving_bundle, shadow_bundle = Bundle.load(bundle_dir), Bundle.load(shadow_bundle_dir)
    v1, v2 = serving_bundle.version, shadow_bundle.version
    assert v1 != v2
    names = Names()
    topics = Topics(names.clicks, names.browses, names.recs, names.dlq)
    shadow_topic, shadow_dlq = f"{names.recs}.shadow", f"{names.dlq}.shadow"
    shadow_args = ("--output-topic", shadow_topic, "--dlq-topic", shadow_dlq, "--app-id", f"{names.app}-shadow")

    events = one_topic_per_user(300, seed=0)  # the serving bundle's training data, each user on one topic
    data = write_csv(events, tmp_path / "events.csv")
    n = len(events)
    # offline references: each bundle over the same events (what `streamrec evaluate --bundle` reports), and
    # its per-target ranks for the targets of the first phase
    offline = {v: evaluate_bundle_on(b, events, "temporal")["model"] for v, b in ((v1, serving_bundle),
                                                                                  (v2, shadow_bundle))}
    messages = plan(events, topics)
    cut = messages[int(0.95 * n)].ts  # the first phase: events before the 95th percentile of time
    first = [m for m in messages if m.ts < cut]
    assert 0 < len(first) < n

    serving = start_worker(broker, bundle_dir, names, tmp_path / "serving")
    shadow = start_worker(broker, shadow_bundle_dir, names, tmp_path / "shadow", *shadow_args)
    try:
        serving.wait_ready(START_S)
        shadow.wait_ready(START_S)
        sent = send(broker, topics, first)
        read(broker, shadow_topic, len(first))  # the shadow answered the first phase ...
        shadow.proc.kill()  # ... and crashes
        shadow.proc.wait(30)
        sent |= send(broker, topics, plan(events, topics, from_ts=cut))
        assert len(sent) == n
        recs = read(broker, names.recs, n)
        assert serving.proc.poll() is None  # the shadow's crash did not touch it

        # the serving topic: one recommendation per event, all from the serving version
        assert len(recs) == n and {source_of(r) for r in recs} == set(sent.values())
        assert {json.loads(r.value)["model_version"] for r in recs} == {v1}

        # compare while the shadow is down: what only the serving version answered is counted apart, and
        # the side-by-side figures are those of each bundle offline on the targets both answered
        status, cmp = compare(broker, names, shadow_topic, shadow_dlq, data, bundle_dir, shadow_bundle_dir,
                              tmp_path / "down", timeout=3)
        assert status == 1 and not cmp["complete"]
        later = n - len(first)
        assert cmp["events"] == {"inputs": n, "both": len(first), "only_serving": later, "only_shadow": 0,
                                 "neither": 0, "dead_letters_serving": 0, "dead_letters_shadow": 0}
        t = cmp["targets"]
        for b, side in ((serving_bundle, "serving"), (shadow_bundle, "shadow")):
            q = prepare(events, "temporal", items=b.items, types=b.types, window=b.manifest.m)
            early = np.array([q.split.sequences[u][i].ts < cut for u, i in zip(q.test.users, q.test.positions)])
            assert t["both"] == int(early.sum()) > 0 and t["only_serving"] == t["total"] - t["both"]
            ref = summarize(bundle_ranks(b, q.encoded, q.test)[early], None, (10,))
            for key in METRICS:
                assert cmp["metrics"][side][key] == pytest.approx(ref[key], abs=TOL), (side, key)
        assert cmp["reports"]["serving"]["complete"]
        for key in METRICS:
            assert cmp["reports"]["serving"]["metrics"][key] == pytest.approx(offline[v1][key], abs=TOL), key

        # the shadow restarts on its own state and catches up
        shadow = start_worker(broker, shadow_bundle_dir, names, tmp_path / "shadow", *shadow_args)
        shadow.wait_ready(START_S)
        shadow_recs = read(broker, shadow_topic, n)
        status, cmp = compare(broker, names, shadow_topic, shadow_dlq, data, bundle_dir, shadow_bundle_dir,
                              tmp_path / "up", timeout=30)
        # no data set: the targets are the events the topics hold at/after T (the second phase's start)
        since_status, by_topics = compare(broker, names, shadow_topic, shadow_dlq, f"since:{cut}", bundle_dir,
                                          shadow_bundle_dir, tmp_path / "since", timeout=30)
        # and one version alone, the shadow's topic read as any worker's
        alone = streamrec("evaluate-live", "--since", cut, "--brokers", broker, "--clicks-topic", names.clicks,
                          "--browses-topic", names.browses, "--output-topic", shadow_topic, "--dlq-topic", shadow_dlq,
                          "--bundle", shadow_bundle_dir, "--json", "--no-progress", "--timeout", 30)
    finally:
        for w in (serving, shadow):
            if w.proc.poll() is None:
                w.stop()

    # the shadow topic: at least one recommendation per event (a SIGKILL under at-least-once may repeat
    # one, with the same list), all from the shadow version
    by_source = defaultdict(list)
    for r in shadow_recs:
        by_source[source_of(r)].append(json.loads(r.value))
    assert set(by_source) == set(sent.values())
    assert {m["model_version"] for copies in by_source.values() for m in copies} == {v2}
    for copies in by_source.values():
        assert all((c["items"], c["scores"]) == (copies[0]["items"], copies[0]["scores"]) for c in copies)

    # both answered every event: each version's live figures equal its bundle's offline evaluation
    assert status == 0 and cmp["complete"]
    assert cmp["model_version"] == {"serving": v1, "shadow": v2}
    assert cmp["model_versions_seen"] == {"serving": {v1: n}, "shadow": {v2: n}}
    assert cmp["events"]["both"] == n and cmp["targets"]["both"] == cmp["targets"]["total"] > 500
    for version, side in ((v1, "serving"), (v2, "shadow")):
        report = cmp["reports"][side]
        c = report["counts"]
        assert report["complete"] and c["inputs"] == c["recommendations"] == n
        assert c["order_violations"] == c["outputs_of_other_models"] == c["rejected"] == 0
        assert report["n_targets"] == offline[version]["n_targets"] == cmp["targets"]["total"]
        for key in METRICS:
            assert report["metrics"][key] == pytest.approx(offline[version][key], abs=TOL), (side, key)
            assert cmp["metrics"][side][key] == pytest.approx(offline[version][key], abs=TOL), (side, key)
        lat = cmp["latency_ms"][side]
        assert lat["n"] == n and 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    diff = cmp["difference"]["NDCG@10"]
    assert diff["value"] == pytest.approx(offline[v2]["NDCG@10"] - offline[v1]["NDCG@10"], abs=2 * TOL)
    assert diff["ci95"][0] <= diff["value"] <= diff["ci95"][1]
    print(f"\n[shadow] {n} events, {cmp['targets']['total']} targets; NDCG@10 serving "
          f"{cmp['metrics']['serving']['NDCG@10']:.4f} shadow {cmp['metrics']['shadow']['NDCG@10']:.4f} "
          f"(offline {offline[v1]['NDCG@10']:.4f} / {offline[v2]['NDCG@10']:.4f}); shadow duplicates "
          f"{len(shadow_recs) - n}")

    # --since T: the targets are every event at/after T of a user with an event before T, read from the
    # topics; both versions' figures equal their bundles stepped offline over the same events on those targets
    assert since_status == 0 and by_topics["complete"] and by_topics["targets_from"] == "topics"
    sequences = by_user(events)
    targets = [(u, i) for u, seq in sequences.items() if seq[0].ts < cut for i in range(len(seq)) if seq[i].ts >= cut]
    assert by_topics["targets"]["both"] == by_topics["targets"]["total"] == len(targets) > 0
    assert by_topics["events"]["both"] == n
    for b, side in ((serving_bundle, "serving"), (shadow_bundle, "shadow")):
        encoded = encode_all(sequences, b.items, b.types)
        ref = evaluate_bundle(b, encoded, build_targets(encoded, targets, b.manifest.m))
        for key in METRICS:
            assert by_topics["metrics"][side][key] == pytest.approx(ref[key], abs=TOL), (side, key)
            assert by_topics["reports"][side]["metrics"][key] == pytest.approx(ref[key], abs=TOL), (side, key)
    assert alone.returncode == 0, alone.stderr[-3000:]
    single = json.loads(alone.stdout)
    assert single["targets_from"] == "topics" and single["model_version"] == v2
    assert single["metrics"] == by_topics["reports"]["shadow"]["metrics"]


def test_a_warm_shadow_started_later_is_compared_on_the_events_it_answered(kafka_broker, bundle_dir,
                                                                           shadow_bundle_dir, tmp_path):
    """The runbook's other start: the shadow comes up after the serving worker has answered the first
    events and warms up on them (`--warm-from earliest`) without publishing; `--since` at its start then
    compares the two on the targets both answered, each equal to its bundle stepped offline over the
    users' whole histories (so the warmed states are exact)."""
    broker = kafka_broker.bootstrap
    serving_bundle, shadow_bundle = Bundle.load(bundle_dir), Bundle.load(shadow_bundle_dir)
    names = Names()
    topics = Topics(names.clicks, names.browses, names.recs, names.dlq)
    shadow_topic, shadow_dlq = f"{names.recs}.shadow", f"{names.dlq}.shadow"
    events = one_topic_per_user(150, seed=0)
    n = len(events)
    messages = plan(events, topics)
    cut = messages[int(0.7 * n)].ts
    first = [m for m in messages if m.ts < cut]

    serving = start_worker(broker, bundle_dir, names, tmp_path / "serving")
    shadow = None
    try:
        serving.wait_ready(START_S)
        send(broker, topics, first)
        read(broker, names.recs, len(first))
        shadow = start_worker(broker, shadow_bundle_dir, names, tmp_path / "shadow", "--output-topic", shadow_topic,
                              "--dlq-topic", shadow_dlq, "--app-id", f"{names.app}-shadow", "--warm-from", "earliest")
        shadow.wait_ready(START_S)
        send(broker, topics, plan(events, topics, from_ts=cut))
        read(broker, names.recs, n)
        shadow_recs = read(broker, shadow_topic, n - len(first))
        status, cmp = compare(broker, names, shadow_topic, shadow_dlq, f"since:{cut}", bundle_dir, shadow_bundle_dir,
                              tmp_path / "since", timeout=30)
    finally:
        for w in (serving, shadow):
            if w is not None and w.proc.poll() is None:
                w.stop()

    # the warm-up published nothing: the shadow answered the events after its start, once each
    assert len(shadow_recs) == n - len(first)
    assert {json.loads(r.value)["model_version"] for r in shadow_recs} == {shadow_bundle.version}
    assert status == 0 and cmp["complete"]
    assert cmp["events"]["both"] == n - len(first) and cmp["events"]["only_serving"] == len(first)
    # targets: every event at/after the cut of a user with an earlier event; compared: those the shadow
    # had already answered the user before (all but each user's first event after the cut)
    sequences = by_user(events)
    targets = [(u, i) for u, seq in sequences.items() if seq[0].ts < cut for i in range(len(seq)) if seq[i].ts >= cut]
    compared = np.array([i > 0 and sequences[u][i - 1].ts >= cut for u, i in targets])
    assert cmp["targets"]["total"] == len(targets) and cmp["targets"]["both"] == int(compared.sum()) > 100
    assert cmp["targets"]["only_serving"] == len(targets) - int(compared.sum())
    for b, side in ((serving_bundle, "serving"), (shadow_bundle, "shadow")):
        encoded = encode_all(sequences, b.items, b.types)
        ranks = bundle_ranks(b, encoded, build_targets(encoded, targets, b.manifest.m))
        ref = summarize(ranks[compared], None, (10,))
        for key in METRICS:
            assert cmp["metrics"][side][key] == pytest.approx(ref[key], abs=TOL), (side, key)
