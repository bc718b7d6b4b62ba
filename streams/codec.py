"""The worker's wire formats: parse and validate input events, encode recommendations and dead letters.

Pure functions over bytes (no Kafka, no Faust), so every rule is tested without a broker.

Input (topics ``clicks`` and ``browses``; key = the user id in UTF-8)::

    {"user_id": str, "item_id": str, "ts": int (epoch ms),
     "event_type": str (optional; defaults to the topic's kind: click / browse),
     "event_id": str (optional; used to drop redeliveries of the same event)}

Unknown fields are ignored. ``parse_event`` returns a ``Parsed`` or a ``Rejected(reason, message)``;
the reason codes (``REASONS``) are stable and machine-readable, the message says what to fix.

Output (topic ``recommendations``; key = user id)::

    {"user_id", "items": [item_id, ...], "scores": [float, ...], "model_version",
     "source": {"topic", "partition", "offset"}, "event_ts", "emitted_ts"}

Dead letter (topic ``events.dlq``; key = the original key)::

    {"reason", "message", "source": {"topic", "partition", "offset"},
     "key_b64": str | null, "value_b64": str | null, "rejected_ts",
     "key_bytes": int | null, "value_bytes": int | null, "truncated": bool, "value_sha256": str | null}

with the original key and value bytes base64-encoded, so even a non-UTF-8 message survives intact.
A key or value longer than ``MAX_DEAD_LETTER_COPY`` bytes (only ``too_large`` messages) keeps its
first ``MAX_DEAD_LETTER_COPY`` bytes, with ``truncated`` true, the original lengths and the
value's sha256: a dead letter must fit in Kafka's message size limit (1 MB by default) even when
the rejected message nearly filled it; the original stays in the input topic at ``source``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import unicodedata

import orjson
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from streamrec.model.events import Interaction

#: Largest accepted message (key + value bytes). A well-formed event is ~150 bytes; anything near this is abuse.
MAX_MESSAGE_BYTES = 8 * 1024
#: Longest accepted user, item or event id, in characters.
MAX_ID_LENGTH = 256
#: Timestamps are epoch milliseconds in [MIN_TS_MS, MAX_TS_MS]: from 1973-03-03 to 2100-01-01 UTC.
#: The usual producer bug, a time in seconds (~1.7e9) or microseconds (~1.7e15), lands outside;
#: historical data sets (1990s and later) and synthetic ones (from 2001) land inside.
#: The most bytes of a rejected key or value a dead letter copies (the rest is cut, see above).
MAX_DEAD_LETTER_COPY = 64 * 1024
MIN_TS_MS = 100_000_000_000
MAX_TS_MS = 4_102_444_800_000

#: Reason codes of dead letters (stable; dashboards count by them).
TOO_LARGE = "too_large"
MISSING_KEY = "missing_key"
NOT_UTF8 = "not_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_ID = "invalid_id"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
BAD_TS = "bad_ts"
KEY_MISMATCH = "key_mismatch"
WRONG_PARTITION = "wrong_partition"  # the worker's rule, not parse_event's: see streams/partitioner.py
PROCESSING_ERROR = "processing_error"  # raised by the worker itself, not by parse_event
REASONS = (TOO_LARGE, MISSING_KEY, NOT_UTF8, INVALID_JSON, NOT_AN_OBJECT, MISSING_FIELD, WRONG_TYPE,
           INVALID_ID, UNKNOWN_EVENT_TYPE, BAD_TS, KEY_MISMATCH, WRONG_PARTITION, PROCESSING_ERROR)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid input event."""

    event: Interaction
    event_id: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message cannot be processed: a ``reason`` code and a human ``message``."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int


def id_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable id (empty, too long, control characters), or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long (max {MAX_ID_LENGTH})"
    if value.isascii() and value.isprintable():  # the usual id: no control character (Cc) or surrogate (Cs)
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        return "contains control characters"
    return None


def _id_field(data: dict[str, object], name: str, required: bool) -> str | Rejected | None:
    value = data.get(name)
    if value is None:
        return Rejected(MISSING_FIELD, f"field {name!r} is missing") if required else None
    if not isinstance(value, str):
        return Rejected(WRONG_TYPE, f"field {name!r} must be a string, got {type(value).__name__}")
    problem = id_problem(value)
    return Rejected(INVALID_ID, f"field {name!r} {problem}") if problem else value


def parse_event(key: bytes | None, value: bytes | None, default_type: str,
                event_types: Collection[str]) -> Parsed | Rejected:
    """Validate one message of an input topic.

    ``default_type`` is the topic's kind (click / browse), used when the value has no
    ``event_type``; ``event_types`` are the types the model knows (the bundle's).
    """
    if value is None:
        return Rejected(INVALID_JSON, "message has no value (a tombstone?)")
    size = len(value) + len(key or b"")
    if size > MAX_MESSAGE_BYTES:
        return Rejected(TOO_LARGE, f"key and value are {size} bytes (max {MAX_MESSAGE_BYTES})")
    if key is None:
        return Rejected(MISSING_KEY, "message has no key: producers must key events by user_id "
                                     "(the per-user state lives in the key's partition)")
    try:
        key_text = key.decode("utf-8")
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(NOT_UTF8, f"key or value is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejected(INVALID_JSON, f"value is not JSON: {exc}")
    if not isinstance(data, dict):
        return Rejected(NOT_AN_OBJECT, f"value must be a JSON object, got {type(data).__name__}")
    fields: dict[str, str | None] = {}
    for name, required in (("user_id", True), ("item_id", True), ("event_type", False), ("event_id", False)):
        got = _id_field(data, name, required)
        if isinstance(got, Rejected):
            return got
        fields[name] = got
    ts = data.get("ts")
    if ts is None:
        return Rejected(MISSING_FIELD, "field 'ts' is missing (epoch milliseconds)")
    if isinstance(ts, bool) or not isinstance(ts, int):
        return Rejected(WRONG_TYPE, f"field 'ts' must be an integer (epoch milliseconds), got {type(ts).__name__}")
    if not MIN_TS_MS <= ts <= MAX_TS_MS:
        return Rejected(BAD_TS, f"ts={ts} is not epoch milliseconds between 1973 and 2100 "
                                f"[{MIN_TS_MS}, {MAX_TS_MS}] (seconds or microseconds by mistake?)")
    event_type = fields["event_type"] or default_type
    if event_type not in event_types:
        return Rejected(UNKNOWN_EVENT_TYPE, f"event type {event_type!r} is unknown to the model "
                                            f"(it knows {sorted(event_types)})")
    user_id = fields["user_id"]
    assert user_id is not None and fields["item_id"] is not None
    if key_text != user_id:
        return Rejected(KEY_MISMATCH, f"key {key_text[:80]!r} differs from user_id {user_id[:80]!r}")
    return Parsed(Interaction(user_id, fields["item_id"], event_type, ts), fields["event_id"])


class HasSource(Protocol):
    """Where a message came from: a ``Source``, or the input record itself."""

    topic: str
    partition: int
    offset: int


def encode_recommendation(user_id: str, items: Sequence[str], scores: Sequence[float], model_version: str,
                          source: HasSource, event_ts: int, emitted_ts: int) -> bytes:
    """The output message's value (compact JSON, UTF-8; floats as the shortest repr that reads back equal)."""
    return orjson.dumps({"user_id": user_id, "items": list(items), "scores": list(scores),
                         "model_version": model_version, "source": {"topic": source.topic, "partition": source.partition,
                                                                    "offset": source.offset},
                         "event_ts": event_ts, "emitted_ts": emitted_ts})


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data[:MAX_DEAD_LETTER_COPY]).decode("ascii")


def encode_dead_letter(key: bytes | None, value: bytes | None, source: HasSource, rejected: Rejected,
                       rejected_ts: int) -> bytes:
    """The dead-letter message's value: reason, message, source and the original bytes (base64; at
    most ``MAX_DEAD_LETTER_COPY`` of each, see the module docstring)."""
    truncated = any(d is not None and len(d) > MAX_DEAD_LETTER_COPY for d in (key, value))
    return orjson.dumps({"reason": rejected.reason, "message": rejected.message,
                         "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
                       "key_b64": _b64(key), "value_b64": _b64(value), "rejected_ts": rejected_ts,
                       "key_bytes": None if key is None else len(key),
                       "value_bytes": None if value is None else len(value), "truncated": truncated,
                       "value_sha256": hashlib.sha256(value).hexdigest() if truncated and value is not None else None})


def decode_dead_letter(data: bytes) -> dict[str, object]:
    """Inverse of ``encode_dead_letter`` (``key``/``value`` back as bytes); for tools and tests."""
    out = json.loads(data)
    out["key"] = None if out["key_b64"] is None else base64.b64decode(out["key_b64"])
    out["value"] = None if out["value_b64"] is None else base64.b64decode(out["value_b64"])
    return out
