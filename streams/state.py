"""``UserState``: what the worker keeps per user, and its compact byte form (the table's value).

A state holds the LSTM's hidden and cell state after the user's last event, the newest event
time, the number of events, the seen-items window (the last ``m`` distinct item indices, so
recommendations skip what the user just saw), the latest recommendation list (what
``GET /recommendations/{user}`` returns), and what makes replays idempotent: the input offset of
the last event applied from each input topic (an at-least-once redelivery after a crash) and a
bounded set of recent event-id hashes (a producer sending an event twice).

Bytes (little-endian; never pickle)::

    header  50 bytes  struct "<4sBBHHHHHHqQqq":
            magic b"SRUS", format version (1), flags (0), layers L, hidden H, window m,
            n_seen, n_top, n_ids, last_ts (int64 epoch ms), count (uint64),
            offsets (2 x int64: last applied offset in the clicks / browses topic, -1 for none)
    h       L*H float32
    c       L*H float32
    seen    n_seen int32      item indices, oldest first (n_seen <= m)
    top     n_top int32       latest recommendation, item indices, best first
    scores  n_top float32
    ids     n_ids uint64      blake2b-64 of recent event ids, oldest first (n_ids <= RECENT_IDS)

Size: 50 + 8*L*H + 4*n_seen + 8*n_top + 8*n_ids bytes; with L=1, H=24, m=20, k=10 and no event
ids that is 402 bytes, with a full id window 530; with L=1, H=128: 1,234 (1,362).

    blob = state.pack();  same = UserState.unpack(blob, layers=L, hidden=H)
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np

from streamrec.export.contract import remember  # the serving contract's window rule (re-exported)

MAGIC = b"SRUS"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sBBHHHHHHqQqq")
#: Input topics whose offsets a state remembers (slot 0: clicks, 1: browses).
SOURCES = 2
#: How many recent event ids a state remembers (redeliveries further back are applied again).
RECENT_IDS = 16

_F32, _I32, _U64 = np.dtype("<f4"), np.dtype("<i4"), np.dtype("<u8")


class StateError(ValueError):
    """Bytes that are not a state of this format, or a state of another model's shape."""


def event_id_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id (what the state stores instead of the id itself)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest(), "little")


def last_ts_of(data: bytes) -> int:
    """The ``last_ts`` of a packed state, from its header alone (what the expiry sweep reads)."""
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise StateError("not a user state")
    return int(HEADER.unpack_from(data)[9])


@dataclass(frozen=True, eq=False)
class UserState:
    """One user's state. Immutable: the worker builds a new one per event and assigns it back."""

    h: np.ndarray  # [L, H] float32
    c: np.ndarray  # [L, H] float32
    last_ts: int  # newest event time seen (epoch ms)
    count: int  # events applied
    m: int  # seen-window capacity
    seen: tuple[int, ...] = ()  # last m distinct item indices, oldest first
    top_items: tuple[int, ...] = ()  # latest recommendation (item indices, best first)
    top_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    recent_ids: tuple[int, ...] = ()  # event_id_hash of recent event ids, oldest first
    offsets: tuple[int, ...] = (-1,) * SOURCES  # last applied input offset per source slot

    def __post_init__(self) -> None:
        h, c = np.asarray(self.h, np.float32), np.asarray(self.c, np.float32)
        if h.ndim != 2 or h.shape != c.shape:
            raise StateError(f"h and c must both be [layers, hidden], got {h.shape} and {c.shape}")
        scores = np.asarray(self.top_scores, np.float32).reshape(-1)
        if len(scores) != len(self.top_items):
            raise StateError(f"{len(self.top_items)} top items but {len(scores)} scores")
        if len(self.offsets) != SOURCES:
            raise StateError(f"{len(self.offsets)} source offsets, expected {SOURCES}")
        if len(self.seen) > self.m or len(self.recent_ids) > RECENT_IDS:
            raise StateError(f"seen window {len(self.seen)} > m={self.m} or {len(self.recent_ids)} ids > {RECENT_IDS}")
        for name, arr in (("h", h), ("c", c), ("top_scores", scores)):
            arr.setflags(write=False)  # values of a table are never mutated in place
            object.__setattr__(self, name, arr)

    @classmethod
    def trusted(cls, h: np.ndarray, c: np.ndarray, last_ts: int, count: int, m: int, seen: tuple[int, ...],
                top_items: tuple[int, ...], top_scores: np.ndarray, recent_ids: tuple[int, ...],
                offsets: tuple[int, ...]) -> UserState:
        """A state from parts already in shape (float32 [L, H] arrays owned by the state, a float32 score
        per top item, windows within bounds): the hot path's constructor, without the checks."""
        self = object.__new__(cls)
        self.__dict__.update(h=h, c=c, last_ts=last_ts, count=count, m=m, seen=seen, top_items=top_items,
                             top_scores=top_scores, recent_ids=recent_ids, offsets=offsets)
        h.setflags(write=False)
        c.setflags(write=False)
        top_scores.setflags(write=False)
        return self

    @property
    def layers(self) -> int:
        return int(self.h.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.h.shape[1])

    def pack(self) -> bytes:
        """The compact byte form (see the module docstring)."""
        header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, self.layers, self.hidden, self.m, len(self.seen),
                             len(self.top_items), len(self.recent_ids), self.last_ts, self.count,
                             *self.offsets)
        return b"".join((header, self.h.astype(_F32).tobytes(), self.c.astype(_F32).tobytes(),
                         np.asarray(self.seen, _I32).tobytes(), np.asarray(self.top_items, _I32).tobytes(),
                         self.top_scores.astype(_F32).tobytes(), np.asarray(self.recent_ids, _U64).tobytes()))

    @classmethod
    def unpack(cls, data: bytes, layers: int | None = None, hidden: int | None = None) -> UserState:
        """Inverse of ``pack``; ``layers``/``hidden`` (the model's) are checked when given."""
        if len(data) < HEADER.size:
            raise StateError(f"state is {len(data)} bytes, shorter than its {HEADER.size}-byte header")
        magic, version, _flags, n_layers, n_hidden, m, n_seen, n_top, n_ids, last_ts, count, *offsets = \
            HEADER.unpack_from(data)
        if magic != MAGIC:
            raise StateError(f"not a user state (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise StateError(f"state format version {version} (this code reads {FORMAT_VERSION})")
        if (layers is not None and n_layers != layers) or (hidden is not None and n_hidden != hidden):
            raise StateError(f"state of a {n_layers}x{n_hidden} model, expected {layers}x{hidden}")
        sizes = [(_F32, n_layers * n_hidden), (_F32, n_layers * n_hidden), (_I32, n_seen), (_I32, n_top),
                 (_F32, n_top), (_U64, n_ids)]
        expected = HEADER.size + sum(dt.itemsize * n for dt, n in sizes)
        if len(data) != expected:
            raise StateError(f"state is {len(data)} bytes, its header says {expected}")
        if n_seen > m or n_ids > RECENT_IDS:
            raise StateError(f"seen window {n_seen} > m={m} or {n_ids} ids > {RECENT_IDS}")
        parts, offset = [], HEADER.size
        for dt, n in sizes:
            parts.append(np.frombuffer(data, dt, n, offset).copy())
            offset += dt.itemsize * n
        h, c, seen, top, scores, ids = parts
        return cls.trusted(h=h.reshape(n_layers, n_hidden), c=c.reshape(n_layers, n_hidden), last_ts=last_ts,
                           count=count, m=m, seen=tuple(seen.tolist()), top_items=tuple(top.tolist()),
                           top_scores=scores, recent_ids=tuple(ids.tolist()), offsets=tuple(offsets))
