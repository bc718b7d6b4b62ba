"""The worker's HTTP endpoints (read-only; Faust serves them on ``--web-port``).

    GET /recommendations/{user_id}   the user's latest list (routed to the worker owning the key)
    GET /ready                       200 once lookups can be answered, else 503 with the reason (probes)
    GET /health                      liveness: always 200, readiness and counters since start
    GET /metrics                     Prometheus text format (streams/metrics.py)

Until the worker can route a lookup (model loaded, partitions assigned, no rebalance under way,
partition metadata known), ``/recommendations`` and ``/ready`` answer 503 with ``Retry-After`` and
the reason, and the worker logs one line per reason, not a traceback per request.
"""
from __future__ import annotations

import gc
import logging
import sys
from typing import TYPE_CHECKING, Any

from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View

from streamrec.streams import codec
from streamrec.streams.state import UserState

if TYPE_CHECKING:
    from streamrec.streams.worker import Worker

log = logging.getLogger("streamrec.worker")

#: The Prometheus text format (UTF-8; aiohttp refuses a charset parameter here).
CONTENT_TYPE = "text/plain; version=0.0.4"

#: Seconds a client should wait before asking again while the worker cannot answer yet.
RETRY_AFTER_S = 1


def register(worker: Worker) -> None:
    """Add the two pages to the worker's app."""
    app = worker.app

    # Faust makes a View class of a page function: plain functions (bound to the view), not methods.
    async def recommendations_page(web: View, request: Request, user_id: str) -> Response:
        return await recommendations(worker, web, request, user_id)

    async def health_page(web: View, request: Request) -> Response:
        return await health(worker, web, request)

    async def ready_page(web: View, request: Request) -> Response:
        problem = not_ready(worker)
        return unavailable(worker, web, problem) if problem else web.json({"ready": True})

    routed = app.table_route(table=worker.states, match_info="user_id")(recommendations_page)

    async def guarded_page(web: View, request: Request, user_id: str) -> Response:
        problem = not_ready(worker)  # faust's router fails with a TypeError (500) before metadata is known
        return unavailable(worker, web, problem) if problem else await routed(web, request, user_id=user_id)

    async def metrics_page(web: View, request: Request) -> Response:
        return web.bytes(worker.metrics.exposition(), content_type=CONTENT_TYPE)

    app.page("/recommendations/{user_id}")(guarded_page)
    app.page("/metrics")(metrics_page)
    app.page("/ready")(ready_page)
    app.page("/health")(health_page)


def not_ready(worker: Worker) -> str | None:
    """Why the worker cannot answer or route a lookup yet, or None once it can."""
    if worker.bundle is None:
        return "the model is still loading"
    app = worker.app
    if app.rebalancing:
        return "partitions are being assigned (rebalance)"
    try:
        if not app.consumer.assignment():
            return "no partitions assigned yet"
        if app.consumer.key_partition(worker.changelog, b"") is None:
            return "partition metadata is not known yet"
    except ConsumerNotStarted:
        return "the Kafka consumer is starting"
    return None


def unavailable(worker: Worker, web: Any, problem: str) -> Response:
    """503 with Retry-After; one log line per reason (the reasons are few), not one per request."""
    if problem not in worker.http_refusals:
        log.info("HTTP lookups answer 503 until the worker is ready: %s", problem)
    worker.http_refusals[problem] = worker.http_refusals.get(problem, 0) + 1
    return web.error(503, f"not ready: {problem}", headers={"Retry-After": str(RETRY_AFTER_S)},
                     retry_after_s=RETRY_AFTER_S)


async def recommendations(worker: Worker, web: View, request: Request, user_id: str) -> Response:
    """The user's latest recommendation list (404 before their first event, 400 for a bad id)."""
    problem = codec.id_problem(user_id)
    if problem:
        return web.error(400, f"user id {problem}")
    key = user_id.encode("utf-8")
    blob = worker.pending.get(key) or worker.states.get(key)
    if blob is None:
        return web.error(404, "no events for this user yet", user_id=user_id)
    state = UserState.unpack(blob)
    items = worker.bundle.items
    return web.json({"user_id": user_id, "items": [items.token(i) for i in state.top_items],
                     "scores": state.top_scores.tolist(), "model_version": worker.manifest.model_version,
                     "events": state.count, "last_ts": state.last_ts})

async def health(worker: Worker, web: View, request: Request) -> Response:
    """Readiness (model loaded, partitions assigned) and counters since start: messages received
    (new records, in their partition's order); events emitted (applied, one recommendation each),
    duplicate (a repeated event id, dropped), redelivered (a finished record delivered again, after a
    crash or a rewind: skipped), processed (emitted + duplicate), rejected (dead letters) and per
    reason, expired states and ttl_sweeps, rewound (partitions sought back over records the consumer
    skipped or stalled on), absent (offsets that turned out not to exist); batch_sizes (micro-batches
    per power-of-two size bucket); the step's moving average; whether torch is loaded (it never should
    be); gc: objects frozen at start (out of the cyclic collector's scans) and collections per
    generation. Without crashes: produced = processed + rejected."""
    counts = worker.counts
    return web.json({"model_version": worker.manifest.model_version, "table": worker.table_name,
                     "ready": not_ready(worker) is None,
                     "bundle_loaded": worker.bundle is not None, "torch_imported": "torch" in sys.modules,
                     "counts": {**counts, "processed": counts["emitted"] + counts["duplicate"]},
                     "rejected": dict(worker.rejected), "stream_time": worker.stream_time,
                     "batch_sizes": dict(sorted(worker.batch_sizes.items(), key=lambda kv: int(kv[0]))),
                     "step_ms_avg": round(1000 * worker.step_s, 3) if worker.step_s < 1.0 else None,
                     "gc": {"frozen_objects": gc.get_freeze_count(),
                            "collections": [g["collections"] for g in gc.get_stats()]}})
