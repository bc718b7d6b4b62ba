"""The streaming worker: Kafka events -> per-user LSTM state (RocksDB table) -> ONNX step -> top-k.

Run it with ``streamrec worker --bundle DIR --brokers HOST:PORT`` (see ``--help``), or with Faust's
own command, configured by the environment (``streams/config.py`` lists the variables)::

    STREAMREC_BUNDLE=bundles/m1 STREAMREC_BROKERS=127.0.0.1:9092 faust -A streams.app worker -l info

Reads top to bottom: config -> App -> topics -> table -> agent -> completions and writes ->
helpers -> web views. The agent steps event after event without waiting for Kafka; each event's
*completion* (wait for its writes' acknowledgements, store its state under at-least-once,
acknowledge it to Faust) runs in ``streams/pipeline.py``, in arrival order, at most ``--in-flight``
behind. Importing
this module reads the configuration and the bundle's manifest (its version names the state table)
but not the model: ``streamrec worker`` loads the bundle before it starts Faust (so a bad bundle
is a clear error), ``faust -A`` when the agent starts. ONNX steps run in arrival order: on the
event loop while a step takes under a millisecond (large catalogs: in one dedicated thread). The table's ``rocksdb://`` store is faust-streaming's
RocksDB store, which uses ``rocksdict`` (no python-rocksdb needed).

Contract (``streams/codec.py`` has the message formats):
- in: topics ``clicks`` and ``browses`` keyed by user id; both must have the state table's
  partition count (missing topics are created with it). One agent consumes both: events of a user
  are processed in arrival order per topic; a user's events in the two topics interleave in the
  order the worker receives them (what ``source`` in the output records).
- out: ``recommendations`` (one message per applied event, keyed by user id); ``events.dlq`` (one
  message per rejected event, with its reason code and the original bytes). The worker never stops
  on bad input; counters per reason are at ``GET /health``.
- state: table ``user-state-<model version>`` (RocksDB, changelogged to Kafka), value =
  ``UserState.pack()``; a new model version starts with fresh states, never reads old ones. The
  same table holds, under keys ``b"\\x00progress\\x00<topic>:<partition>"`` (no user id has a control
  character), the last offset finished in each input partition: the worker applies every input
  partition contiguously whatever the consumer does around restarts and rebalances, seeking back
  over records it skipped (``streams/progress.py``, ``streams/sequencer.py``).
- ``GET /recommendations/{user_id}``: the user's latest list, answered by the worker owning the key.
- at-least-once (default): a crash replays events since the last commit; the state remembers the
  last applied offset per input topic (and the last 16 ``event_id``s), so a replayed or duplicated
  event is skipped: not applied twice, no second recommendation (``redelivered`` in ``/health``).
  A crash between publishing a recommendation and storing the state re-emits that one (same
  content, same ``source``). Recreating an input topic restarts its offsets: run the worker with a
  new ``--app-id`` then (fresh states), or its events would count as replays. Exactly-once uses Kafka transactions (consumers of the output then
  read with ``isolation.level=read_committed``).
"""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View

from export import contract
from export.manifest import Manifest
from export.runtime import Bundle
from streams import codec
from streams.config import ConfigError, WorkerConfig
from streams.logic import already_applied, process
from streams.pipeline import Pipeline
from streams.security import faust_credentials
from streams.sequencer import Sequencer, is_progress_key
from streams.state import StateError, UserState, last_ts_of
from streams.topics import ensure_topics as _ensure_topics
from streams.topics import mismatch

log = logging.getLogger("streamrec.worker")

# ---- configuration (once, from the environment) ---------------------------------------------
config = WorkerConfig.from_env()
try:
    manifest = Manifest.from_json((config.bundle / contract.MANIFEST_FILE).read_text(encoding="utf-8"))
except (OSError, ValueError) as exc:
    raise ConfigError(f"cannot read the bundle's manifest in {config.bundle}: {exc}") from None
if config.k is not None and config.k > manifest.k:
    raise ConfigError(f"--k/STREAMREC_K={config.k} exceeds the bundle's k={manifest.k}")
K = config.k or manifest.k
SOURCE_SLOT = {config.clicks_topic: 0, config.browses_topic: 1}  # UserState.offsets slots
TABLE_NAME = "user-state-" + re.sub(r"[^A-Za-z0-9._-]", "_", manifest.model_version)[:150]
# RocksDB per partition: small buffers (Faust's defaults are 3x64 MB memtables and a 2 GB cache), so
# memory is bounded at about partitions x (2 x 4 + 16) MB = 192 MB for 8 partitions. A 30-minute soak
# with 16 MB buffers showed RSS rising by 110 MB until the memtables first flushed.
ROCKSDB_OPTIONS = {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 16 << 20}

# ---- app ------------------------------------------------------------------------------------
app = faust.App(
    config.app_id,
    broker=config.broker_urls,
    broker_credentials=faust_credentials(config),
    store="rocksdb://",
    datadir=str(config.data_dir),
    processing_guarantee=config.guarantee,
    topic_partitions=config.partitions,
    topic_replication_factor=config.replication,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=config.session_timeout,
    broker_heartbeat_interval=min(3.0, config.session_timeout / 4),
    web_bind=config.web_host,
    web_port=config.web_port,
    web_host=config.web_host if config.web_host != "0.0.0.0" else socket.gethostname(),
    autodiscover=False,
)
EXACTLY_ONCE = config.guarantee == "exactly_once"

# ---- topics (internal=True: Faust creates them with the table's partition count) ------------
raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": config.partitions, "internal": True}
events_topic = app.topic(config.clicks_topic, config.browses_topic, **raw)
output_topic = app.topic(config.output_topic, **raw)
dlq_topic = app.topic(config.dlq_topic, **raw)

# ---- table: user id (UTF-8 bytes) -> UserState bytes ----------------------------------------
states = app.Table(TABLE_NAME, default=None, key_type=bytes, value_type=bytes,  # bytes: raw serializer
                   partitions=config.partitions, options=dict(ROCKSDB_OPTIONS),
                   help="per-user LSTM state, seen window and latest list (streams.state.UserState)")

# One thread runs every slow ONNX step, so steps stay in arrival order and off the event loop. A step
# that takes less than INLINE_STEP_S (measured: a moving average) runs on the event loop itself: the
# hop to the thread and back costs more than such a step (a 1x64 LSTM over 1,600 items takes ~40 us),
# and the loop is never held long enough to matter for heartbeats or HTTP.
INFERENCE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-onnx")
INLINE_STEP_S = 0.001
_step_s: list[float] = [1.0]  # moving average of the seconds a step takes (starts slow: in the thread)
counts: Counter[str] = Counter()  # received / emitted / duplicate / redelivered / rejected / expired / state_reset
rejected: Counter[str] = Counter()  # per reason code
_bundle: list[Bundle] = []  # filled on worker start
_stepping: list[bytes | None] = [None]  # the key of the event being processed (the expiry sweep skips it)
# At-least-once: user key -> packed state whose recommendation Kafka has not acknowledged yet. The table
# gets it only then (see emit); the user's next events read it from here.
_pending: dict[bytes, bytes] = {}
_stream_time: list[int] = [0]  # newest event time applied (epoch ms): the clock of --state-ttl


# ---- the agent: one event at a time, in arrival order ---------------------------------------
@app.agent(events_topic)
async def recommend(stream: faust.StreamT) -> None:
    loop = asyncio.get_running_loop()
    try:
        await output_topic.maybe_declare()
        await dlq_topic.maybe_declare()
        bundle = await loop.run_in_executor(INFERENCE, load_bundle)
    except Exception as exc:  # the worker cannot work: stop it with the reason
        log.critical("streamrec worker cannot start: %s", exc)
        await app.crash(exc)
        return
    log.info("streamrec worker: model %s (k=%d, m=%d, event types %s), table %s, %d events in flight at most, "
             "torch imported: %s", bundle.version, K, manifest.m, manifest.event_types, TABLE_NAME,
             config.in_flight, "torch" in sys.modules)
    verified: set[str] = set()
    manual = stream.noack()  # an event is acknowledged (its offset may be committed) by its completion
    current: list[asyncio.Future[None]] = []
    try:
        async for event in manual.events():
            if event.message.topic not in verified:
                problem = partition_problem(event.message.topic)
                if problem:
                    log.critical("streamrec worker stops: %s", problem)
                    await app.crash(ConfigError(problem))
                    return
                verified.add(event.message.topic)
            # Shielded: a shutdown arriving now still steps, publishes and queues this event's completion.
            current[:] = [asyncio.ensure_future(admit_and_handle(event, bundle, loop, manual))]
            await asyncio.shield(current[0])
    finally:  # a clean stop (or a rebalance's end of this stream) finishes the events in flight first
        await asyncio.shield(_finish_in_flight(current))


async def _finish_in_flight(current: list[asyncio.Future[None]]) -> None:
    if current and not current[0].done():
        await asyncio.wait(current)
    await pipeline.drain()


async def admit_and_handle(event: faust.EventT, bundle: Bundle, loop: asyncio.AbstractEventLoop,
                           stream: faust.StreamT) -> None:
    """One record: sequence it, step it, publish, and queue its completion in the pipeline."""
    if await sequencer.admit(event.message):  # the next record of its partition
        await pipeline.put(await handle(event, bundle, loop, stream))
    elif not event.message.acked:  # a redelivery of a finished record: acknowledge it, in order
        await pipeline.put(complete(event, stream, []))
    # else: skipped by the sequencer (it comes again after a seek), never acknowledged


async def handle(event: faust.EventT, bundle: Bundle, loop: asyncio.AbstractEventLoop,
                 stream: faust.StreamT) -> Coroutine[Any, Any, None]:
    """Parse, step the user's state (``run_step``), publish; returns the event's completion
    (see ``emit``), which the pipeline runs once the events before it are done."""
    msg = event.message
    counts["received"] += 1
    source = codec.Source(msg.topic, msg.partition, msg.offset)
    parsed = codec.parse_event(event.key, event.value, config.kinds[msg.topic], manifest.event_types)
    if isinstance(parsed, codec.Rejected):
        return await reject(event, stream, source, parsed)
    _stepping[0] = event.key
    try:
        state = read_state(event.key, parsed.event.user_id)
        position = (SOURCE_SLOT[msg.topic], msg.offset)
        if kind := already_applied(state, parsed.event_id, position):
            counts[kind] += 1  # a duplicate event id, or a redelivery after a crash: applied once, not twice
            return await write(event, stream, None, None)
        step = partial(process, bundle, [state], [parsed.event], event_ids=[parsed.event_id], positions=[position],
                       k=K)
        (new_state,), (rec,) = await run_step(step, loop)
    except Exception as exc:  # a bug or a broken model: keep the event, keep going
        log.exception("processing %s failed", source)
        return await reject(event, stream, source, codec.Rejected(codec.PROCESSING_ERROR, repr(exc)[:500]))
    finally:
        _stepping[0] = None
    value = codec.encode_recommendation(rec.user_id, rec.items, rec.scores, bundle.version, source, rec.event_ts,
                                        now_ms())
    _stream_time[0] = max(_stream_time[0], rec.event_ts)
    return await emit(event, stream, value, new_state.pack(), source)


async def run_step(step: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """``step()`` on the event loop if steps are fast (see INLINE_STEP_S), else in the inference thread."""
    inline = _step_s[0] < INLINE_STEP_S
    result, seconds = timed(step) if inline else await loop.run_in_executor(INFERENCE, timed, step)
    first = _step_s[0] >= 1.0  # no measurement yet (or steps of a second or more): take this one as it is
    _step_s[0] = seconds if first else 0.95 * _step_s[0] + 0.05 * seconds
    return result


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


async def emit(event: faust.EventT, stream: faust.StreamT, value: bytes, state: bytes,
               source: codec.Source) -> Coroutine[Any, Any, None]:
    """Publish the recommendation and write the user's new state; returns the event's completion.

    At-least-once: the table gets the state only once Kafka acknowledged the recommendation (in the
    completion; until then the user's next events read it from ``_pending``): after a crash (even
    SIGKILL) an event the state includes always has its recommendation in the topic, and an event it
    does not include is applied again (a duplicate with the same ``source``).

    Exactly-once: the recommendation, the state and the partition's progress are written now, in
    the source partition's open transaction, together (``write_in_transaction``); the event counts
    as done (acknowledged, so Faust may commit its offset) once they are delivered: Faust commits
    the input offset of a done event in the transaction open at that moment, which then holds the
    event's writes or follows a transaction that committed them.
    """
    return await write(event, stream, (OUTPUT, value), state)


async def write(event: faust.EventT, stream: faust.StreamT, out: tuple[str, bytes] | None,
                state: bytes | None) -> Coroutine[Any, Any, None]:
    """Start an event's writes (``out`` = (topic, value): its recommendation or dead letter; ``state``:
    the user's new state, for a recommendation) as ``emit`` says; returns the event's completion."""
    if EXACTLY_ONCE:
        return complete(event, stream, await write_in_transaction(event, out, state), emitted=state is not None)
    writes = [] if out is None else await send_records(event.message, [(out[0], event.key, out[1], None)])
    if state is None:
        return complete(event, stream, writes)
    _pending[event.key] = state
    return complete(event, stream, writes, state=(event.key, state), emitted=True)


async def complete(event: faust.EventT, stream: faust.StreamT, writes: list[Any],
                   state: tuple[bytes, bytes] | None = None, emitted: bool = False) -> None:
    """Run by the pipeline, in arrival order: wait for the event's writes; at-least-once, then store its
    state and its partition's progress (in this order: one changelog partition holds both); count it;
    acknowledge it to Faust."""
    for write in writes:
        await write
    msg = event.message
    if not EXACTLY_ONCE:
        records: list[Record] = []
        if state is not None:
            key, blob = state
            records.append((CHANGELOG, key, blob, msg.partition))
            if _pending.get(key) is blob:  # no later event of the user is in flight
                del _pending[key]
        finished = sequencer.finished(msg.tp)
        if finished is None or msg.offset > finished:  # (a redelivered record is acknowledged only)
            records.append((CHANGELOG, *sequencer.progress(msg), msg.partition))
        for _, key, blob, partition in records:
            put_local(states, key, blob, partition)  # type: ignore[arg-type]
        await send_records(msg, records)  # not awaited further: at-least-once as faust's own table writes
    if emitted:
        counts["emitted"] += 1
    await stream.ack(event)


async def _pipeline_failed(exc: BaseException) -> None:
    log.critical("streamrec worker stops: writing an event's results failed: %r", exc)
    await app.crash(exc)


pipeline = Pipeline(config.in_flight, on_error=_pipeline_failed)


def put_local(table: Any, key: bytes, value: bytes, partition: int) -> None:
    """Write ``value`` to the table's local RocksDB copy of ``partition`` only."""
    data = table.data  # faust's RocksDB store: one DB per partition
    data._db_for_partition(partition).put(key, value)
    data._key_index[key] = partition


sequencer = Sequencer(app, states, counts, SOURCE_SLOT, drain=pipeline.drain)


@app.timer(sequencer.stall_s / 3, name="unstall_partitions")
async def unstall_partitions() -> None:
    if _bundle:
        await sequencer.unstall()


async def write_in_transaction(event: faust.EventT, out: tuple[str, bytes] | None,
                               state: bytes | None) -> list[Any]:
    """Exactly-once: an event's writes (``out`` = (topic, value) for the recommendation or dead letter,
    the user's new ``state``, the input partition's progress) to the local table and, back to back
    under the transaction's lock, to Kafka in the source partition's open transaction; returns their
    delivery futures. No commit can fall between them: a transaction holds all of an event's writes
    or none. (Faust's own paths would not do: ``topic.send`` uses a non-transactional producer for a
    topic the app does not consume, and table writes go through a buffer that a commit can overtake.)"""
    msg = event.message
    records: list[Record] = []
    if out is not None:
        records.append((out[0], event.key, out[1], None))
    if state is not None:
        records.append((CHANGELOG, event.key, state, msg.partition))
    records.append((CHANGELOG, *sequencer.progress(msg), msg.partition))
    for topic, key, value, partition in records:
        if topic == CHANGELOG:
            put_local(states, key, value, partition)  # type: ignore[arg-type]
    return await send_records(msg, records)


#: (topic, key, value, partition or None for the key's default partition)
Record = tuple[str, bytes | None, bytes, int | None]
OUTPUT, DLQ = output_topic.get_topic_name(), dlq_topic.get_topic_name()
CHANGELOG = states.changelog_topic.get_topic_name()


async def send_records(msg: Any, records: list[Record]) -> list[Any]:
    """Send ``records`` back to back straight through aiokafka (Faust's ``topic.send`` and table writes
    cost several times more per record); returns their delivery futures. Exactly-once: through the
    source partition's transactional producer, under its transaction's lock. At-least-once: through
    the app's producer. Kafka keeps them in order per partition either way."""
    producer = app.consumer.transactions.producer if EXACTLY_ONCE else app.producer  # faust's producer
    if EXACTLY_ONCE:
        transactional_id = f"{app.conf.id}-{app.assignor.group_for_topic(msg.topic)}-{msg.partition}"
        sender = producer._transaction_producers.get(transactional_id)
        if sender is None:
            raise RuntimeError(f"no transaction is open for {transactional_id} (partition revoked?)")
        async with producer._trn_locks[transactional_id]:
            futures = [await sender.send(topic, value, key=key, partition=partition)
                       for topic, key, value, partition in records]
    else:
        sender = producer._producer  # the aiokafka producer faust started
        futures = [await sender.send(topic, value, key=key, partition=partition)
                   for topic, key, value, partition in records]
    for (topic, *_), future in zip(records, futures):
        if topic == CHANGELOG:  # as faust's own table writes do: the changelog offset to restore from
            future.add_done_callback(_changelog_written)
    return futures


def _changelog_written(future: Any) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    result = future.result()
    if EXACTLY_ONCE:  # written to disk when the transaction commits
        app.tables.persist_offset_on_commit(states.data, result.topic_partition, result.offset)
    else:
        states.data.set_persisted_offset(result.topic_partition, result.offset)


def read_state(key: bytes, user_id: str) -> UserState | None:
    blob = _pending.get(key) or states.get(key)
    try:
        return UserState.unpack(blob, manifest.layers, manifest.hidden) if blob else None
    except StateError as exc:  # not with this code's states (the table name carries the model version)
        log.error("state of user %r unreadable (%s): starting it afresh", user_id, exc)
        counts["state_reset"] += 1
        return None


async def reject(event: faust.EventT, stream: faust.StreamT, source: codec.Source,
                 why: codec.Rejected) -> Coroutine[Any, Any, None]:
    """Send a message to the dead-letter topic and count it; returns its completion (the dead letter is
    written, exactly-once: in the open transaction, before the event counts as done; see ``emit``)."""
    counts["rejected"] += 1
    rejected[why.reason] += 1
    log.info("dead letter %s:%d@%d: %s (%s)", source.topic, source.partition, source.offset, why.reason, why.message)
    return await write(event, stream, (DLQ, codec.encode_dead_letter(event.key, event.value, source, why, now_ms())),
                       None)


def now_ms() -> int:
    return int(time.time() * 1000)


def load_bundle() -> Bundle:
    """Load and verify the bundle once (checksums, dims, ONNX session): by ``streamrec worker`` before
    Faust starts (a bad bundle is a clear CLI error), else by the agent on start, in the inference thread."""
    if not _bundle:
        bundle = Bundle.load(config.bundle, threads=config.threads)
        if bundle.version != manifest.model_version:
            raise ConfigError(f"bundle {config.bundle} changed since start ({manifest.model_version} -> "
                              f"{bundle.version}): restart the worker")
        _bundle.append(bundle)
    return _bundle[0]


# ---- local state after a crash (exactly-once) -----------------------------------------------
RUNNING_MARKER = config.data_dir / "streamrec.running"  # exists while a worker runs on this data dir
_prepared: list[bool] = []  # once per process (Faust may send on_worker_init more than once)


def prepare_local_state() -> bool:
    """At worker start. Under exactly-once, a worker that did not stop cleanly (SIGKILL, power loss)
    may have left writes of transactions Kafka then aborted in its local RocksDB: delete the local
    table so it is rebuilt from the changelog, read committed. Returns whether it did."""
    if _prepared:
        return False
    _prepared.append(True)
    wiped = False
    if EXACTLY_ONCE and RUNNING_MARKER.exists():
        log.warning("the last worker on %s did not stop cleanly: rebuilding the state table from its changelog",
                    config.data_dir)
        shutil.rmtree(app.conf.tabledir, ignore_errors=True)
        wiped = True
    RUNNING_MARKER.parent.mkdir(parents=True, exist_ok=True)
    RUNNING_MARKER.write_text("streamrec worker running; deleted on a clean stop\n")
    return wiped


def mark_stopped() -> None:
    """After a clean stop (``streamrec worker`` calls it once Faust has closed the tables)."""
    RUNNING_MARKER.unlink(missing_ok=True)


@app.on_worker_init.connect
def _on_worker_init(app: faust.App, **kwargs: Any) -> None:
    prepare_local_state()


# ---- expiry of idle users (--state-ttl) ----------------------------------------------------
async def expire_idle_states() -> int:
    """Delete the states of users idle longer than ``--state-ttl`` in event time (the newest event time
    applied, never ahead of the clock), in this worker's active partitions; each deletion is a
    tombstone in the changelog. Returns how many expired."""
    if not config.state_ttl or not _stream_time[0]:
        return 0
    horizon = min(_stream_time[0], now_ms()) - int(config.state_ttl * 1000)
    store, topic = states.data, states.changelog_topic.get_topic_name()
    n = 0
    for partition in sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic):
        db = store._db_for_partition(partition)  # faust's RocksDB store: one DB per partition
        idle = [key for key, blob in store._visible_items(db)
                if not is_progress_key(key) and last_ts_of(blob) < horizon]
        for i, key in enumerate(idle):
            blob = db.get(key)  # again: an event may have arrived since the scan (same thread, no await between)
            if key == _stepping[0] or key in _pending or blob is None or last_ts_of(blob) >= horizon:
                continue
            db.delete(key)
            store._key_index.pop(key, None)
            states.send_changelog(partition, key, None, key_serializer="raw", value_serializer="raw")
            n += 1
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let events through during a long sweep
    if n:
        counts["expired"] += n
        log.info("expired %d idle user states (last event before %d)", n, horizon)
    return n


if config.state_ttl:
    app.timer(config.ttl_sweep, name="expire_idle_states")(expire_idle_states)


# ---- topics ---------------------------------------------------------------------------------
def partition_problem(topic: str) -> str | None:
    """Why ``topic`` cannot feed the table (another partition count: its events would land in the wrong
    state partition), or None; from the consumer's metadata, once events flow."""
    found = app.consumer.topic_partitions(topic)
    return None if found is None or found == config.partitions else mismatch(config, topic, found)


def ensure_topics() -> None:
    """``streams.topics.ensure_topics`` with this worker's configuration (before Faust starts)."""
    _ensure_topics(config)


# ---- web views ------------------------------------------------------------------------------
@app.page("/recommendations/{user_id}")
@app.table_route(table=states, match_info="user_id")
async def recommendations_view(web: View, request: Request, user_id: str) -> Response:
    """The user's latest recommendation list (404 before their first event, 400 for a bad id)."""
    problem = codec.id_problem(user_id)
    if problem:
        return web.error(400, f"user id {problem}")
    if not _bundle:
        return web.error(503, "the worker is still starting")
    key = user_id.encode("utf-8")
    blob = _pending.get(key) or states.get(key)
    if blob is None:
        return web.error(404, "no events for this user yet", user_id=user_id)
    state = UserState.unpack(blob)
    items = _bundle[0].items
    return web.json({"user_id": user_id, "items": [items.token(i) for i in state.top_items],
                     "scores": state.top_scores.tolist(), "model_version": manifest.model_version,
                     "events": state.count, "last_ts": state.last_ts})


@app.page("/health")
async def health_view(web: View, request: Request) -> Response:
    """Readiness (model loaded, partitions assigned) and counters since start: messages received
    (new records, in their partition's order); events emitted (applied, one recommendation each),
    duplicate (a repeated event id, dropped), redelivered (a finished record delivered again, after a
    crash or a rewind: skipped), processed (emitted + duplicate), rejected (dead letters) and per
    reason, expired states, rewound (partitions sought back over records the consumer skipped or
    stalled on), absent (offsets that turned out not to exist); whether torch is loaded (it never
    should be). Without crashes: produced = processed + rejected."""
    try:
        assigned = bool(app.consumer.assignment())
    except ConsumerNotStarted:
        assigned = False
    body: dict[str, Any] = {"model_version": manifest.model_version, "table": TABLE_NAME,
                            "ready": bool(_bundle) and assigned and not app.rebalancing,
                            "bundle_loaded": bool(_bundle), "torch_imported": "torch" in sys.modules,
                            "counts": {**counts, "processed": counts["emitted"] + counts["duplicate"]},
                            "rejected": dict(rejected), "stream_time": _stream_time[0]}
    return web.json(body)
