"""Live evaluation without a data set: the targets come from the input topics themselves.

``streamrec evaluate-live --since 2h --bundle B`` (no ``--data``) scores the worker on the traffic it
served, e.g. production events that no ``streamrec replay`` named: ``live_collect.collect`` reads the
input topics up to their ends at the start of the read (``upto_now``), and

- only the events at/after T have to be answered (``LiveLog.awaited``): a shadow warmed up with
  ``--warm-from`` publishes nothing for the events before its start;
- ``relabel`` turns every input event read (first copies; an event id repeated by its producer is
  dropped by the worker, and here) into an ``Interaction`` and names it as a replay would,
  ``<user>:<index in the user's time-sorted history read>``, so the usual matching applies;
- ``stream_split`` cuts those events at T = ``--since`` with the TEMPORAL-stream rule
  (``model/splits.py``): every event at or after T of a user with an event before T (in what the
  topics still hold) is a target, scored against the list the worker published for the user just
  before it.

When the topics hold every user's whole history (a replay of a log into fresh topics), the figures
equal the bundle evaluated offline over the same events with the same T. On production topics the
users' states also hold events older than the topics' retention: the figures are then the model's
true online ones, which no offline run reproduces. Pure: no Kafka.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from streamrec.model.events import Interaction, by_user
from streamrec.model.splits import Split, _prefix_before, _targets
from streamrec.streams.config import parse_since as config_parse_since
from streamrec.streams.live_eval import InputRecord, LiveLog
from streamrec.streams.replay import event_id


def parse_since(text: str, now_ms: int | None = None) -> int:
    """T in epoch ms for ``--since`` (``streams.config.parse_since``: a duration back from now such as
    ``2h``, an ISO 8601 time, epoch milliseconds); ``ValueError`` naming the flag otherwise."""
    return config_parse_since(text, int(time.time() * 1000) if now_ms is None else now_ms, "--since")


def relabel(log: LiveLog, kind_of: Callable[[str], str]) -> tuple[LiveLog, list[Interaction]]:
    """A log whose inputs are named ``<user>:<index>`` (index in the user's time-sorted history read,
    ties in produce order), with the same outputs and dead letters, and the events read in produce
    order. ``kind_of(topic)``: the event type of an input that has none (``click`` on the clicks topic)."""
    firsts = sorted(log.first_copies(), key=lambda c: (log.inputs[c].timestamp, c))
    events = []
    per_user: dict[str, list[tuple[int, InputRecord]]] = {}
    for c in firsts:
        r = log.inputs[c]
        events.append(Interaction(r.user_id, r.item_id, r.event_type or kind_of(c[0]), r.ts))
        per_user.setdefault(r.user_id, []).append((r.ts, r))
    out = LiveLog(awaited=log.awaited)
    for user, recs in per_user.items():
        recs.sort(key=lambda x: x[0])  # stable, as model.events.by_user
        for index, (_, r) in enumerate(recs):
            out.add_input(InputRecord(r.coords, r.timestamp, r.user_id, r.item_id, r.event_type, r.ts,
                                      event_id(user, index)))
    for outs in log.user_outputs.values():  # each user's first copies, in the order they were read
        for o in outs:
            out.add_output(o)
    for source, reason in log.rejected.items():
        out.add_dead_letter(source, reason)
    out.counts.update(log.counts)  # duplicates, duplicate inputs, unreadable records as read
    return out, events


def stream_split(events: list[Interaction], since_ms: float) -> Split:
    """TEMPORAL-stream at T = ``since_ms``: every event at/after T of a user with an event before T
    is a test target (no validation part: nothing is trained here)."""
    sequences = by_user(events)
    before = _prefix_before(sequences, since_ms)
    test = _targets(before, {u: len(seq) for u, seq in sequences.items()})
    return Split("temporal", sequences, before, dict(before), [], test, float(since_ms), None)
