"""What a replay sends, and when (pure, no Kafka): topics, event ids, messages in timestamp
order, and the per-user causal order gate. ``streams/replay.py`` (the Kafka side) explains the
order rule in its docstring and re-exports these names.
"""
from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from streamrec.model.events import BROWSE, Interaction

ORDERS = ("strict", "none")
#: (topic, partition, offset) of a Kafka record.
Coords = tuple[str, int, int]


# ---- what goes where (pure) -----------------------------------------------------------------
@dataclass(frozen=True)
class Topics:
    """The worker's topics (defaults as in ``streams/config.py``)."""

    clicks: str = "clicks"
    browses: str = "browses"
    output: str = "recommendations"
    dlq: str = "events.dlq"

    def for_type(self, event_type: str) -> str:
        """Browses go to the browses topic; clicks and every other type to the clicks topic."""
        return self.browses if event_type == BROWSE else self.clicks

    @property
    def inputs(self) -> tuple[str, str]:
        return (self.clicks, self.browses)


def event_id(user_id: str, index: int) -> str:
    """The id of a user's ``index``-th event (0-based, in ``by_user`` order)."""
    return f"{user_id}:{index}"


def parse_event_id(value: str) -> tuple[str, int] | None:
    """Inverse of ``event_id`` (user ids may contain ':'); None for ids of another form."""
    user, sep, index = value.rpartition(":")
    if not sep or not user or not index.isdigit():
        return None
    return user, int(index)


@dataclass(frozen=True, slots=True)
class Message:
    """One event, ready to send: ``seq`` is its place in the replay (0, 1, ...)."""

    seq: int
    user_id: str
    topic: str
    key: bytes
    value: bytes
    event_id: str
    ts: int


def encode_event(e: Interaction, eid: str) -> bytes:
    """The input message's value (compact JSON, UTF-8); ``event_type`` always explicit."""
    return json.dumps({"user_id": e.user_id, "item_id": e.item_id, "ts": int(e.ts), "event_type": e.event_type,
                       "event_id": eid}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def timestamp_order(events: Sequence[Interaction]) -> list[tuple[Interaction, int]]:
    """Events sorted by time (stable), each with its index in its user's ``by_user`` history."""
    ordered = sorted(range(len(events)), key=lambda i: events[i].ts)
    seen: Counter[str] = Counter()
    out = []
    for i in ordered:
        e = events[i]
        out.append((e, seen[e.user_id]))
        seen[e.user_id] += 1
    return out


def plan(events: Sequence[Interaction], topics: Topics = Topics(), from_ts: float | None = None) -> list[Message]:
    """The messages of a replay, in sending order; ``from_ts`` keeps events with ``ts >= from_ts``
    (their ids still count every earlier event of the user)."""
    out: list[Message] = []
    for e, index in timestamp_order(events):
        if from_ts is not None and e.ts < from_ts:
            continue
        eid = event_id(e.user_id, index)
        out.append(Message(len(out), e.user_id, topics.for_type(e.event_type), e.user_id.encode("utf-8"),
                           encode_event(e, eid), eid, int(e.ts)))
    return out


# ---- per-user causal order across topics (pure) ---------------------------------------------
class Handle(Protocol):
    """A sent message: its coordinates once the broker acknowledged it."""

    def coords(self) -> Coords | None: ...

    @property
    def failed(self) -> bool: ...


class OrderGate:
    """Decides when each message may be sent (see the module docstring, "Order").

    ``offer(msg)`` says whether ``msg`` may go now; if so the caller sends it and calls
    ``sent(msg, handle)``. Held messages come back from ``releasable()`` once the user's previous
    message is processed (``processed(topic, partition, offset)`` advances the watermarks), in the
    user's order, one per user per call (send each and call ``sent`` before calling again).
    """

    def __init__(self, strict: bool = True, hold_timeout: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.strict, self.hold_timeout, self.clock = strict, hold_timeout, clock
        self.watermarks: dict[tuple[str, int], int] = {}  # input partition -> highest processed offset
        self._last: dict[str, tuple[str, Handle]] = {}  # user -> (topic, handle) of their last sent message
        self._held: dict[str, deque[Message]] = {}
        self._since: dict[str, float] = {}  # user -> since when their head message waits
        self.held = 0  # messages that could not go when offered
        self.timeouts = 0  # holds released by the timeout, not by the worker

    @property
    def waiting(self) -> int:
        """Messages held right now."""
        return sum(len(q) for q in self._held.values())

    def processed(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset > self.watermarks.get(key, -1):
            self.watermarks[key] = offset

    def is_processed(self, handle: Handle) -> bool:
        """Whether the worker is past ``handle``'s message (a failed send counts as done)."""
        if handle.failed:
            return True
        c = handle.coords()
        return c is not None and self.watermarks.get((c[0], c[1]), -1) >= c[2]

    def _blocked(self, msg: Message) -> bool:
        if not self.strict:
            return False
        last = self._last.get(msg.user_id)
        return last is not None and last[0] != msg.topic and not self.is_processed(last[1])

    def offer(self, msg: Message) -> bool:
        q = self._held.get(msg.user_id)
        if q is not None:  # the user's earlier messages wait: keep their order
            q.append(msg)
            self.held += 1
            return False
        if self._blocked(msg):
            self._held[msg.user_id] = deque([msg])
            self._since[msg.user_id] = self.clock()
            self.held += 1
            return False
        return True

    def sent(self, msg: Message, handle: Handle) -> None:
        self._last[msg.user_id] = (msg.topic, handle)

    def releasable(self) -> list[Message]:
        now = self.clock()
        out = []
        for user in list(self._held):
            q = self._held[user]
            if self._blocked(q[0]):
                if now - self._since[user] < self.hold_timeout:
                    continue
                self.timeouts += 1
            out.append(q.popleft())
            if q:
                self._since[user] = now
            else:
                del self._held[user], self._since[user]
        return out
