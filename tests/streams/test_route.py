"""The routing rules of promote and rollback (``streams/route.py``); the real-broker test is
tests/streams/test_promote_kafka.py."""
from __future__ import annotations

from collections import namedtuple

import pytest

from streamrec.streams.config import ConfigError
from streamrec.streams.route import (decode_routes, encode_routes, routed, switch_offsets, switch_route,
                                     topic_for)

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "tp offset")
R, S = "recommendations", "recommendations.shadow"


def test_a_record_goes_where_the_last_switch_at_or_before_its_offset_says() -> None:
    route = ((0, R), (100, S), (250, R))
    assert [topic_for(route, o, "default") for o in (0, 99, 100, 249, 250, 10**9)] == [R, R, S, S, R, R]
    assert topic_for((), 5, "default") == "default" and topic_for(((10, S),), 9, R) == R
    assert decode_routes(encode_routes(route)) == route and decode_routes(None) == ()


def test_a_switch_keeps_the_earlier_ones_below_it_and_refuses_roles_named_the_wrong_way() -> None:
    promoted = switch_route((), R, 100, S)  # the serving version, at its first switch
    assert promoted == ((0, R), (100, S))
    assert switch_route((), S, 0, R) == ((0, R),)  # nothing before the switch
    back = switch_route(promoted, S, 250, R)  # rollback: it serves again from 250
    assert back == ((0, R), (100, S), (250, R))
    with pytest.raises(ConfigError, match="publishes to 'recommendations.shadow' since its last switch"):
        switch_route(promoted, R, 300, S)  # promoted twice with the same names
    # a switch below an earlier one (the committed offsets went back: a reset group) replaces what it covers
    assert switch_route(back, R, 200, S) == ((0, R), (100, S), (200, S))


def test_the_switch_offset_is_the_first_one_neither_version_processed() -> None:
    a, b, c = TP("clicks", 0), TP("clicks", 1), TP("browses", 0)
    assert switch_offsets([{a: 500, b: 20, c: None}, {a: 480, b: 35}], [a, b, c]) == {a: 500, b: 35, c: 0}


def test_only_recommendations_are_routed_and_by_their_own_partition() -> None:
    a, b = TP("clicks", 0), TP("clicks", 1)
    records = [Rec(a, 99), Rec(a, 100), Rec(b, 100), Rec(a, 101)]
    outputs = [(0, R, b"u", b"x"), (1, R, b"u", b"y"), (2, R, b"v", b"z"), (3, "events.dlq", b"u", b"bad")]
    assert routed(outputs, records, {a: ((0, R), (100, S))}, R) == [
        (0, R, b"u", b"x"), (1, S, b"u", b"y"), (2, R, b"v", b"z"), (3, "events.dlq", b"u", b"bad")]
