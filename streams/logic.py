"""The per-event work of the worker, as a pure function: (states, events) -> (new states, recommendations).

No Kafka and no Faust here: the worker's batch plan (``streams/batch.py``) calls ``process`` with
a whole micro-batch and the stored states of its users; tests call it directly.

Rules (the same as offline evaluation through the bundle, ``export/bundle_eval.py``):
- a user without a state starts from the model's initial state, with gap bucket 0;
- the gap is the time since the newest event seen for the user; an event older than that
  (out of order) is applied in arrival order with its gap clamped to 0 (bucket 1), and the
  state's ``last_ts`` stays the newest time;
- unknown items map to OOV (they step the model but never enter the seen window);
- the seen window holds the last ``m`` distinct items, the current one included; they are
  dropped from the graph's top-(k+m) list and the first ``k`` remaining are the recommendation;
- a bundle whose model attends over recent items (manifest ``attention`` = A > 0) also gets, per
  event, the newest A items of that seen window after the event was remembered, oldest first and
  PAD-padded on the left (``export.contract.windows_of``): what offline evaluation and the export's
  parity gate feed it too;
- an event already applied is a redelivery: state unchanged, no recommendation (``None``).
  Two checks: its ``event_id`` is in the user's recent ids (a producer sent it twice), or its
  ``position`` (source slot, offset) is at or before the last offset applied from that source
  (Kafka redelivered it after a crash: at-least-once commits offsets after the state is written);
- several events of one user in a batch are applied in order: each user's run of events is stepped
  in one call of the bundle's runs graph (``Bundle.run``), whose outputs equal stepping the events
  one at a time bit for bit (the export's gate).

    out = process(bundle, [table.get(u) for u in users], events)  # out.states, out.recs, out.skipped
    state, rec = step_one(bundle, table.get(user), event)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamrec.export.contract import windows_of
from streamrec.export.runtime import Bundle, StepResult
from streamrec.model.events import Interaction
from streamrec.model.gaps import gap_bucket
from streamrec.model.vocab import OOV
from streamrec.streams.state import RECENT_IDS, SOURCES, UserState, event_id_hash, remember

#: Where an event came from: (source slot (0 clicks, 1 browses), offset in its partition).
Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The top-k list after one event: item ids (strings), best first, and their scores."""

    user_id: str
    items: tuple[str, ...]
    scores: tuple[float, ...]
    event_ts: int


def initial_state(bundle: Bundle) -> UserState:
    """The state of a user before any event: the model's initial h and c, empty windows."""
    h, c = bundle.init_state(1)
    return UserState(h=h[:, 0, :], c=c[:, 0, :], last_ts=0, count=0, m=bundle.manifest.m)


def top_k(items: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float], seen: Sequence[int],
          k: int) -> tuple[list[int], list[float]]:
    """The first ``k`` entries of a best-first list that are not in ``seen``."""
    skip = set(seen)
    items = items.tolist() if isinstance(items, np.ndarray) else items
    scores = scores.tolist() if isinstance(scores, np.ndarray) else scores
    out_items: list[int] = []
    out_scores: list[float] = []
    if k <= 0:
        return out_items, out_scores
    for item, score in zip(items, scores):  # stops at k: ~k + a few of the k+m entries are looked at
        if item not in skip:
            out_items.append(item)
            out_scores.append(score)
            if len(out_items) == k:
                break
    return out_items, out_scores


#: Scored events of one ONNX call at most: a batch with more is stepped in several calls, each
#: holding whole users (``run_rows``). Wider calls are slower per event on large catalogs (the [rows x
#: items] score matrix leaves the cache: 40 us per event at 64 rows, 50 at 256, 59 at 1,024 for 12,102
#: items, measured with benchmarks/onnx_step.py's loop), so the bound shrinks with the catalog: a
#: score matrix of about 1M floats (4 MB), between 64 and 256 rows.
RUN_ROWS, MIN_RUN_ROWS, SCORE_FLOATS = 256, 64, 1 << 20


#: Entries of a top list read past k before the whole list is (see ``process``).
LIST_SLACK = 16


def run_rows(n_items: int) -> int:
    """Events per ONNX call at most for a catalog of ``n_items``: 256 for ml-100k, 86 for Beauty."""
    return max(MIN_RUN_ROWS, min(RUN_ROWS, SCORE_FLOATS // max(n_items, 1)))


def _groups(lengths: Sequence[int], rows: int) -> list[range]:
    """Consecutive users cut into groups of at most ``rows`` events (a user with more is a group)."""
    out, start, total = [], 0, 0
    for b, n in enumerate(lengths):
        if total and total + n > rows:
            out.append(range(start, b))
            start, total = b, 0
        total += n
    if lengths:
        out.append(range(start, len(lengths)))
    return out


#: Why an event is not applied again (``Stepped.skipped``): a producer sent its event id twice,
#: or Kafka delivered its offset again (after a crash, before the offset commit).
DUPLICATE, REDELIVERED = "duplicate", "redelivered"


class Stepped(NamedTuple):
    """What ``process`` returns for a batch."""

    states: dict[str, UserState]  # user id -> state after the user's last applied event in the batch
    recs: list[Recommendation | None]  # per event; None: applied before (see ``skipped``)
    skipped: list[str | None]  # per event: ``DUPLICATE`` / ``REDELIVERED``, or None when applied


class _Track:
    """A user's serving rules carried through a batch (everything of the state but h and c)."""

    __slots__ = ("fresh", "last_ts", "count", "seen", "recent", "offsets")

    def __init__(self, state: UserState | None):
        self.fresh = state is None  # no state yet: the first event starts from the model's initial state
        if state is None:
            self.last_ts, self.count, self.seen, self.recent, self.offsets = 0, 0, (), (), (-1,) * SOURCES
        else:
            self.last_ts, self.count, self.seen = state.last_ts, state.count, state.seen
            self.recent, self.offsets = state.recent_ids, state.offsets


def process(bundle: Bundle, states: Sequence[UserState | None], events: Sequence[Interaction], *,
            event_ids: Sequence[str | None] | None = None, positions: Sequence[Position | None] | None = None,
            k: int | None = None) -> Stepped:
    """Apply ``events`` in order; ``states[i]`` is the stored state of ``events[i].user_id`` (or None).

    A user appearing several times is read from the state given with their first event (the
    later entries are ignored: within a batch the user's state is carried from event to event).
    First the serving rules run per event in Python (redeliveries, gaps, seen windows); then every
    user's run of events is stepped at once (``Bundle.run``: one ONNX call for up to ``run_rows``
    events, whole users per call). Returns each stepped user's state after their last event, each
    event's recommendation and why an event was skipped. Inputs are never modified.
    """
    if len(states) != len(events):
        raise ValueError(f"{len(states)} states for {len(events)} events")
    ids = list(event_ids) if event_ids is not None else [None] * len(events)
    where = list(positions) if positions is not None else [None] * len(events)
    if len(ids) != len(events) or len(where) != len(events):
        raise ValueError("event_ids and positions must have one entry per event")
    if any(p is not None and not 0 <= p[0] < SOURCES for p in where):
        raise ValueError(f"a position's source slot must be in [0, {SOURCES})")
    k = bundle.k if k is None else k
    m, n_buckets = bundle.manifest.m, bundle.manifest.n_gap_buckets
    given: dict[str, UserState | None] = {}
    for state, event in zip(states, events):
        given.setdefault(event.user_id, state)
    n = len(events)
    recs: list[Recommendation | None] = [None] * n
    skipped: list[str | None] = [None] * n
    items_all = bundle.items.indices(e.item_id for e in events)
    item_of = items_all.tolist()
    hashes = [None if x is None else event_id_hash(x) for x in ids]

    # 1. The rules, event by event, without the model: which events apply, their gaps and seen windows.
    track: dict[str, _Track] = {}
    runs: dict[str, list[int]] = {}
    gaps, seens = [0] * n, [()] * n
    for i, e in enumerate(events):
        tr = track.get(e.user_id)
        if tr is None:
            tr = track[e.user_id] = _Track(given[e.user_id])
        if not tr.fresh:
            if hashes[i] is not None and hashes[i] in tr.recent:
                skipped[i] = DUPLICATE
                continue
            if where[i] is not None and where[i][1] <= tr.offsets[where[i][0]]:
                skipped[i] = REDELIVERED
                continue
        gaps[i] = gap_bucket(None if tr.fresh else e.ts - tr.last_ts, n_buckets)
        if item_of[i] > OOV:  # unknown items never enter the seen window
            tr.seen = remember(tr.seen, item_of[i], m)
        seens[i] = tr.seen
        if hashes[i] is not None:
            tr.recent = remember(tr.recent, hashes[i], RECENT_IDS)
        if where[i] is not None:
            slot, offset = where[i]
            tr.offsets = tr.offsets[:slot] + (max(tr.offsets[slot], offset),) + tr.offsets[slot + 1:]
        tr.last_ts, tr.count, tr.fresh = max(tr.last_ts, e.ts), tr.count + 1, False
        runs.setdefault(e.user_id, []).append(i)

    # 2. Each group of users' runs in one call; 3. top-k per event, each user's state after its last.
    users = list(runs)
    new_states: dict[str, UserState] = {}
    blank = initial_state(bundle)
    types_all = bundle.types.indices(e.event_type for e in events)
    tokens = bundle.items.tokens
    for group in _groups([len(runs[u]) for u in users], run_rows(bundle.manifest.n_items)):
        members = [users[b] for b in group]
        applied = sorted(i for u in members for i in runs[u])  # batch order
        out = _run(bundle, members, runs, applied, items_all, types_all, gaps, seens, given, blank)
        # the first k + LIST_SLACK entries as Python lists (a row whose seen items crowd more out of them
        # is read again whole): converting all k + m entries of every row cost more than the filtering
        width = min(out.top_items.shape[1], k + LIST_SLACK)
        top_rows, score_rows = out.top_items[:, :width].tolist(), out.top_scores[:, :width].tolist()
        last_top: dict[str, tuple[list[int], list[float]]] = {}
        for j, i in enumerate(applied):
            e = events[i]
            top, scores = top_k(top_rows[j], score_rows[j], seens[i], k)
            if len(top) < k and width < out.top_items.shape[1]:
                top, scores = top_k(out.top_items[j], out.top_scores[j], seens[i], k)
            last_top[e.user_id] = (top, scores)
            recs[i] = Recommendation(e.user_id, tokens(top), tuple(scores), e.ts)
        h_new, c_new = out.h.transpose(1, 0, 2).copy(), out.c.transpose(1, 0, 2).copy()  # [B, L, H]
        for b, u in enumerate(members):
            tr, (top, scores) = track[u], last_top[u]
            new_states[u] = UserState.trusted(h=h_new[b], c=c_new[b], last_ts=tr.last_ts, count=tr.count, m=m,
                                              seen=tr.seen, top_items=tuple(top),
                                              top_scores=np.array(scores, np.float32), recent_ids=tr.recent,
                                              offsets=tr.offsets)
    return Stepped(new_states, recs, skipped)


def _run(bundle: Bundle, members: list[str], runs: dict[str, list[int]], applied: list[int], items_all: np.ndarray,
         types_all: np.ndarray, gaps: list[int], seens: list[tuple[int, ...]], given: dict[str, UserState | None],
         blank: UserState) -> StepResult:
    """One ``Bundle.run`` call for ``members``' runs: [B, T] matrices, scored rows in batch order."""
    lengths = [len(runs[u]) for u in members]
    B, T = len(members), max(lengths)
    flat = np.empty(len(items_all), np.int64)
    for b, u in enumerate(members):
        flat[runs[u]] = np.arange(b * T, b * T + len(runs[u]))
    rows = flat[applied]
    mats = np.zeros((3, B * T), np.int64)
    mats[0, rows] = items_all[applied]
    mats[1, rows] = types_all[applied]
    mats[2, rows] = np.asarray(gaps)[applied]
    starts = [given[u] or blank for u in members]
    h = np.stack([s.h for s in starts], axis=1)
    c = np.stack([s.c for s in starts], axis=1)
    a = bundle.manifest.attention
    window = windows_of([seens[i] for i in applied], a) if a else None  # attention bundles only
    return bundle.run(mats[0].reshape(B, T), mats[1].reshape(B, T), mats[2].reshape(B, T), h, c,
                     np.array(lengths, np.int32), rows, window=window)


def step_one(bundle: Bundle, state: UserState | None, event: Interaction, *, event_id: str | None = None,
             position: Position | None = None, k: int | None = None) -> tuple[UserState | None, Recommendation | None]:
    """One event: the user's state after it (the given one if it was applied before) and its recommendation."""
    out = process(bundle, [state], [event], event_ids=[event_id], positions=[position], k=k)
    return out.states.get(event.user_id, state), out.recs[0]
