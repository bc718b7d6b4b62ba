"""streams.codec: every rejection reason, the defaults, and the output / dead-letter encodings."""
from __future__ import annotations

import json

import pytest

from streamrec.model.events import Interaction
from streamrec.streams import codec
from streamrec.streams.codec import Parsed, Rejected, Source, parse_event

TYPES = {"click", "browse"}
TS = 1_700_000_000_000


def _value(**fields: object) -> bytes:
    base: dict[str, object] = {"user_id": "u1", "item_id": "i7", "ts": TS}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_valid_event_takes_its_type_from_the_topic_by_default() -> None:
    got = parse_event(b"u1", _value(), "click", TYPES)
    assert got == Parsed(Interaction("u1", "i7", "click", TS), None)
    got = parse_event(b"u1", _value(event_type="browse", event_id="e-1", extra={"ignored": 1}), "click", TYPES)
    assert got == Parsed(Interaction("u1", "i7", "browse", TS), "e-1")


def test_unicode_ids_and_bounds_are_accepted() -> None:
    uid = "Zoë-ユーザー"
    got = parse_event(uid.encode(), _value(user_id=uid, item_id="x" * codec.MAX_ID_LENGTH, ts=codec.MAX_TS_MS),
                      "browse", TYPES)
    assert isinstance(got, Parsed) and got.event.user_id == uid and got.event.ts == codec.MAX_TS_MS
    assert isinstance(parse_event(b"u1", _value(ts=codec.MIN_TS_MS), "click", TYPES), Parsed)


@pytest.mark.parametrize("key, value, reason", [
    (b"u1", b"{not json", codec.INVALID_JSON),
    (b"u1", None, codec.INVALID_JSON),
    (b"u1", b"[" * 5000 + b"]" * 5000, codec.TOO_LARGE),
    (b"u1", b"[" * 3000 + b"]" * 3000, codec.INVALID_JSON),  # nested too deeply for the parser
    (b"u1", b"\xff\xfe{}", codec.NOT_UTF8),
    (b"\xff", _value(), codec.NOT_UTF8),
    (None, _value(), codec.MISSING_KEY),
    (b"u1", b'["u1", "i7"]', codec.NOT_AN_OBJECT),
    (b"u1", b"42", codec.NOT_AN_OBJECT),
    (b"u1", _value(item_id=...), codec.MISSING_FIELD),
    (b"u1", _value(user_id=...), codec.MISSING_FIELD),
    (b"u1", _value(ts=...), codec.MISSING_FIELD),
    (b"u1", _value(item_id=None), codec.MISSING_FIELD),
    (b"u1", _value(item_id=7), codec.WRONG_TYPE),
    (b"u1", _value(ts="1700000000000"), codec.WRONG_TYPE),
    (b"u1", _value(ts=1.7e12), codec.WRONG_TYPE),
    (b"u1", _value(ts=True), codec.WRONG_TYPE),
    (b"u1", _value(event_type=3), codec.WRONG_TYPE),
    (b"u1", _value(event_id=["e"]), codec.WRONG_TYPE),
    (b"u1", _value(item_id=""), codec.INVALID_ID),
    (b"", _value(user_id=""), codec.INVALID_ID),
    (b"u1", _value(item_id="x" * (codec.MAX_ID_LENGTH + 1)), codec.INVALID_ID),
    (b"u1", _value(item_id="i\x007"), codec.INVALID_ID),
    (b"u1", _value(event_id=""), codec.INVALID_ID),
    (b"u1", _value(event_type="purchase"), codec.UNKNOWN_EVENT_TYPE),
    (b"u1", _value(ts=0), codec.BAD_TS),
    (b"u1", _value(ts=-5), codec.BAD_TS),
    (b"u1", _value(ts=1_700_000_000), codec.BAD_TS),  # seconds, not milliseconds
    (b"u1", _value(ts=1_700_000_000_000_000), codec.BAD_TS),  # microseconds
    (b"u1", _value(ts=codec.MAX_TS_MS + 1), codec.BAD_TS),  # after 2100
    (b"u2", _value(), codec.KEY_MISMATCH),
])
def test_malformed_messages_are_rejected_with_their_reason(key: bytes | None, value: bytes | None,
                                                           reason: str) -> None:
    got = parse_event(key, value, "click", TYPES)
    assert isinstance(got, Rejected), got
    assert got.reason == reason, got.message
    assert got.reason in codec.REASONS and got.message


def test_unknown_event_type_message_names_the_known_ones() -> None:
    got = parse_event(b"u1", _value(), "click", {"browse"})  # the topic's default type is unknown too
    assert isinstance(got, Rejected) and got.reason == codec.UNKNOWN_EVENT_TYPE
    assert "'click'" in got.message and "['browse']" in got.message


def test_recommendation_encoding_is_the_documented_json() -> None:
    raw = codec.encode_recommendation("u1", ["i3", "é"], [1.5, 0.25], "v1", Source("clicks", 3, 41), TS, TS + 9)
    assert json.loads(raw) == {"user_id": "u1", "items": ["i3", "é"], "scores": [1.5, 0.25], "model_version": "v1",
                               "source": {"topic": "clicks", "partition": 3, "offset": 41}, "event_ts": TS,
                               "emitted_ts": TS + 9}


@pytest.mark.parametrize("key, value", [(b"u1", b"\xff\x00 not utf-8"), (None, None), (b"k", b"{}")])
def test_dead_letters_keep_the_original_bytes(key: bytes | None, value: bytes | None) -> None:
    why = Rejected(codec.NOT_UTF8, "explained")
    out = codec.decode_dead_letter(codec.encode_dead_letter(key, value, Source("browses", 1, 7), why, TS))
    assert (out["key"], out["value"]) == (key, value)
    assert out["reason"] == codec.NOT_UTF8 and out["message"] == "explained" and out["rejected_ts"] == TS
    assert out["source"] == {"topic": "browses", "partition": 1, "offset": 7}


def test_id_problem() -> None:
    assert codec.id_problem("u-1") is None
    assert codec.id_problem("") == "is empty"
    assert "control" in (codec.id_problem("a\nb") or "")
    assert "max" in (codec.id_problem("u" * 300) or "")


def test_a_dead_letter_of_a_huge_message_keeps_a_prefix_its_size_and_hash() -> None:
    import hashlib

    value = b'{"item_id": "' + b"x" * 1_000_000 + b'"}'
    raw = codec.encode_dead_letter(b"u1", value, Source("clicks", 0, 3), Rejected(codec.TOO_LARGE, "big"), TS)
    assert len(raw) < 100_000  # fits Kafka's 1 MB default message size with room to spare
    out = codec.decode_dead_letter(raw)
    assert out["truncated"] is True and out["value_bytes"] == len(value) and out["key_bytes"] == 2
    assert out["value"] == value[: codec.MAX_DEAD_LETTER_COPY] and out["key"] == b"u1"
    assert out["value_sha256"] == hashlib.sha256(value).hexdigest()
    small = codec.decode_dead_letter(codec.encode_dead_letter(b"u1", b"{}", Source("c", 0, 1),
                                                              Rejected(codec.INVALID_JSON, "x"), TS))
    assert small["truncated"] is False and small["value_sha256"] is None and small["value_bytes"] == 2
