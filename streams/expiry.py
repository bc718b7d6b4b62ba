"""Expiry of idle users' states (``--state-ttl``): a sweep the worker runs every ``--ttl-sweep`` seconds.

Event time, not wall time: a state expires when its last event is older than the newest event time
the worker applied (never ahead of its clock) minus the TTL, so replays of history expire like
live traffic. Each deletion is a tombstone in the changelog; users being stepped or with writes in
flight are left alone.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from streamrec.streams import faust_adapter
from streamrec.streams.sequencer import is_progress_key
from streamrec.streams.state import last_ts_of

if TYPE_CHECKING:
    from streamrec.streams.worker import Worker

log = logging.getLogger("streamrec.worker")


async def expire_idle_states(worker: Worker) -> int:
    """Delete the states of users idle longer than ``--state-ttl`` in event time (the newest event time
    applied, never ahead of the clock), in this worker's active partitions; each deletion is a
    tombstone in the changelog. Returns how many expired; counts the sweep (``ttl_sweeps``)."""
    if not worker.config.state_ttl or not worker.stream_time:
        worker.counts["ttl_sweeps"] += 1
        return 0
    horizon = min(worker.stream_time, int(time.time() * 1000)) - int(worker.config.state_ttl * 1000)
    n = 0
    for partition in sorted(tp.partition for tp in worker.app.assignor.assigned_actives() if tp.topic == worker.changelog):
        db = faust_adapter.partition_db(worker.states, partition)
        idle = [key for key, blob in faust_adapter.visible_items(worker.states, db)
                if not is_progress_key(key) and last_ts_of(blob) < horizon]
        for i, key in enumerate(idle):
            blob = db.get(key)  # again: an event may have arrived since the scan (no await between)
            if key in worker.stepping or key in worker.pending or blob is None or last_ts_of(blob) >= horizon:
                continue
            db.delete(key)
            faust_adapter.forget_key(worker.states, key)
            worker.states.send_changelog(partition, key, None, key_serializer="raw", value_serializer="raw")
            n += 1
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let events through during a long sweep
    if n:
        worker.counts["expired"] += n
        log.info("expired %d idle user states (last event before %d)", n, horizon)
    worker.counts["ttl_sweeps"] += 1
    return n
