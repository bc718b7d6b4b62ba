"""The worker's Prometheus metrics (``GET /metrics`` on its web port; ``streams/views.py``).

One registry per worker (``WorkerMetrics(worker)``), not prometheus_client's global one, so that a
test can build several. The counters are the worker's own counts (the ones ``GET /health`` shows),
read when Prometheus scrapes; the histograms are filled per micro-batch with numpy
(``BatchHistogram.observe_many``: one call per batch, not one per event); lag and table size are
computed at scrape time. Faust's own Prometheus sensor is not used: it counts Faust's per-record
paths, which the batched worker goes around (its figures would be zero or wrong).

    streamrec_events_total{outcome}              received, emitted, duplicate, redelivered, rejected, expired, ...
    streamrec_dead_letters_total{reason}         dead letters per reason code (streams/codec.py REASONS)
    streamrec_onnx_step_seconds                  histogram: one ONNX call (a batch's users' runs of events)
    streamrec_onnx_step_rows                     histogram: rows per ONNX call
    streamrec_batch_step_seconds                 histogram: a micro-batch's decode + step + encode
    streamrec_batch_size                         histogram: records per micro-batch
    streamrec_freshness_seconds                  histogram: emitted_ts - event_ts per recommendation
    streamrec_publish_latency_seconds            histogram: input record's Kafka timestamp -> its writes acknowledged
    streamrec_consumer_lag{topic,partition}      records in Kafka past the last finished offset, per input partition
    streamrec_state_users                        users in the local state table (a count at most 30 s old)
    streamrec_in_flight_events                   events whose writes are under way
    streamrec_ready                              1 once lookups can be answered (GET /ready)
    streamrec_model_info{model_version,table,guarantee}
"""
from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, Metric)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streamrec.streams import faust_adapter
from streamrec.streams.views import not_ready

if TYPE_CHECKING:
    from streamrec.streams.worker import Worker

#: Histogram bounds. Seconds of an ONNX call / a batch step: 20 us .. 2.5 s.
STEP_BOUNDS = (2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Records per batch / rows per ONNX call: powers of two, as GET /health's buckets.
SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Seconds from an input record's Kafka timestamp to publish: 1 ms .. 60 s.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds from event time to publish: a live stream is within seconds, a replay of history days behind.
FRESHNESS_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
                    86400.0, 7 * 86400.0)

#: Seconds between two counts of the state table's users (started by a scrape).
USERS_COUNT_S = 30.0



class BatchHistogram:
    """A Prometheus histogram filled a batch at a time (``le`` buckets: a value counts in every bucket
    whose bound is at least the value)."""

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bounds = [float(b) for b in bounds]
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last: above every bound (+Inf only)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: np.ndarray) -> None:
        if values.size:
            self.counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=self.counts.size)
            self.sum += float(values.sum())

    def family(self) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts)
        buckets = [(_le(b), int(n)) for b, n in zip(self._bounds, cumulative[:-1])] + [("+Inf", int(cumulative[-1]))]
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


def _le(bound: float) -> str:
    return floatToGoString(bound)  # as prometheus_client writes bucket bounds


class TimedSteps:
    """The bundle, with every ``step`` and ``run`` call's seconds and rows (scored events) observed (the
    rest passes through)."""

    def __init__(self, bundle: Any, seconds: BatchHistogram, rows: BatchHistogram) -> None:
        self._bundle, self._seconds, self._rows = bundle, seconds, rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bundle, name)

    def step(self, item: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self._bundle.step(item, *args, **kwargs)
        self._seconds.observe(time.perf_counter() - t0)
        self._rows.observe(len(item))
        return out

    def run(self, item: np.ndarray, event_type: np.ndarray, gap: np.ndarray, h: np.ndarray, c: np.ndarray,
            length: np.ndarray, rows: np.ndarray, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self._bundle.run(item, event_type, gap, h, c, length, rows, **kwargs)
        self._seconds.observe(time.perf_counter() - t0)
        self._rows.observe(len(rows))
        return out


class WorkerMetrics(Collector):
    """Every metric of one worker, in a registry of its own (``exposition()`` renders it)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.onnx_seconds = BatchHistogram("streamrec_onnx_step_seconds",
                                           "Seconds of one ONNX call (the runs of a micro-batch's users)", STEP_BOUNDS)
        self.onnx_rows = BatchHistogram("streamrec_onnx_step_rows", "Rows (events) per ONNX step call", SIZE_BOUNDS)
        self.batch_seconds = BatchHistogram("streamrec_batch_step_seconds",
                                            "Seconds to decode, step and encode one micro-batch",
                                            STEP_BOUNDS)
        self.batch_size = BatchHistogram("streamrec_batch_size", "Input records per micro-batch", SIZE_BOUNDS)
        self.freshness = BatchHistogram("streamrec_freshness_seconds",
                                        "Seconds from an event's ts to its recommendation's emitted_ts",
                                        FRESHNESS_BOUNDS)
        self.publish_latency = BatchHistogram(
            "streamrec_publish_latency_seconds",
            "Seconds from an input record's Kafka timestamp to the acknowledgement of its recommendation or dead "
            "letter", LATENCY_BOUNDS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._users: int | None = None  # the last count of the state table's users (state_users)
        self._users_count: asyncio.Future[int] | None = None
        self._users_counted_at = -USERS_COUNT_S
        self._counting = ThreadPoolExecutor(1, thread_name_prefix="streamrec-count")

    def histograms(self) -> list[BatchHistogram]:
        return [self.onnx_seconds, self.onnx_rows, self.batch_seconds, self.batch_size, self.freshness,
                self.publish_latency]

    def timed(self, bundle: Any) -> TimedSteps:
        return TimedSteps(bundle, self.onnx_seconds, self.onnx_rows)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # ---- what a scrape reads of the worker ------------------------------------------------------
    def _assigned_inputs(self) -> list[Any]:
        w = self.worker
        try:
            return sorted(tp for tp in w.app.assignor.assigned_actives() if tp.topic in w.sequencer.inputs)
        except Exception:  # noqa: BLE001 - not assigned yet (starting, rebalancing)
            return []

    def consumer_lag(self) -> list[tuple[Any, int]]:
        """(input partition, records in Kafka past its last finished offset) per assigned input partition
        whose end offset is known; a partition with nothing finished yet counts from offset 0."""
        w, out = self.worker, []
        for tp in self._assigned_inputs():
            high = w.app.consumer.highwater(tp)
            if high is not None:
                finished = w.sequencer.finished(tp)
                out.append((tp, max(0, high - (finished + 1 if finished is not None else 0))))
        return out

    def state_users(self) -> int | None:
        """Users in the local state table (assigned partitions): the last exact count of its keys, progress
        keys left out, None before the first one. A scrape starts a new count in a thread of its own when
        the last is older than ``USERS_COUNT_S`` (RocksDB's own estimate counts every overwrite in its
        memtable: 20 events of one user count 20 until a flush). Counting costs ~1.5 us a user."""
        if self._users_count is None and time.monotonic() - self._users_counted_at >= USERS_COUNT_S:
            dbs = [faust_adapter.partition_db(self.worker.states, p)
                   for p in sorted({tp.partition for tp in self._assigned_inputs()})]
            if dbs:
                self._users_count = asyncio.get_running_loop().run_in_executor(self._counting, count_users, dbs)
                self._users_count.add_done_callback(self._users_counted)
        return self._users

    def _users_counted(self, future: asyncio.Future[int]) -> None:
        self._users_count, self._users_counted_at = None, time.monotonic()
        if not future.cancelled() and future.exception() is None:
            self._users = future.result()

    def collect(self) -> Iterable[Metric]:
        w = self.worker
        events = CounterMetricFamily("streamrec_events", "Input records by outcome since start (as GET /health)",
                                     labels=["outcome"])
        counts = {**w.counts, "processed": w.counts["emitted"] + w.counts["duplicate"]}
        for outcome, n in sorted(counts.items()):
            events.add_metric([outcome], n)
        yield events
        dead = CounterMetricFamily("streamrec_dead_letters", "Dead letters by reason since start", labels=["reason"])
        for reason, n in sorted(w.rejected.items()):
            dead.add_metric([reason], n)
        yield dead
        yield from (h.family() for h in self.histograms())
        lag = GaugeMetricFamily("streamrec_consumer_lag",
                                "Records in Kafka past the last finished offset, per assigned input partition",
                                labels=["topic", "partition"])
        for tp, n in self.consumer_lag():
            lag.add_metric([tp.topic, str(tp.partition)], n)
        yield lag
        users = self.state_users()
        if users is not None:
            yield GaugeMetricFamily("streamrec_state_users",
                                    "Users in this worker's state table (exact, counted at most every 30 s)",
                                    value=users)
        yield GaugeMetricFamily("streamrec_in_flight_events", "Events whose writes are under way", value=w.in_flight)
        yield GaugeMetricFamily("streamrec_ready", "1 once the worker can answer lookups (GET /ready)",
                                value=1.0 if not_ready(w) is None else 0.0)
        yield GaugeMetricFamily("streamrec_stream_time_seconds", "Newest event time applied (epoch seconds)",
                                value=w.stream_time / 1000)
        info = InfoMetricFamily("streamrec_model", "The model this worker serves")
        info.add_metric([], {"model_version": w.manifest.model_version, "table": w.table_name,
                             "guarantee": w.config.guarantee.replace("_", "-")})
        yield info


def count_users(dbs: Sequence[Any]) -> int:
    """Keys in the state table's RocksDB partitions (rocksdict ``Rdict``s) that are users: not the
    progress keys (``streams/sequencer.py``) nor faust's offset key (``__faust\\0offset__``), which
    both hold a NUL byte, as no user id can (``streams/codec.py``)."""
    n = 0
    for db in dbs:
        for key in db.keys():
            if b"\x00" not in key:
                n += 1
    return n
