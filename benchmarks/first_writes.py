"""The broker's first writes to a fresh topic, by index size: how long its produce acks take.

    ./run python benchmarks/first_writes.py --rounds 10 --out benchmarks/results/first-writes.json

Kafka maps each partition's offset and time index (``log.index.size.max.bytes``; Kafka's default 10 MiB,
streamrec's broker 256 KiB: streams/kafka_dist.py) when the partition takes its first index entry, after
~4 KiB of records. The first touch of that sparse map makes the kernel read ahead into it (the block
device's ``read_ahead_kb``, recorded below), and while it does, the partition's appends wait.

Each round, for each index size (order alternating): a fresh topic of 8 partitions with that
``segment.index.bytes`` (the per-topic form of the broker setting), one second of rest, then a
librdkafka producer (acks=all, linger 0; connected and holding the topic's metadata before its
first record, so its own start is not counted) offers --events 100-byte records at --rate events/s.
Per record: from ``produce()`` to its delivery report. Reported per round: the worst ack in each
20 ms window of the first 300 ms, and p50 / p99 / max over the first 100 ms and after 300 ms.
Uses its own broker (streamrec's settings), in a temporary folder deleted after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from paced import librdkafka_producer
from streaming_runs import loadavg, say

from streamrec.streams.kafka_dist import INDEX_MAX_BYTES

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"kafka-default": 10 * 1024 * 1024, "streamrec": INDEX_MAX_BYTES}


def one_topic(brokers: str, index_bytes: int, events: int, rate: float) -> dict:
    """Fresh topic, paced records, each record's ack time (ms) by when it was handed over."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"first-writes-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers})  # held until the topic exists (its handle ends the request)
    admin.create_topics([NewTopic(topic, 8, 1, config={"segment.index.bytes": str(index_bytes)})])[topic].result(30)
    time.sleep(1.0)
    p = librdkafka_producer(brokers)
    p.list_topics(topic, timeout=30)
    acks: list[tuple[float, float]] = []
    t0 = time.monotonic()
    for i in range(events):
        sent = time.monotonic()
        p.produce(topic, b"x" * 100, str(i).encode(),
                  on_delivery=lambda err, _m, sent=sent: acks.append((sent - t0, (time.monotonic() - sent) * 1000)))
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0.0005:
            p.poll(0)
            time.sleep(delay)
    p.flush(30)
    at, ms = np.array([a for a, _ in acks]), np.array([m for _, m in acks])
    windows = [round(float(ms[(at >= w / 1000) & (at < (w + 20) / 1000)].max()), 1)
               for w in range(0, 300, 20) if ((at >= w / 1000) & (at < (w + 20) / 1000)).any()]

    def stats(mask: np.ndarray) -> dict:
        part = ms[mask]
        return {"n": int(part.size), **{q: round(float(np.percentile(part, v)), 1) for q, v in (("p50", 50), ("p99", 99))},
                "max": round(float(part.max()), 1)} if part.size else {"n": 0}

    return {"worst_per_20ms_first_300ms": windows, "first_100ms": stats(at < 0.1), "after_300ms": stats(at >= 0.3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--rounds", type=int, default=10, help="topics per index size (default 10)")
    ap.add_argument("--events", type=int, default=2500, help="records per topic (default 2500)")
    ap.add_argument("--rate", type=float, default=5000, help="records per second (default 5000)")
    ap.add_argument("--warm-up", type=int, default=12,
                    help="topics written first and not reported (default 12): a fresh broker compiles its paths")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "first-writes.json")
    a = ap.parse_args()
    from streamrec.streams.broker import start_broker

    work = Path(tempfile.mkdtemp(prefix="streamrec-first-writes-"))
    broker = start_broker(name=None, data_dir=work / "kafka", die_with_parent=True, record_state=False)
    try:
        ra = read_ahead_kb(work)
        doc = {"command": "./run python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
               "events": a.events, "rate": a.rate, "read_ahead_kb": ra, "cores": os.cpu_count(),
               "loadavg_start": loadavg(), "runs": {name: [] for name in SIZES}}
        for _ in range(a.warm_up):
            one_topic(broker.bootstrap, SIZES["streamrec"], a.events, a.rate)
        for r in range(a.rounds):
            order = list(SIZES.items()) if r % 2 == 0 else list(SIZES.items())[::-1]
            for name, size in order:
                res = one_topic(broker.bootstrap, size, a.events, a.rate)
                doc["runs"][name].append(res)
                say(f"round {r} {name:>13}: worst ack per 20 ms {res['worst_per_20ms_first_300ms']}")
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc["summary"] = {name: {"rounds_with_an_ack_over_10ms_in_the_first_300ms":
                             sum(max(r["worst_per_20ms_first_300ms"]) > 10 for r in runs),
                             "rounds": len(runs),
                             "median_worst_ack_first_300ms": float(np.median([max(r["worst_per_20ms_first_300ms"])
                                                                              for r in runs])),
                             "median_p99_after_300ms": float(np.median([r["after_300ms"]["p99"] for r in runs]))}
                      for name, runs in doc["runs"].items()}
    doc["loadavg_end"] = loadavg()
    a.out.write_text(json.dumps(doc, indent=1))
    for name, s in doc["summary"].items():
        say(f"{name}: {s}")
    return 0


def read_ahead_kb(path: Path) -> int | None:
    """The readahead (KiB) of the block device holding ``path`` (None where /sys does not say)."""
    dev = os.stat(path).st_dev
    try:
        return int(Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/queue/read_ahead_kb").read_text())
    except (OSError, ValueError):
        try:  # a partition: its disk's queue
            return int((Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().parent
                        / "queue" / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            return None


if __name__ == "__main__":
    sys.exit(main())
