"""streams.state: the byte form round-trips exactly, has the documented size, and refuses bad bytes."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from streamrec.streams.state import HEADER, RECENT_IDS, SOURCES, StateError, UserState, event_id_hash, remember


def _state(layers: int = 2, hidden: int = 5, seed: int = 0, **kw: object) -> UserState:
    rng = np.random.default_rng(seed)
    base: dict[str, object] = dict(
        h=rng.standard_normal((layers, hidden)).astype(np.float32),
        c=rng.standard_normal((layers, hidden)).astype(np.float32),
        last_ts=1_700_000_000_123, count=42, m=4, seen=(9, 3, 17), top_items=(5, 8, 2),
        top_scores=np.array([1.5, -0.25, np.float32(1e-7)], np.float32),
        recent_ids=(event_id_hash("a"), event_id_hash("b")), offsets=(12, -1))
    base.update(kw)
    return UserState(**base)  # type: ignore[arg-type]


def _same(a: UserState, b: UserState) -> bool:
    return (np.array_equal(a.h, b.h) and np.array_equal(a.c, b.c) and a.h.dtype == b.h.dtype == np.float32
            and np.array_equal(a.top_scores, b.top_scores)
            and (a.last_ts, a.count, a.m, a.seen, a.top_items, a.recent_ids, a.offsets)
            == (b.last_ts, b.count, b.m, b.seen, b.top_items, b.recent_ids, b.offsets))


@pytest.mark.parametrize("kw", [{}, {"layers": 1, "hidden": 24}, {"seen": (), "top_items": (), "top_scores": [],
                                                                   "recent_ids": (), "offsets": (-1, -1)}])
def test_pack_unpack_round_trip_is_exact(kw: dict[str, object]) -> None:
    state = _state(**kw)
    blob = state.pack()
    again = UserState.unpack(blob, layers=state.layers, hidden=state.hidden)
    assert _same(state, again) and again.pack() == blob


def test_size_is_header_plus_arrays() -> None:
    state = _state(layers=1, hidden=24, m=20, seen=tuple(range(2, 22)), top_items=tuple(range(30, 40)),
                   top_scores=np.zeros(10, np.float32), recent_ids=())
    assert HEADER.size == 50
    assert len(state.pack()) == 50 + 8 * 24 + 4 * 20 + 8 * 10 == 402
    full = _state(layers=1, hidden=24, recent_ids=tuple(range(RECENT_IDS)))
    assert len(full.pack()) == 50 + 8 * 24 + 4 * 3 + 8 * 3 + 8 * RECENT_IDS


def test_header_is_the_documented_layout() -> None:
    magic, version, flags, layers, hidden, m, n_seen, n_top, n_ids, last_ts, count, o1, o2 = \
        struct.unpack_from("<4sBBHHHHHHqQqq", _state().pack())
    assert (magic, version, flags, layers, hidden, m) == (b"SRUS", 1, 0, 2, 5, 4)
    assert (n_seen, n_top, n_ids, last_ts, count, (o1, o2)) == (3, 3, 2, 1_700_000_000_123, 42, (12, -1))
    assert SOURCES == 2


@pytest.mark.parametrize("mangle, match", [
    (lambda b: b[:10], "shorter"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:4] + b"\x02" + b[5:], "version 2"),
    (lambda b: b[:-1], "header says"),
    (lambda b: b + b"\x00", "header says"),
])
def test_bad_bytes_are_refused(mangle, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StateError, match=match):
        UserState.unpack(mangle(_state().pack()))


def test_a_state_of_another_model_shape_is_refused() -> None:
    with pytest.raises(StateError, match="2x5 model, expected 1x5"):
        UserState.unpack(_state().pack(), layers=1, hidden=5)


def test_states_are_immutable() -> None:
    state = _state()
    with pytest.raises(ValueError):
        state.h[0, 0] = 1.0
    with pytest.raises(AttributeError):
        state.count = 3  # type: ignore[misc]


def test_invalid_states_cannot_be_built() -> None:
    with pytest.raises(StateError):
        _state(seen=(1, 2, 3, 4, 5))  # more than m=4
    with pytest.raises(StateError):
        _state(top_scores=np.zeros(2, np.float32))  # 3 items, 2 scores
    with pytest.raises(StateError):
        _state(offsets=(1,))


def test_remember_keeps_the_last_distinct_values() -> None:
    w: tuple[int, ...] = ()
    for v in [1, 2, 3, 2, 4, 5, 1]:
        w = remember(w, v, 4)
    assert w == (2, 4, 5, 1)
    assert remember((1, 2), 3, 0) == ()


def test_event_id_hash_is_stable() -> None:
    assert event_id_hash("e-1") == event_id_hash("e-1") != event_id_hash("e-2")
    assert 0 <= event_id_hash("é") < 2**64
    # pinned: states written by one version must be read by the next (blake2b, 8-byte digest, little-endian)
    assert event_id_hash("abc") == int.from_bytes(bytes.fromhex("d8bb14d833d59559"), "little")
