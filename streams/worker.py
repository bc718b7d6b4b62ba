"""The streaming worker: Kafka events -> per-user LSTM state (RocksDB table) -> ONNX step -> top-k.

``Worker(config)`` builds everything from a ``WorkerConfig`` (nothing at import): the Faust app,
its topics, the state table, the pipeline of completions, the sequencer and the counters.
``streamrec worker`` builds one and runs it; ``faust -A streamrec.streams.app worker`` does the same from
the environment (``streams/app.py``); tests build one in-process.

An event's way through the code, one micro-batch at a time (``_consume`` -> ``_handle``):

    fetch loop (faust_adapter) -> Inbox -> take a batch (--batch-max, --batch-wait)
      -> sequence (Sequencer.admit: each input partition contiguous)
      -> read the users' states (RocksDB, or the pending ones not yet stored)
      -> plan (streams.batch.plan_batch: decode, step users' runs, encode; streams.gate: what of it is
         published, and where, during a warm-up and after a promote)
      -> publish (streams.publisher.Publisher.write; Outbox: batched sends; exactly-once: in each
         source partition's transaction)
      -> complete (Pipeline, in arrival order: wait for delivery; exactly-once: acknowledge every
         record to Faust; at-least-once: send states and progress to the changelog, and once Kafka
         has them store them locally and acknowledge the records, batch after batch)

Records are sequenced before they are decoded: a record the sequencer lets go (it comes again
after a seek) is not parsed for nothing, and a malformed record still takes its place in its
partition's order (its dead letter is its output). Faust keeps the consumer group, the table
and its changelog, recovery, commits and transactions; its per-record paths (streams, agents,
``topic.send``, table ``__setitem__``) are not used, so faust-streaming #497 (table writes inside
``stream.take()``) cannot arise: no table write here depends on a current event.

Contract (``streams/codec.py`` has the message formats):
- in: topics ``clicks`` and ``browses`` keyed by user id; both must have the state table's
  partition count (missing topics are created with it). Each input partition is applied in order;
  a user's events in the two topics interleave in the order the worker receives them.
- out: ``recommendations`` (one message per applied event, keyed by user id); ``events.dlq`` (one
  message per rejected event, with its reason code and the original bytes). The worker never stops
  on bad input; counters per reason are at ``GET /health``.
- state: table ``user-state-<model version>`` (RocksDB, changelogged to Kafka), value =
  ``UserState.pack()``; a new model version starts with fresh states. The same table holds, under
  keys ``b"\\x00progress\\x00<topic>:<partition>"``, the last offset finished in each input
  partition (``streams/sequencer.py``).
- at-least-once (default): a state is written only once the recommendations of its events are
  acknowledged by Kafka, and stored locally (and its records acknowledged to Faust, so their
  offsets can be committed) only once Kafka acknowledged its changelog write; a crash replays
  events since the last commit, and the state's per-topic offsets and recent event ids skip what
  it already holds. Exactly-once: Kafka transactions, one
  per input partition (consumers read with ``isolation.level=read_committed``).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import numpy as np

from streamrec.export import contract
from streamrec.export.manifest import Manifest
from streamrec.export.runtime import Bundle
from streamrec.streams import faust_adapter, views, warm
from streamrec.streams.batch import Plan, Rules, plan_batch
from streamrec.streams.config import ConfigError, WorkerConfig, parse_since
from streamrec.streams.expiry import expire_idle_states
from streamrec.streams.gate import OutputGate
from streamrec.streams.inbox import Inbox
from streamrec.streams.local_state import RunningMarker
from streamrec.streams.metrics import WorkerMetrics
from streamrec.streams.partitioner import KeyPartitioner
from streamrec.streams.pipeline import Pipeline
from streamrec.streams.publisher import Publisher
from streamrec.streams.progress import APPLY, REPLAYED, REWIND
from streamrec.streams.security import faust_credentials
from streamrec.streams.sequencer import Sequencer
from streamrec.streams.state import StateError, UserState
from streamrec.streams.topics import ensure_topics, mismatch
from streamrec.streams.warm import WarmPlan

log = logging.getLogger("streamrec.worker")

# RocksDB per partition: small buffers (Faust's defaults are 3x64 MB memtables and a 2 GB cache), so
# memory is bounded at about partitions x (2 x 4 + 16) MB = 192 MB for 8 partitions.
ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 16 << 20}
#: A batch whose step takes less than this (moving average) runs on the event loop; slower ones (large
#: catalogs) run in the inference thread, so the loop keeps fetching and sending meanwhile. In the
#: thread the step's Python competes with the loop's for the GIL (a waiting thread may lose up to the
#: 5 ms switch interval each time): measured on ml-100k at 795 events/s offered, p50 latency 22-25 ms
#: with batches in the thread, 17 ms inline; the drain rate is the same either way.
INLINE_STEP_S = 0.05


def read_manifest(config: WorkerConfig) -> Manifest:
    try:
        return Manifest.from_json((config.bundle / contract.MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the bundle's manifest in {config.bundle}: {exc}") from None


def batch_bucket(n: int) -> str:
    """The histogram bucket of a batch of ``n`` records: the smallest power of two >= n."""
    return str(1 << max(0, (n - 1).bit_length()))


class Worker:
    """One streaming worker (see the module docstring)."""

    def __init__(self, config: WorkerConfig, manifest: Manifest | None = None) -> None:
        self.config = config
        self.manifest = manifest or read_manifest(config)
        if config.k is not None and config.k > self.manifest.k:
            raise ConfigError(f"--k/STREAMREC_K={config.k} exceeds the bundle's k={self.manifest.k}")
        self.k = config.k or self.manifest.k
        self.exactly_once = config.guarantee == "exactly_once"
        self.table_name = "user-state-" + re.sub(r"[^A-Za-z0-9._-]", "_", self.manifest.model_version)[:150]
        self.app = app = faust.App(
            config.app_id, broker=config.broker_urls, broker_credentials=faust_credentials(config),
            store="rocksdb://", datadir=str(config.data_dir), processing_guarantee=config.guarantee,
            topic_partitions=config.partitions, topic_replication_factor=config.replication,
            consumer_auto_offset_reset="earliest", broker_session_timeout=config.session_timeout,
            broker_heartbeat_interval=min(3.0, config.session_timeout / 4), web_bind=config.web_host,
            web_port=config.web_port,
            web_host=config.web_host if config.web_host != "0.0.0.0" else socket.gethostname(),
            autodiscover=False, producer_max_batch_size=config.producer_batch_bytes)
        raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": config.partitions, "internal": True}
        self.events_topic = app.topic(config.clicks_topic, config.browses_topic, **raw)
        self.output_topic = app.topic(config.output_topic, **raw)
        self.dlq_topic = app.topic(config.dlq_topic, **raw)
        self.states = app.Table(self.table_name, default=None, key_type=bytes, value_type=bytes,
                                partitions=config.partitions, options=dict(ROCKSDB_OPTIONS),
                                help="per-user LSTM state, seen window and latest list (streams.state.UserState)")
        self.changelog = self.states.changelog_topic.get_topic_name()
        self.slots = {config.clicks_topic: 0, config.browses_topic: 1}  # UserState.offsets slots
        self.rules = Rules(kinds=config.kinds, slots=self.slots, event_types=frozenset(self.manifest.event_types),
                           k=self.k, output_topic=config.output_topic, dlq_topic=config.dlq_topic,
                           model_version=self.manifest.model_version, partitions=config.partitions)
        self.counts: Counter[str] = Counter()  # received / emitted / duplicate / redelivered / rejected / ...
        self.rejected: Counter[str] = Counter()  # per reason code
        self.batch_sizes: Counter[str] = Counter()  # power-of-two bucket -> batches
        self.bundle: Bundle | None = None
        self.inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-onnx")
        self.step_s = 1.0  # moving average of a batch's step time (starts slow: in the thread)
        self.http_refusals: dict[str, int] = {}  # reason -> HTTP requests answered 503 for it (streams/views.py)
        self.metrics = WorkerMetrics(self)  # GET /metrics (streams/metrics.py)
        self.stepping: set[bytes] = set()  # keys of the batch being stepped (the expiry sweep skips them)
        self.stream_time = 0  # newest event time applied (epoch ms): the clock of --state-ttl
        self.inbox = Inbox(min(config.batch_max, config.in_flight), config.batch_wait)
        # Bounded by events, not batches: at low load batches hold an event or two, and a bound of a few batches
        # would make each one wait for the acknowledgements of the few before it.
        self.pipeline = Pipeline(config.in_flight, on_error=self._pipeline_failed)
        self.in_flight = 0  # events whose batch is stepped and not yet completed
        self._room = asyncio.Event()  # set when in_flight drops
        self.sequencer = Sequencer(app, self.states, self.counts, self.slots, drain=self._drain)
        self.gate = OutputGate(self.sequencer, config.output_topic, self.counts)
        self.partitioner = KeyPartitioner()
        self.publisher = Publisher(app, self.states, self.sequencer, config, self.counts, self.rejected,
                                   self.metrics.publish_latency, self.partitioner, self._pipeline_failed)
        self.running_marker = RunningMarker(config.data_dir)  # streams/local_state.py
        self._verified: set[str] = set()
        faust_adapter.check(app)  # the private attributes of faust and aiokafka it uses (a clear error if missing)
        faust_adapter.install_batch_drain(app, self.events_topic.topics, self.inbox.put, self.inbox.space,
                                          own_thread=config.consumer == "thread")
        self._wire()

    # ---- wiring Faust to the pipeline ----------------------------------------------------------
    def _wire(self) -> None:
        app = self.app
        app.topics.add(self.events_topic)  # subscribed and acknowledged like an agent's topic
        app.task(self._consume)
        app.timer(self.sequencer.stall_s / 3, name="unstall_partitions")(self._unstall)
        if self.config.state_ttl:
            app.timer(self.config.ttl_sweep, name="expire_idle_states")(self._expire)
        app.on_worker_init.connect(self._on_worker_init)
        views.register(self)

    async def _expire(self) -> None:
        await expire_idle_states(self)

    def _on_worker_init(self, app: faust.App, **kwargs: Any) -> None:
        self.prepare_local_state()

    async def _unstall(self) -> None:
        if self.bundle is not None:
            await self.sequencer.unstall()

    def load_bundle(self) -> Bundle:
        """Load and verify the bundle once (checksums, dims, ONNX session): by ``streamrec worker`` before
        Faust starts (a bad bundle is a clear CLI error), else when consuming starts."""
        if self.bundle is None:
            bundle = Bundle.load(self.config.bundle, threads=self.config.threads)
            if bundle.version != self.manifest.model_version:
                raise ConfigError(f"bundle {self.config.bundle} changed since start ({self.manifest.model_version} -> "
                                  f"{bundle.version}): restart the worker")
            self.bundle = self.metrics.timed(bundle)  # type: ignore[assignment]  # a Bundle whose steps are timed
        return self.bundle

    def ensure_topics(self) -> None:
        """Create missing input topics with the table's partition count (before Faust starts)."""
        ensure_topics(self.config)

    async def _consume(self) -> None:
        """The hot loop: take a micro-batch from the inbox, handle it, again."""
        app = self.app
        # Faust leaves the root logger at DEBUG (its handlers filter): every library's debug call would then build
        # a record (aiokafka makes several per request). The level asked for goes on the root logger itself.
        logging.getLogger().setLevel(max(logging.getLogger().level, getattr(logging, self.config.log_level.upper())))
        try:
            faust_adapter.check(app, running=True)
            await self.output_topic.maybe_declare()
            await self.dlq_topic.maybe_declare()
            await asyncio.get_running_loop().run_in_executor(self.inference, self.load_bundle)
        except Exception as exc:  # the worker cannot work: stop it with the reason
            log.critical("streamrec worker cannot start: %s", exc)
            await app.crash(exc)
            return
        # Everything built so far (imports, Faust, the bundle) lives as long as the worker: out of the collector's
        # sight, a full collection scans only what came after. Unfrozen, each took 47-72 ms on ml-100k (a stall of
        # every event in flight, at 7,500 events/s offered).
        gc.collect()
        gc.freeze()
        log.info("streamrec worker: model %s (k=%d, m=%d, event types %s), table %s, batches of %d at most "
                 "(wait %.1f ms), %d events in flight at most, Kafka consumer on the %s, torch imported: %s",
                 self.manifest.model_version, self.k, self.manifest.m, self.manifest.event_types, self.table_name,
                 self.inbox.batch_max, 1000 * self.inbox.batch_wait, self.config.in_flight,
                 "event loop" if self.config.consumer == "loop" else "consumer thread", "torch" in sys.modules)
        current: asyncio.Future[None] | None = None
        try:
            while True:
                messages = await self.inbox.take()
                # Shielded: a stop arriving now still steps, publishes and queues this batch's completion.
                current = asyncio.ensure_future(self._handle(messages))
                await asyncio.shield(current)
        finally:  # a clean stop (or a crash) finishes the batches in flight first; the rest comes again
            self.inbox.discard(lambda m: faust_adapter.skip_unacked(app, m))
            await asyncio.shield(self._finish(current))

    async def _finish(self, current: asyncio.Future[None] | None) -> None:
        if current is not None and not current.done():
            await asyncio.wait([current])
        await self._drain()

    async def _handle(self, messages: list[Any]) -> None:
        """One micro-batch: sequence, read states, plan, publish, queue the completion."""
        app = self.app
        if not app.flow_control.is_active():  # rebalancing: these come again from the committed offsets
            for m in messages:
                faust_adapter.skip_unacked(app, m)
            return
        admitted: list[Any] = []  # applied or replayed records, in arrival order
        replayed: set[int] = set()  # indices in admitted of records finished before (acknowledged only)
        for m in messages:
            if m.generation_id != app.consumer_generation_id:
                faust_adapter.skip_unacked(app, m)
                continue
            if m.topic not in self._verified:
                problem = self._partition_problem(m.topic)
                if problem:
                    log.critical("streamrec worker stops: %s", problem)
                    await app.crash(ConfigError(problem))
                    return
                self._verified.add(m.topic)
            decision = self.sequencer.admit(m)
            if decision.action == APPLY:
                admitted.append(m)
            elif decision.action == REPLAYED:
                if not m.acked:
                    replayed.add(len(admitted))
                    admitted.append(m)
            elif decision.action == REWIND:
                await self._publish(admitted, replayed)  # the records before it go on first
                admitted, replayed = [], set()
                await self.sequencer.rewind(m, decision)
        await self._publish(admitted, replayed)

    async def _publish(self, admitted: list[Any], replayed: set[int]) -> None:
        if not admitted:
            return
        fresh = [m for i, m in enumerate(admitted) if i not in replayed]
        self.counts["received"] += len(fresh)
        self.batch_sizes[batch_bucket(len(admitted))] += 1
        self.metrics.batch_size.observe(len(admitted))
        plan = await self._plan(fresh) if fresh else Plan()
        n = len(admitted)
        while self.in_flight and self.in_flight + n > self.config.in_flight:  # a batch alone always goes
            self._room.clear()
            await self._room.wait()
        self.in_flight += n
        await self.pipeline.put(self._counted(n, await self.publisher.write(admitted, fresh, plan)))

    async def _plan(self, fresh: list[Any]) -> Plan:
        records = fresh  # Faust's messages have what the plan reads of a record (streams.batch.RecordLike)
        keys = {r.key: r.partition for r in records if r.key is not None}
        self.stepping = set(keys)
        try:
            states = self._read_states(keys)
            bundle = self.bundle
            assert bundle is not None
            now = int(time.time() * 1000)
            if self.step_s < INLINE_STEP_S:
                plan, seconds = _timed(plan_batch, bundle, records, states, self.rules, now_ms=now,
                                       partition_of=self.partitioner)
            else:
                plan, seconds = await asyncio.get_running_loop().run_in_executor(
                    self.inference, lambda: _timed(plan_batch, bundle, records, states, self.rules, now_ms=now,
                                                   partition_of=self.partitioner))
        finally:
            self.stepping = set()
        self.step_s = seconds if self.step_s >= 1.0 else 0.9 * self.step_s + 0.1 * seconds
        plan = self.gate.shape(plan, records)  # warm-up and promote/rollback (streams/gate.py)
        self.metrics.batch_seconds.observe(seconds)
        if plan.event_times:
            self.metrics.freshness.observe_many((now - np.asarray(plan.event_times, dtype=np.float64)) / 1000)
        self.stream_time = max(self.stream_time, plan.stream_time)
        return plan

    def prepare_warm(self) -> WarmPlan | None:
        """With ``--warm-from``, before Faust starts: plan the warm-up of a consumer group that never
        committed (``streams/warm.py``); None when there is nothing to plan."""
        if self.config.warm_from is None:
            return None
        since = parse_since(self.config.warm_from, int(time.time() * 1000))
        return warm.prepare(self.config, self.changelog, since)

    def _read_states(self, keys: dict[bytes, int]) -> dict[bytes, UserState | None]:
        out: dict[bytes, UserState | None] = {}
        by_partition: dict[int, list[bytes]] = defaultdict(list)
        for key, partition in keys.items():
            blob = self.pending.get(key)
            if blob is not None:
                out[key] = self._unpack(key, blob)
            else:
                by_partition[partition].append(key)
        for partition, wanted in by_partition.items():
            blobs = faust_adapter.partition_db(self.states, partition).get(wanted)
            for key, blob in zip(wanted, blobs):
                out[key] = self._unpack(key, blob) if blob is not None else None
        return out

    def _unpack(self, key: bytes, blob: bytes) -> UserState | None:
        try:
            return UserState.unpack(blob, self.manifest.layers, self.manifest.hidden)
        except StateError as exc:  # not with this code's states (the table name carries the model version)
            log.error("state of user %r unreadable (%s): starting it afresh", key[:80], exc)
            self.counts["state_reset"] += 1
            return None

    async def _counted(self, n: int, completion: Any) -> None:
        try:
            await completion
        finally:
            self.in_flight -= n
            self._room.set()

    @property
    def pending(self) -> dict[bytes, bytes]:
        """At-least-once: packed states written but not yet stored locally (``Publisher.pending``)."""
        return self.publisher.pending

    async def _drain(self) -> None:
        """Until every batch taken so far is finished: completed and (at-least-once) stored."""
        await self.pipeline.drain()
        await self.publisher.stored()

    async def _pipeline_failed(self, exc: BaseException) -> None:
        log.critical("streamrec worker stops: writing an event's results failed: %r", exc)
        await self.app.crash(exc)

    def _partition_problem(self, topic: str) -> str | None:
        """Why ``topic`` cannot feed the table (another partition count: its events would land in the wrong
        state partition), or None; from the consumer's metadata, once events flow."""
        found = self.app.consumer.topic_partitions(topic)
        return None if found is None or found == self.config.partitions else mismatch(self.config, topic, found)

    # ---- local state after a crash (exactly-once; streams/local_state.py) ------------------
    def prepare_local_state(self) -> bool:
        """At worker start: under exactly-once, a worker that did not stop cleanly may have left writes of
        aborted transactions in its local RocksDB; the local table is then rebuilt from the changelog."""
        return self.running_marker.start(wipe=self.app.conf.tabledir if self.exactly_once else None)

    def mark_stopped(self) -> None:
        """After a clean stop (``streamrec worker`` calls it once Faust has closed the tables)."""
        self.running_marker.stopped()


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started
