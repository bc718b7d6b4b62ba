"""The worker's HTTP endpoints (read-only; Faust serves them on ``--web-port``).

    GET /recommendations/{user_id}   the user's latest list (routed to the worker owning the key)
    GET /health                      readiness and counters since start
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View

from streams import codec
from streams.state import UserState

if TYPE_CHECKING:
    from streams.worker import Worker


def register(worker: Worker) -> None:
    """Add the two pages to the worker's app."""
    app = worker.app

    # Faust makes a View class of a page function: plain functions (bound to the view), not methods.
    async def recommendations_page(web: View, request: Request, user_id: str) -> Response:
        return await recommendations(worker, web, request, user_id)

    async def health_page(web: View, request: Request) -> Response:
        return await health(worker, web, request)

    app.page("/recommendations/{user_id}")(app.table_route(table=worker.states, match_info="user_id")(
        recommendations_page))
    app.page("/health")(health_page)


async def recommendations(worker: Worker, web: View, request: Request, user_id: str) -> Response:
    """The user's latest recommendation list (404 before their first event, 400 for a bad id)."""
    problem = codec.id_problem(user_id)
    if problem:
        return web.error(400, f"user id {problem}")
    if worker.bundle is None:
        return web.error(503, "the worker is still starting")
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
    be). Without crashes: produced = processed + rejected."""
    try:
        assigned = bool(worker.app.consumer.assignment())
    except ConsumerNotStarted:
        assigned = False
    counts = worker.counts
    return web.json({"model_version": worker.manifest.model_version, "table": worker.table_name,
                     "ready": worker.bundle is not None and assigned and not worker.app.rebalancing,
                     "bundle_loaded": worker.bundle is not None, "torch_imported": "torch" in sys.modules,
                     "counts": {**counts, "processed": counts["emitted"] + counts["duplicate"]},
                     "rejected": dict(worker.rejected), "stream_time": worker.stream_time,
                     "batch_sizes": dict(sorted(worker.batch_sizes.items(), key=lambda kv: int(kv[0]))),
                     "step_ms_avg": round(1000 * worker.step_s, 3) if worker.step_s < 1.0 else None})
