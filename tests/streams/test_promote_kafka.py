"""Promote and rollback against the real broker (``streamrec promote``, issue 10 item 3).

Version A serves (``recommendations``), version B shadows (``recommendations.shadow``), both on the
same input topics under their own app ids. Events arrive in three phases. Before the promote, B is
stopped while it is behind A; before the rollback, A (then the shadow) is stopped while it is behind
B: both orders of the switch offset. After each switch both workers start again with their
original commands. Then, per input event: exactly one recommendation in ``recommendations`` under
exactly-once (read committed; at least one under at-least-once, a repeat being the same list),
from A below the promote's switch offset and from or after the rollback's, from B between; the
other version's in the shadow topic; each version's lists, read from both topics, equal its bundle
stepped by hand over every event (its states went on across both switches).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streamrec.export.runtime import Bundle
from streamrec.streams.config import WorkerConfig
from streamrec.streams.route import read_history, routes_topic, topic_for
from tests.factories import make_bundle
from tests.streams.workers import (PARTITIONS, Distinct, Names, Reader, assert_equal_to_offline, one_topic_per_user,
                                   produce, reference, source_of, start_worker)

PHASE = 3_000


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model version: the session bundle's data and shape, another seed and fewer epochs."""
    return make_bundle(tmp_path_factory.mktemp("promote-bundle") / "v2", epochs=2, seed=3)


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_promote_then_rollback_answers_every_event_once_from_one_version(
        kafka_broker, bundle_dir: Path, bundle: Bundle, v2_dir: Path, by_hand: Callable, tmp_path: Path,
        guarantee: str) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    shadow = f"{names.recs}.shadow"
    v2 = Bundle.load(v2_dir)
    assert v2.version != bundle.version
    isolation = {"isolation_level": "read_committed"} if guarantee == "exactly-once" else {}
    events = one_topic_per_user(users=800, seed=7, n=3 * PHASE)
    assert len(events) == 3 * PHASE
    phases = [events[i * PHASE:(i + 1) * PHASE] for i in range(3)]

    def start(version: str) -> object:  # the same command every time, as a user restarts a worker
        if version == "a":
            return start_worker(broker, bundle_dir, names, tmp_path / "a", "--guarantee", guarantee)
        return start_worker(broker, v2_dir, names, tmp_path / "b", "--guarantee", guarantee, "--app-id",
                            f"{names.app}-b", "--output-topic", shadow, "--dlq-topic", f"{names.dlq}.shadow")

    def answered(topic: str, version: str, n: int, timeout: float = 180) -> None:
        """Wait until ``n`` distinct events have a message of ``version`` in ``topic`` (read uncommitted)."""
        reader = Reader(broker, topic)
        mine = lambda rs: {source_of(r) for r in rs if json.loads(r.value)["model_version"] == version}  # noqa: E731
        got = reader.read_until(lambda rs: len(mine(rs)) >= n, timeout=timeout)
        reader.close()
        assert len(mine(got)) >= n, f"{topic}: {len(mine(got))} of {n} events answered by {version} in {timeout} s"

    def promote(serving: tuple[str, Path], standby: tuple[str, Path]) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name("streamrec")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "streamrec.cli.main"]
        return subprocess.run(cmd + ["promote", "--brokers", broker, "--clicks-topic", names.clicks, "--browses-topic",
                                     names.browses, "--partitions", str(PARTITIONS), "--output-topic", names.recs,
                                     "--serving-app-id", serving[0], "--serving-bundle", str(serving[1]),
                                     "--shadow-app-id", standby[0], "--shadow-bundle", str(standby[1])],
                              capture_output=True, text=True, timeout=120)

    a_app, b_app = (names.app, bundle_dir), (f"{names.app}-b", v2_dir)
    a, b = start("a"), start("b")
    a.wait_ready()
    b.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, batch_size=1 << 18)
    half = PHASE // 2
    sent = produce(producer, names, phases[0][:half])
    answered(shadow, v2.version, half)
    assert b.stop() == 0, b.tail()
    sent |= produce(producer, names, phases[0][half:])  # B is behind by these
    answered(names.recs, bundle.version, PHASE)
    refused = promote(a_app, b_app)  # A still runs
    assert refused.returncode == 2 and "stop both workers first" in refused.stderr, refused.stderr
    assert a.stop() == 0, a.tail()
    done = promote(a_app, b_app)
    assert done.returncode == 0 and "switch at" in done.stderr, done.stderr
    twice = promote(a_app, b_app)  # the roles named as before the switch: refused, nothing changed
    assert twice.returncode == 2 and "name the versions by their roles now" in twice.stderr, twice.stderr

    a, b = start("a"), start("b")
    a.wait_ready()
    b.wait_ready()
    sent |= produce(producer, names, phases[1][:half])
    answered(shadow, bundle.version, half)  # A, now the shadow
    assert a.stop() == 0, a.tail()
    sent |= produce(producer, names, phases[1][half:])  # A is behind by these
    answered(names.recs, v2.version, PHASE, timeout=240)  # B has answered phase 2 (and the rest of phase 1)
    assert b.stop() == 0, b.tail()
    back = promote(b_app, a_app)  # rollback: B serves now, A is the shadow
    assert back.returncode == 0, back.stderr

    a, b = start("a"), start("b")
    a.wait_ready()
    b.wait_ready()
    sent |= produce(producer, names, phases[2])
    producer.close()
    outputs = {}
    for topic in (names.recs, shadow):
        reader = Reader(broker, topic, **isolation)
        outputs[topic] = reader.read_until(Distinct(3 * PHASE, stall_s=60), timeout=300)
        reader.read_until(lambda rs: False, timeout=3)  # anything that would still come
        reader.close()
    assert a.stop() == 0, a.tail()
    assert b.stop() == 0, b.tail()

    config = WorkerConfig(bundle=bundle_dir, brokers=broker, output_topic=names.recs, partitions=PARTITIONS)
    history = read_history(config, routes_topic(names.recs))
    version_of = {names.app: bundle.version, f"{names.app}-b": v2.version}
    by_version: dict[str, list] = defaultdict(list)
    for topic, records in outputs.items():
        per_source: dict[tuple, list[dict]] = defaultdict(list)
        for r in records:
            per_source[source_of(r)].append(json.loads(r.value))
        assert set(per_source) == set(sent), f"{topic}: {len(set(sent) - set(per_source))} events without an answer"
        for (t, p, offset), copies in per_source.items():
            if guarantee == "exactly-once":
                assert len(copies) == 1, (topic, t, p, offset, len(copies))
            assert all(c["items"] == copies[0]["items"] and c["model_version"] == copies[0]["model_version"]
                       for c in copies)
            # the version the routes say answers this event in this topic
            expected = {version_of[app] for app in version_of
                        if topic_for(history[(app, t, p)], offset, names.recs if app == names.app else shadow) == topic}
            assert expected == {copies[0]["model_version"]}, (topic, t, p, offset, expected)
        firsts = {source_of(r): r for r in reversed(records)}
        for r in firsts.values():
            by_version[json.loads(r.value)["model_version"]].append(r)
    for t, p in {(t, p) for t, p, _ in sent}:  # both versions switched at the same offsets, twice
        a_route, b_route = history[(names.app, t, p)], history[(f"{names.app}-b", t, p)]
        assert [o for o, _ in a_route if o] == [o for o, _ in b_route if o] and len(a_route) == len(b_route) == 3
    # each version answered every event, across both topics, as its bundle stepped by hand over all of them
    for version, model in ((bundle.version, bundle), (v2.version, v2)):
        assert {source_of(r) for r in by_version[version]} == set(sent)
        assert_equal_to_offline(reference(model, by_hand, _in_production_order(by_version[version]), sent), version)
    print(f"\n[promote] {guarantee}: switches per partition {history[(names.app, names.clicks, 0)]}; "
          f"{3 * PHASE:,} events, each answered in {names.recs} and in the shadow topic, by the routed version")


def _in_production_order(recs: list) -> list:
    """Messages ordered per user as their events were produced (one input topic per user: by offset)."""
    return sorted(recs, key=source_of)
