"""The message schemas (streams/schemas/*.schema.json): valid JSON Schemas, in agreement with
``codec.parse_event`` on the dead-letter corpus, and matching what a real worker writes to Kafka.

The input schema describes the JSON value only. The codec also applies rules about the key, the size
in bytes, the topic and how ``ts`` is written; corpus cases that fail only such a rule say so in
``beyond``, and the test checks that the schema really accepts them (an exclusion that is not needed
fails). A value that is not a JSON document at all (invalid UTF-8, not JSON, no value) has no
instance to validate: the schema side counts it as rejected.
"""
from __future__ import annotations

import base64
import copy
import json
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError
from kafka import KafkaProducer

from streamrec.export.runtime import Bundle
from streamrec.streams import codec
from streamrec.streams.codec import Parsed, Rejected, Source, parse_event
from tests.factories import small_events
from tests.streams.workers import Names, Reader, malformed, produce, source_of, start_worker

SCHEMAS = Path(codec.__file__).parent / "schemas"
FILES = {"input": "input-event.schema.json", "recommendation": "recommendation.schema.json",
         "dead_letter": "dead-letter.schema.json"}
TYPES = frozenset({"click", "browse"})  # the event types of the test bundle (small_events)
TS = 1_700_000_000_000


def load(kind: str) -> dict:
    return json.loads((SCHEMAS / FILES[kind]).read_text(encoding="utf-8"))


def input_validator(event_types: Collection[str]) -> Draft202012Validator:
    """The input schema narrowed to one bundle's event types (null: the topic's kind, judged apart)."""
    schema = copy.deepcopy(load("input"))
    schema["properties"]["event_type"]["enum"] = [*sorted(event_types), None]
    return Draft202012Validator(schema)


# ---- the corpus ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    key: bytes | None
    value: bytes | None
    reason: str | None  # the codec's verdict: None = accepted, else the dead-letter reason
    default: str = "click"  # the topic's kind
    beyond: str = ""  # why the input schema cannot judge this case (a rule not about the JSON value)
    other_reason: str = ""  # why the schema rejects it for another reason than the codec's


def _v(**fields: object) -> bytes:
    base: dict[str, object] = {"user_id": "u1", "item_id": "i7", "ts": TS}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


KEY_ONLY = "the key is not part of the value (missing_key, not_utf8 key, key_mismatch)"
SIZE = "a limit on key + value bytes (8,192), not on the JSON value"
INTEGRAL_FLOAT = "JSON Schema counts 1700000000000.0 as an integer; the worker wants an integer literal"
TOPIC = "the default event type is the topic's kind, which the value does not carry"
BIG_INT = "orjson reads integers beyond 64 bits as floats (wrong_type); the schema's maximum says bad_ts"

VALID = [
    Case("minimal", b"u1", _v(), None),
    Case("type, id and an unknown field", b"u1", _v(event_type="browse", event_id="e-1", extra={"x": 1}), None),
    Case("type from the browses topic", b"u1", _v(event_id="e-2"), None, default="browse"),
    Case("null optional fields count as absent", b"u1", _v(event_type=None, event_id=None), None),
    Case("unicode ids, longest id, latest ts", "Zoë-ユーザー".encode(),
         _v(user_id="Zoë-ユーザー", item_id="x" * codec.MAX_ID_LENGTH, ts=codec.MAX_TS_MS), None),
    Case("earliest ts", b"u1", _v(ts=codec.MIN_TS_MS), None),
    Case("256 characters outside the BMP", b"u1", _v(item_id="\U0001F600" * codec.MAX_ID_LENGTH), None),
    Case("format characters are no control characters", b"u1", _v(item_id="i\u2028\u200b7"), None),
    Case("a repeated field: the last one counts", b"u1",
         b'{"user_id": "u1", "item_id": "i7", "ts": 1, "ts": 1700000000000}', None),
]

REJECTED = [  # test_codec.py's malformed messages, then edge cases of the schema's own rules
    Case("not JSON", b"u1", b"{not json", codec.INVALID_JSON),
    Case("no value (tombstone)", b"u1", None, codec.INVALID_JSON),
    Case("too large and nested", b"u1", b"[" * 5000 + b"]" * 5000, codec.TOO_LARGE),
    Case("nested too deeply for the parser", b"u1", b"[" * 3000 + b"]" * 3000, codec.INVALID_JSON),
    Case("value not UTF-8", b"u1", b"\xff\xfe{}", codec.NOT_UTF8),
    Case("key not UTF-8", b"\xff", _v(), codec.NOT_UTF8, beyond=KEY_ONLY),
    Case("no key", None, _v(), codec.MISSING_KEY, beyond=KEY_ONLY),
    Case("an array", b"u1", b'["u1", "i7"]', codec.NOT_AN_OBJECT),
    Case("a number", b"u1", b"42", codec.NOT_AN_OBJECT),
    Case("no item_id", b"u1", _v(item_id=...), codec.MISSING_FIELD),
    Case("no user_id", b"u1", _v(user_id=...), codec.MISSING_FIELD),
    Case("no ts", b"u1", _v(ts=...), codec.MISSING_FIELD),
    Case("item_id null", b"u1", _v(item_id=None), codec.MISSING_FIELD),
    Case("item_id a number", b"u1", _v(item_id=7), codec.WRONG_TYPE),
    Case("ts a string", b"u1", _v(ts="1700000000000"), codec.WRONG_TYPE),
    Case("ts an integral float", b"u1", _v(ts=1.7e12), codec.WRONG_TYPE, beyond=INTEGRAL_FLOAT),
    Case("ts a boolean", b"u1", _v(ts=True), codec.WRONG_TYPE),
    Case("event_type a number", b"u1", _v(event_type=3), codec.WRONG_TYPE),
    Case("event_id a list", b"u1", _v(event_id=["e"]), codec.WRONG_TYPE),
    Case("item_id empty", b"u1", _v(item_id=""), codec.INVALID_ID),
    Case("user_id empty", b"", _v(user_id=""), codec.INVALID_ID),
    Case("item_id too long", b"u1", _v(item_id="x" * (codec.MAX_ID_LENGTH + 1)), codec.INVALID_ID),
    Case("item_id with NUL", b"u1", _v(item_id="i\x007"), codec.INVALID_ID),
    Case("event_id empty", b"u1", _v(event_id=""), codec.INVALID_ID),
    Case("event type unknown", b"u1", _v(event_type="purchase"), codec.UNKNOWN_EVENT_TYPE),
    Case("topic kind unknown", b"u1", _v(), codec.UNKNOWN_EVENT_TYPE, default="sale", beyond=TOPIC),
    Case("ts zero", b"u1", _v(ts=0), codec.BAD_TS),
    Case("ts negative", b"u1", _v(ts=-5), codec.BAD_TS),
    Case("ts in seconds", b"u1", _v(ts=1_700_000_000), codec.BAD_TS),
    Case("ts in microseconds", b"u1", _v(ts=1_700_000_000_000_000), codec.BAD_TS),
    Case("ts after 2100", b"u1", _v(ts=codec.MAX_TS_MS + 1), codec.BAD_TS),
    Case("key differs from user_id", b"u2", _v(), codec.KEY_MISMATCH, beyond=KEY_ONLY),
    # edge cases of the rules the schema states
    Case("empty value", b"u1", b"", codec.INVALID_JSON),
    Case("a UTF-8 byte order mark", b"u1", b"\xef\xbb\xbf" + _v(), codec.INVALID_JSON),
    Case("null", b"u1", b"null", codec.NOT_AN_OBJECT),
    Case("user_id null", b"u1", _v(user_id=None), codec.MISSING_FIELD),
    Case("ts null", b"u1", _v(ts=None), codec.MISSING_FIELD),
    Case("ts a fraction", b"u1", _v(ts=TS + 0.5), codec.WRONG_TYPE),
    Case("ts NaN (Python's json writes it, JSON has none)", b"u1", _v(ts=float("nan")), codec.INVALID_JSON),
    Case("ts overflows a double", b"u1", b'{"user_id": "u1", "item_id": "i7", "ts": 1e400}', codec.INVALID_JSON),
    Case("ts beyond 64 bits", b"u1", _v(ts=10**30), codec.WRONG_TYPE, other_reason=BIG_INT),
    Case("ts just before 1973-03-03", b"u1", _v(ts=codec.MIN_TS_MS - 1), codec.BAD_TS),
    Case("user_id a number", b"1", _v(user_id=1), codec.WRONG_TYPE),
    Case("user_id an object", b"u1", _v(user_id={"id": "u1"}), codec.WRONG_TYPE),
    Case("item_id ends with a newline", b"u1", _v(item_id="i7\n"), codec.INVALID_ID),
    Case("item_id with DEL", b"u1", _v(item_id="i\x7f"), codec.INVALID_ID),
    Case("item_id with a C1 control (NEL)", b"u1", _v(item_id="i\x85"), codec.INVALID_ID),
    Case("item_id with a lone surrogate escape", b"u1", b'{"user_id": "u1", "item_id": "i\\ud800", "ts": 1700000000000}',
         codec.INVALID_JSON),
    Case("257 characters outside the BMP", b"u1", _v(item_id="\U0001F600" * (codec.MAX_ID_LENGTH + 1)),
         codec.INVALID_ID),
    Case("event_type empty", b"u1", _v(event_type=""), codec.INVALID_ID),
    Case("event_type with a tab", b"u1", _v(event_type="cl\tick"), codec.INVALID_ID),
    Case("user_id too long", b"u" * 257, _v(user_id="u" * 257), codec.INVALID_ID),
    Case("valid but padded past 8 KiB", b"u1", _v(pad="x" * codec.MAX_MESSAGE_BYTES), codec.TOO_LARGE, beyond=SIZE),
]


def _from_worker_tests() -> list[Case]:
    """workers.malformed(): the bad messages the real-broker tests send."""
    names = Names()
    out = []
    for n, (topic, key, value, reason) in enumerate(malformed(names)):
        beyond = KEY_ONLY if reason in (codec.MISSING_KEY, codec.KEY_MISMATCH) else ""
        out.append(Case(f"workers.malformed #{n} ({reason})", key, value, reason,
                        "click" if topic == names.clicks else "browse", beyond=beyond))
    return out


CORPUS = VALID + REJECTED + _from_worker_tests()

#: What each failing keyword of the input schema means as a dead-letter reason.
_KEYWORD_REASON = {"required": codec.MISSING_FIELD, "minLength": codec.INVALID_ID, "maxLength": codec.INVALID_ID,
                   "not": codec.INVALID_ID, "minimum": codec.BAD_TS, "maximum": codec.BAD_TS,
                   "enum": codec.UNKNOWN_EVENT_TYPE}
#: Reasons that are about the JSON value, which the input schema can give.
_SCHEMA_REASONS = {codec.NOT_AN_OBJECT, codec.MISSING_FIELD, codec.WRONG_TYPE, codec.INVALID_ID,
                   codec.UNKNOWN_EVENT_TYPE, codec.BAD_TS}


def reason_of(error: ValidationError) -> str:
    if error.validator == "type":
        if not error.absolute_path:
            return codec.NOT_AN_OBJECT
        return codec.MISSING_FIELD if error.instance is None else codec.WRONG_TYPE  # null counts as absent
    return _KEYWORD_REASON.get(str(error.validator), f"keyword {error.validator}")


def schema_verdict(value: bytes | None, validator: Draft202012Validator) -> set[str] | None:
    """None if the value is a JSON document the schema accepts, else the reasons its errors imply
    (``{"no JSON document"}`` when there is nothing to validate)."""
    try:
        doc = json.loads(value.decode("utf-8"))  # type: ignore[union-attr]
    except (AttributeError, UnicodeDecodeError, ValueError, RecursionError):
        return {"no JSON document"}
    errors = list(validator.iter_errors(doc))
    return {reason_of(e) for e in errors} if errors else None


def test_schema_files_are_valid_draft_2020_12_schemas() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(FILES.values())
    for kind in FILES:
        schema = load(kind)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] and schema["title"] and schema["description"]
        for name, prop in schema["properties"].items():
            assert prop.get("description") or "$ref" in prop, f"{kind}.{name} has no description"
    assert load("dead_letter")["properties"]["reason"]["enum"] == list(codec.REASONS)
    assert load("input")["properties"]["ts"]["minimum"] == codec.MIN_TS_MS
    assert load("input")["properties"]["ts"]["maximum"] == codec.MAX_TS_MS
    assert load("recommendation")["properties"]["event_ts"]["maximum"] == codec.MAX_TS_MS
    assert load("input")["$defs"]["id"]["maxLength"] == codec.MAX_ID_LENGTH


def test_the_corpus_is_what_it_says() -> None:
    """Every reason code of parse_event has a case (not the worker's own: processing_error, and wrong_partition,
    which depends on the record's partition, not its bytes: tests/streams/test_wrong_partition*.py); names are unique."""
    assert len({c.name for c in CORPUS}) == len(CORPUS)
    assert {c.reason for c in CORPUS} == {None, *codec.REASONS} - {codec.PROCESSING_ERROR, codec.WRONG_PARTITION}


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_the_input_schema_agrees_with_parse_event(case: Case) -> None:
    got = parse_event(case.key, case.value, case.default, TYPES)
    assert (got.reason if isinstance(got, Rejected) else None) == case.reason, got
    verdict = schema_verdict(case.value, input_validator(TYPES))
    if case.beyond:
        # Excluded: the codec rejects the message for a rule outside the JSON value, and the schema
        # must really accept the value (else the exclusion would hide nothing and should go).
        assert isinstance(got, Rejected) and verdict is None, (case.beyond, verdict)
        return
    assert (verdict is None) == isinstance(got, Parsed), (got, verdict)
    if isinstance(got, Rejected) and got.reason in _SCHEMA_REASONS and not case.other_reason:
        assert verdict is not None and got.reason in verdict, (got, verdict)


def test_encoded_messages_validate_and_broken_ones_do_not() -> None:
    rec = json.loads(codec.encode_recommendation("u1", ["i3", "é"], [1.5, 0.25], "v1", Source("clicks", 3, 41),
                                                 TS, TS + 9))
    dead = json.loads(codec.encode_dead_letter(None, None, Source("browses", 1, 7),
                                               Rejected(codec.INVALID_JSON, "no value"), TS))
    big = json.loads(codec.encode_dead_letter(b"u1", b"x" * 100_000, Source("clicks", 0, 3),
                                              Rejected(codec.TOO_LARGE, "big"), TS))
    recs, deads = Draft202012Validator(load("recommendation")), Draft202012Validator(load("dead_letter"))
    assert recs.is_valid(rec) and deads.is_valid(dead) and deads.is_valid(big)
    assert big["truncated"] is True and len(big["value_b64"]) == load("dead_letter")["properties"]["value_b64"]["maxLength"]
    broken = [(recs, {**rec, "scores": [1.5, None]}),  # a NaN score, as orjson writes it
              (recs, {**rec, "extra": 1}), (recs, {k: v for k, v in rec.items() if k != "source"}),
              (recs, {**rec, "items": ["i3", "i3"]}), (recs, {**rec, "event_ts": 1_700_000_000}),
              (deads, {**dead, "reason": "nonsense"}), (deads, {**dead, "value_sha256": "ab"}),
              (deads, {**big, "truncated": False}), (deads, {**dead, "source": {"topic": "c", "partition": -1,
                                                                                   "offset": 0}})]
    for validator, msg in broken:
        assert not validator.is_valid(msg), msg


# ---- the real worker -----------------------------------------------------------------------------
@pytest.mark.kafka
def test_real_worker_output_matches_the_schemas(kafka_broker, bundle_dir: Path, bundle: Bundle,
                                                tmp_path: Path) -> None:
    assert set(bundle.manifest.event_types) == TYPES
    names, broker = Names(), kafka_broker.bootstrap
    topic = {"click": names.clicks, "browse": names.browses}
    worker = start_worker(broker, bundle_dir, names, tmp_path / "state")
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5, max_request_size=2_000_000)
    events = small_events(users=40, items=120, seed=21)[:300]
    good = set(produce(producer, names, events))
    corpus = [c for c in CORPUS if c.default in topic]
    bad: dict[tuple, Case] = {}
    for case in corpus:  # the corpus too: its valid messages must give recommendations, the others dead letters
        md = producer.send(topic[case.default], key=case.key, value=case.value).get(timeout=30)
        if case.reason:
            bad[(md.topic, md.partition, md.offset)] = case
        else:
            good.add((md.topic, md.partition, md.offset))
    producer.close()
    assert len(good) == len(events) + len(VALID) and len(bad) == len(corpus) - len(VALID)

    out, dead = Reader(broker, names.recs), Reader(broker, names.dlq)
    out.read_until(lambda rs: len(rs) >= len(good))
    dead.read_until(lambda rs: len(rs) >= len(bad))
    time.sleep(2)  # anything more (a duplicate, a stray dead letter) would have arrived by now
    recs, dlq = out.read_until(lambda rs: False, timeout=3), dead.read_until(lambda rs: False, timeout=3)
    out.close(), dead.close()
    status, health = worker.get("/health")
    assert worker.stop() == 0, worker.tail()

    rec_schema, dead_schema = Draft202012Validator(load("recommendation")), Draft202012Validator(load("dead_letter"))
    assert Counter(source_of(r) for r in recs) == Counter(good)  # one recommendation per good event, no more
    for r in recs:
        msg = json.loads(r.value)
        errors = [e.message for e in rec_schema.iter_errors(msg)]
        assert not errors, (errors, msg)
        assert r.key == msg["user_id"].encode() and msg["model_version"] == bundle.version
        assert len(msg["items"]) == len(msg["scores"]) <= bundle.k
        assert msg["scores"] == sorted(msg["scores"], reverse=True)
    assert Counter(source_of(r) for r in dlq) == Counter(bad.keys())  # one dead letter per bad message
    for r in dlq:
        msg = json.loads(r.value)
        errors = [e.message for e in dead_schema.iter_errors(msg)]
        assert not errors, (errors, {k: str(v)[:80] for k, v in msg.items()})
        case = bad[source_of(r)]
        assert msg["reason"] == case.reason and r.key == case.key, case.name
        original = case.value[: codec.MAX_DEAD_LETTER_COPY] if case.value is not None else None
        assert (None if msg["value_b64"] is None else base64.b64decode(msg["value_b64"])) == original, case.name
    assert any(json.loads(r.value)["truncated"] for r in dlq)  # the 1 MB message's dead letter is among them
    assert status == 200 and health["rejected"] == dict(Counter(c.reason for c in bad.values()))
