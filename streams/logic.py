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
- several events of one user in a batch are applied in order (the batch is stepped in waves:
  wave w holds every user's w-th event).

    new_states, recs = process(bundle, [table.get(u) for u in users], events)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.export.contract import windows_of
from streamrec.export.runtime import Bundle
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


#: Rows of one ONNX call at most: a wave wider than this is stepped in several calls. Per event, the
#: step gets no faster beyond ~64 rows, and wider calls are slower on large catalogs (the
#: [rows x items] score matrix leaves the cache: 40 us per event at 64 rows, 50 at 256, 59 at 1,024 for
#: 12,102 items, measured with benchmarks/onnx_step.py's loop).
STEP_ROWS = 64


def _waves(events: Sequence[Interaction], rows: int = STEP_ROWS) -> list[list[int]]:
    """Indices of ``events`` grouped so that wave w holds each user's w-th event (in batch order), each
    wave cut into pieces of at most ``rows`` (distinct users: any cut keeps every user's order)."""
    seen: dict[str, int] = {}
    waves: list[list[int]] = []
    for i, e in enumerate(events):
        w = seen.get(e.user_id, 0)
        seen[e.user_id] = w + 1
        if w == len(waves):
            waves.append([])
        waves[w].append(i)
    return [wave[j:j + rows] for wave in waves for j in range(0, len(wave), rows)]


#: Why an event is not applied again (``already_applied``): a producer sent its event id twice,
#: or Kafka delivered its offset again (after a crash, before the offset commit).
DUPLICATE, REDELIVERED = "duplicate", "redelivered"


def already_applied(state: UserState | None, event_id: str | None, position: Position | None) -> str | None:
    """``DUPLICATE`` or ``REDELIVERED`` if the user's state already includes this event, else None."""
    return _applied(state, None if event_id is None else event_id_hash(event_id), position)


def _applied(state: UserState | None, id_hash: int | None, position: Position | None) -> str | None:
    """``already_applied`` with the event id's hash computed by the caller (once per event)."""
    if state is None:
        return None
    if id_hash is not None and id_hash in state.recent_ids:
        return DUPLICATE
    if position is not None and position[1] <= state.offsets[position[0]]:
        return REDELIVERED
    return None


def process(bundle: Bundle, states: Sequence[UserState | None], events: Sequence[Interaction], *,
            event_ids: Sequence[str | None] | None = None, positions: Sequence[Position | None] | None = None,
            k: int | None = None) -> tuple[list[UserState], list[Recommendation | None]]:
    """Apply ``events`` in order; ``states[i]`` is the stored state of ``events[i].user_id`` (or None).

    A user appearing several times is read from the state given with their first event (the
    later entries are ignored: within a batch the user's state is carried from event to event).
    Returns the user's state after each event and each event's recommendation (None for a
    redelivered event id). Inputs are never modified.
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
    m, n_buckets, window_size = bundle.manifest.m, bundle.manifest.n_gap_buckets, bundle.manifest.attention
    layers, hidden = bundle.manifest.layers, bundle.manifest.hidden
    current: dict[str, UserState | None] = {}
    for state, event in zip(states, events):
        current.setdefault(event.user_id, state)
    new_states: list[UserState | None] = [None] * len(events)
    recs: list[Recommendation | None] = [None] * len(events)
    blank = initial_state(bundle)

    # Per event, once for the batch: item and type indices, event-id hashes (the waves index into them).
    items_all = bundle.items.indices(e.item_id for e in events)
    types_all = bundle.types.indices(e.event_type for e in events)
    item_of = items_all.tolist()
    hashes = [None if x is None else event_id_hash(x) for x in ids]
    tokens = bundle.items.tokens
    for wave in _waves(events):
        active: list[int] = []
        starts: list[UserState] = []
        gaps: list[int] = []
        for i in wave:
            state = current[events[i].user_id]
            if state is None:
                active.append(i)
                starts.append(blank)
                gaps.append(gap_bucket(None, n_buckets))
            elif _applied(state, hashes[i], where[i]):
                new_states[i] = state  # applied before: nothing changes, nothing is emitted
            else:
                active.append(i)
                starts.append(state)
                gaps.append(gap_bucket(events[i].ts - state.last_ts, n_buckets))
        if not active:
            continue
        # the seen window after this event (unknown items never enter it): the step's attention window
        # (its newest entries) and the state's filter
        seens = [remember(s.seen, item_of[i], m) if item_of[i] > OOV else s.seen for i, s in zip(active, starts)]
        rows = len(active)
        if rows == 1:  # a lone user's event (bursts step one row at a time): views, no copies
            h, c = starts[0].h[:, None, :], starts[0].c[:, None, :]
        else:
            h = np.empty((layers, rows, hidden), np.float32)
            c = np.empty((layers, rows, hidden), np.float32)
            for j, s in enumerate(starts):
                h[:, j] = s.h
                c[:, j] = s.c
        window = {"window": windows_of(seens, window_size)} if window_size else {}  # attention bundles only
        out = bundle.step(items_all[active], types_all[active], np.array(gaps, dtype=np.int64), h, c, **window)
        top_rows, score_rows = out.top_items.tolist(), out.top_scores.tolist()
        h_new, c_new = out.h.transpose(1, 0, 2).copy(), out.c.transpose(1, 0, 2).copy()  # [B, L, H]
        for j, i in enumerate(active):
            s, e, seen = starts[j], events[i], seens[j]
            top, scores = top_k(top_rows[j], score_rows[j], seen, k)
            recent = s.recent_ids if hashes[i] is None else remember(s.recent_ids, hashes[i], RECENT_IDS)
            offsets = s.offsets
            if where[i] is not None:
                slot, offset = where[i]
                offsets = offsets[:slot] + (max(offsets[slot], offset),) + offsets[slot + 1:]
            new = UserState.trusted(h=h_new[j], c=c_new[j], last_ts=max(s.last_ts, e.ts), count=s.count + 1, m=m,
                                    seen=seen, top_items=tuple(top), top_scores=np.array(scores, np.float32),
                                    recent_ids=recent, offsets=offsets)
            current[e.user_id] = new_states[i] = new
            recs[i] = Recommendation(e.user_id, tokens(top), tuple(scores), e.ts)
    return new_states, recs  # type: ignore[return-value]  # every slot was filled above
