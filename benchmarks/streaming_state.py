"""State per user and recovery from the changelog, for the streaming benchmark (benchmarks/streaming.py).

  packed_state_bytes  packed UserState sizes (initial, full seen window m, top k, the recent event ids)
  rocksdb_state       users and value sizes in a stopped worker's RocksDB folder, and the folder's size
  recovery            stop the worker, delete its RocksDB folder, start it again with the same app id:
                      seconds until ready (state restored from the changelog), beside a restart with
                      the folder kept; the busiest user's restored event count checked
"""
from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

from streaming_runs import Bench, get_json, loadavg


def packed_state_bytes(bundle_dir: Path) -> dict:
    from streamrec.export.runtime import Bundle
    from streamrec.streams.logic import initial_state
    from streamrec.streams.state import RECENT_IDS, UserState

    bundle = Bundle.load(bundle_dir, threads=1)
    mf = bundle.manifest
    init = initial_state(bundle)
    full = dataclasses.replace(init, seen=tuple(range(2, 2 + mf.m)), top_items=tuple(range(2, 2 + mf.k)),
                               top_scores=[0.0] * mf.k, recent_ids=tuple(range(RECENT_IDS)), count=1, last_ts=1)
    assert UserState.unpack(full.pack(), mf.layers, mf.hidden).m == mf.m
    return {"initial": len(init.pack()), "full_window": len(full.pack()), "layers": mf.layers, "hidden": mf.hidden,
            "k": mf.k, "m": mf.m, "recent_ids": RECENT_IDS,
            "formula": "50 + 8*L*H + 4*m + 8*k + 8*ids"}


def rocksdb_state(data_dir: Path) -> dict:
    """Users and value sizes in the worker's RocksDB folder (after the worker stopped), and its size."""
    out: dict = {"dir_bytes": sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())}
    try:
        from rocksdict import AccessType, Options, Rdict

        from streamrec.streams.sequencer import is_progress_key  # the worker's own bookkeeping keys

        keys = values = users = 0
        dbs = sorted(p for p in data_dir.rglob("*.db") if p.is_dir())
        for p in dbs:
            db = Rdict(str(p), options=Options(raw_mode=True), access_type=AccessType.read_only())
            try:
                for k, v in db.items():
                    if k.startswith(b"__faust") or is_progress_key(k):  # not users
                        continue
                    users += 1
                    keys += len(k)
                    values += len(v)
            finally:
                db.close()
        out.update(partitions=len(dbs), users=users, mean_value_bytes=values / users if users else None,
                   mean_key_bytes=keys / users if users else None,
                   dir_bytes_per_user=out["dir_bytes"] / users if users else None)
    except Exception as exc:  # noqa: BLE001 - a figure we leave out, with the reason
        out["error"] = f"reading RocksDB: {exc!r}"
    return out


def changelog_records(brokers: str, app_id: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=brokers.split(","), group_id=None, enable_auto_commit=False)
    try:
        topics = [t for t in c.topics() if t.startswith(app_id) and t.endswith("-changelog")]
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or ()]
        begin, end = c.beginning_offsets(tps), c.end_offsets(tps)
        return {"topics": topics, "records": sum(end[tp] - begin[tp] for tp in tps)}
    finally:
        c.close()


def recovery(bench: Bench, label: str, guarantee: str, worker, events: list, fresh_ready_s: float) -> dict:
    """Stop the worker, measure its state, delete its RocksDB folder, restart with the same app id."""
    bench.procs.stop(worker)
    data_dir = bench.state_dir(label)
    out: dict = {"label": label, "guarantee": guarantee, "rocksdb": rocksdb_state(data_dir)}
    try:
        out["changelog"] = changelog_records(bench.brokers, bench.app_id(label))
    except Exception as exc:  # noqa: BLE001
        out["changelog"] = {"error": repr(exc)}
    out["loadavg_before"] = loadavg()
    # control: the same restart with the RocksDB folder kept (nothing to restore)
    worker, _, warm_s = bench.start_worker(label, guarantee, name=f"worker-{label}-restart", log_level="info")
    bench.procs.stop(worker)
    shutil.rmtree(data_dir)
    busiest, n = Counter(e.user_id for e in events).most_common(1)[0]
    worker, port, ready_s = bench.start_worker(label, guarantee, name=f"worker-{label}-recovery", log_level="info")
    out.update(ready_s=round(ready_s, 2), restart_with_state_ready_s=round(warm_s, 2),
               fresh_start_ready_s=round(fresh_ready_s, 2), restore_s_estimate=round(ready_s - warm_s, 2),
               loadavg_after=loadavg())
    rec = get_json(f"http://127.0.0.1:{port}/recommendations/{busiest}")
    out["check"] = {"user": busiest, "events_in_data": n, "events_in_restored_state": (rec or {}).get("events")}
    out["restored_state_ok"] = bool(rec) and rec.get("events") == n
    bench.procs.stop(worker)
    return out
