"""HTTP while a worker starts (issue 14 item 9): requests hammered from the moment the process starts
until it serves a backlog get 503 with Retry-After (never a 500, never a traceback in the log) until
the worker can route them, then 200/404; ``GET /ready`` is the probe that says when."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.streams.workers import PARTITIONS, Names, Reader, one_topic_per_user, produce, start_worker

pytestmark = pytest.mark.kafka


def ask(port: int, path: str) -> tuple[int | None, dict, str | None]:
    """(status, JSON body, Retry-After); status None while nothing listens on the port yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read()), r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"raw": body.decode(errors="replace")[:300]}
        return e.code, parsed, e.headers.get("Retry-After")
    except (OSError, ValueError):
        return None, {}, None


def test_requests_during_startup_get_503_then_answers(kafka_broker, tmp_path: Path, bundle_dir: Path) -> None:
    names, broker = Names(), kafka_broker.bootstrap
    events = one_topic_per_user(users=300, seed=7)[:8000]
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (names.clicks, names.browses)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    produce(producer, names, events)  # a backlog waits before the worker starts
    producer.close()
    user = events[0].user_id
    seen: list[tuple[float, str, int | None, dict, str | None]] = []
    stop = threading.Event()

    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    started = time.monotonic()

    def hammer() -> None:
        while not stop.is_set():
            for path in (f"/recommendations/{user}", "/ready"):
                seen.append((time.monotonic() - started, path, *ask(worker.port, path)))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        worker.wait_ready(timeout=180)
        Reader(broker, names.recs).read_until(lambda rs: len(rs) >= 1000, timeout=120)
        time.sleep(1.0)  # and a little while serving
    finally:
        stop.set()
        for t in threads:
            t.join()
        assert worker.stop() == 0, worker.tail()
    answered = [s for s in seen if s[2] is not None]
    statuses = Counter((path.split("/")[1], status) for _, path, status, _, _ in answered)
    print(f"\n[http startup] {len(seen)} requests, {len(answered)} answered: {dict(statuses)}")
    assert len(answered) >= 50, statuses  # the hammer ran while the worker started and served
    assert all(status in (200, 404, 503) for _, _, status, _, _ in answered), statuses  # no 500, nothing else
    for _, path, status, body, retry in answered:
        if status == 503:
            assert retry == "1" and body["error"].startswith("not ready: ") and body["retry_after_s"] == 1, body
    # once /ready said 200, lookups were answered, never 503 again: 404 until the user's first event is
    # stepped (the backlog goes partition by partition), then the user's list (200) and only that
    first_ready = min(t for t, path, status, _, _ in answered if path == "/ready" and status == 200)
    after = [(t, status) for t, path, status, _, _ in answered
             if path.startswith("/recommendations") and t > first_ready + 0.5]
    assert after and {status for _, status in after} <= {200, 404}, Counter(s for _, s in after)
    first_list = min(t for t, status in after if status == 200)
    assert {status for t, status in after if t > first_list + 0.5} == {200}
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log and "TypeError" not in log, worker.tail()
    refusals = [line for line in log.splitlines() if "HTTP lookups answer 503" in line]
    assert len(refusals) <= 6, refusals  # one line per reason, not one per request
