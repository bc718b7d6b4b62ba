"""streams.logic.process against the bundle stepped by hand (``by_hand`` in conftest.py), no Kafka."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from streamrec.export.runtime import Bundle
from streamrec.model.events import Interaction, by_user
from streamrec.model.gaps import gap_bucket
from streamrec.streams.logic import Recommendation, initial_state, process, step_one
from streamrec.streams.state import UserState
from tests.factories import small_events

ATOL = 1e-5


def _one_by_one(bundle: Bundle, events: Sequence[Interaction], **kw: object
                ) -> tuple[list[UserState], list[Recommendation | None]]:
    """``process`` called with one event at a time, the state carried by the caller (as the worker does)."""
    stored: dict[str, UserState] = {}
    states, recs = [], []
    for i, e in enumerate(events):
        extra = {name: values[i] for name, values in kw.items()}  # type: ignore[index]
        state, rec = step_one(bundle, stored.get(e.user_id), e, **extra)  # type: ignore[arg-type]
        stored[e.user_id] = state  # type: ignore[assignment]
        states.append(state)
        recs.append(rec)
    return states, recs


def _assert_matches(rec: Recommendation | None, items: list[str], scores: list[float]) -> None:
    assert rec is not None
    assert list(rec.items) == items
    np.testing.assert_allclose(rec.scores, scores, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def histories() -> dict[str, list[Interaction]]:
    groups = by_user(small_events(users=40, items=120, seed=3))
    return {u: seq[:25] for u, seq in list(groups.items())[:30]}


def test_one_user_equals_stepping_the_bundle_by_hand(bundle: Bundle, histories: dict[str, list[Interaction]],
                                                     by_hand: Callable) -> None:
    events = max(histories.values(), key=len)
    states, recs = _one_by_one(bundle, events)
    ref = by_hand(bundle, events)
    assert len(events) >= 10
    for state, rec, step, e in zip(states, recs, ref, events):
        _assert_matches(rec, step.items, step.scores)
        assert len(rec.items) == bundle.k and rec.event_ts == e.ts and rec.user_id == e.user_id  # type: ignore[union-attr]
        np.testing.assert_allclose(state.h, step.h, atol=ATOL, rtol=0)
        np.testing.assert_allclose(state.c, step.c, atol=ATOL, rtol=0)
        assert list(state.seen) == step.seen and state.last_ts == step.last_ts
    assert states[-1].count == len(events)


def _last_by_user(events: Sequence[Interaction], states: Sequence[UserState]) -> dict[str, UserState]:
    return {e.user_id: s for e, s in zip(events, states)}


def _assert_same(a: UserState, b: UserState) -> None:
    """Bit for bit: the runs graph equals stepping one event at a time exactly (the export's gate)."""
    assert np.array_equal(a.h, b.h) and np.array_equal(a.c, b.c)
    assert (a.last_ts, a.count, a.seen, a.top_items, a.recent_ids, a.offsets) == (
        b.last_ts, b.count, b.seen, b.top_items, b.recent_ids, b.offsets)
    assert np.array_equal(a.top_scores, b.top_scores)


@pytest.mark.parametrize("interleave", [True, False], ids=["round-robin", "bursts"])
def test_a_batch_of_many_users_equals_one_by_one(bundle: Bundle, histories: dict[str, list[Interaction]],
                                                 interleave: bool) -> None:
    # Round-robin: every call steps many users with several events each; bursts: each user's events
    # back to back (runs of 25 events of one user, as ml-100k's sessions come).
    events = ([e for t in range(25) for seq in histories.values() if t < len(seq) for e in seq[t:t + 1]]
              if interleave else [e for seq in histories.values() for e in seq])
    alone_states, alone_recs = _one_by_one(bundle, events)
    final = _last_by_user(events, alone_states)
    for size in (len(events), 97, 7):  # the whole stream at once, and chunks (states carried between calls)
        stored: dict[str, UserState] = {}
        for a in range(0, len(events), size):
            chunk = events[a:a + size]
            out = process(bundle, [stored.get(e.user_id) for e in chunk], chunk)
            assert out.skipped == [None] * len(chunk) and set(out.states) == {e.user_id for e in chunk}
            for i, rec in enumerate(out.recs):
                expected = alone_recs[a + i]
                assert rec == expected  # items and scores bit for bit, the event's time
            stored.update(out.states)
        assert {u: s.count for u, s in stored.items()} == {u: len(seq) for u, seq in histories.items()}
        for u, state in stored.items():
            _assert_same(state, final[u])


def test_bundles_without_the_runs_graph_step_in_waves_with_the_same_results(
        bundle: Bundle, histories: dict[str, list[Interaction]]) -> None:
    """A bundle exported before runs.onnx (only step.onnx): ``Bundle.run`` steps one wave per t instead."""
    import copy

    old = copy.copy(bundle)
    old.runs = None
    events = [e for seq in list(histories.values())[:6] for e in seq] + [
        e for t in range(25) for seq in list(histories.values())[6:] if t < len(seq) for e in seq[t:t + 1]]
    new_out = process(bundle, [None] * len(events), events)
    old_out = process(old, [None] * len(events), events)
    assert old_out.recs == new_out.recs
    for u, state in new_out.states.items():
        _assert_same(old_out.states[u], state)


def test_an_older_event_is_applied_in_arrival_order_with_gap_zero(bundle: Bundle) -> None:
    t = 1_700_000_000_000
    events = [Interaction("u", "i3", "browse", t), Interaction("u", "i5", "click", t - 60_000),
              Interaction("u", "i7", "browse", t + 5_000)]
    states, recs = _one_by_one(bundle, events)
    assert [s.last_ts for s in states] == [t, t, t + 5_000]  # the newest time stays
    # by hand, with the gaps spelled out: first event, clamped to 0, 5 s after the newest
    gaps = [0, gap_bucket(0), gap_bucket(5_000)]
    assert gaps == [0, 1, 5]
    h, c = bundle.init_state(1)
    seen: list[int] = []
    for e, gap, state, rec in zip(events, gaps, states, recs):
        item = bundle.items.index(e.item_id)
        r = bundle.step(np.array([item]), np.array([bundle.types.index(e.event_type)]), np.array([gap]), h, c)
        h, c = r.h, r.c
        seen.append(item)
        expected = [bundle.items.token(i) for i in r.top_items[0].tolist() if i not in seen][: bundle.k]
        assert rec is not None and list(rec.items) == expected
        np.testing.assert_allclose(state.h, h[:, 0], atol=ATOL, rtol=0)


def test_unknown_items_step_as_oov_and_stay_out_of_the_window(bundle: Bundle, by_hand: Callable) -> None:
    t = 1_700_000_000_000
    events = [Interaction("u", "i3", "browse", t), Interaction("u", "no-such-item", "browse", t + 1_000)]
    assert "no-such-item" not in bundle.items
    states, recs = _one_by_one(bundle, events)
    ref = by_hand(bundle, events)
    _assert_matches(recs[1], ref[1].items, ref[1].scores)
    assert states[1].seen == states[0].seen == (bundle.items.index("i3"),)
    h0, c0 = bundle.init_state(1)
    r = bundle.step(np.array([bundle.items.index("i3")]), np.array([bundle.types.index("browse")]), np.array([0]), h0, c0)
    r = bundle.step(np.array([1]), np.array([bundle.types.index("browse")]), np.array([gap_bucket(1_000)]), r.h, r.c)
    np.testing.assert_allclose(states[1].h, r.h[:, 0], atol=ATOL, rtol=0)


def test_seen_window_is_bounded_and_never_recommended(bundle: Bundle, by_hand: Callable) -> None:
    m, t = bundle.manifest.m, 1_700_000_000_000
    known = bundle.items.ids[: m + 15]
    events = [Interaction("u", item, "browse", t + 1_000 * n) for n, item in enumerate(known)]
    states, recs = _one_by_one(bundle, events)
    for n, (state, rec) in enumerate(zip(states, recs)):
        window = [bundle.items.index(i) for i in known[max(0, n + 1 - m): n + 1]]
        assert list(state.seen) == window and len(state.seen) <= m
        assert rec is not None and not set(rec.items) & set(known[max(0, n + 1 - m): n + 1])
        assert len(rec.items) == bundle.k
    ref = by_hand(bundle, events)
    _assert_matches(recs[-1], ref[-1].items, ref[-1].scores)


def test_redeliveries_change_nothing_and_emit_nothing(bundle: Bundle) -> None:
    t = 1_700_000_000_000
    a, b = Interaction("u", "i3", "browse", t), Interaction("u", "i4", "click", t + 1)
    s1, _ = step_one(bundle, None, a, event_id="e1", position=(0, 10))
    # the same event id again (a producer retry, new offset), and the same offset again (a Kafka replay)
    out = process(bundle, [s1, s1], [a, a], event_ids=["e1", None], positions=[(0, 11), (0, 10)])
    assert out.recs == [None, None] and out.skipped == ["duplicate", "redelivered"] and out.states == {}
    assert step_one(bundle, s1, a, event_id="e1", position=(0, 11)) == (s1, None)
    # an event from the other topic with a lower offset is new
    s2, rec = step_one(bundle, s1, b, position=(1, 3))
    assert rec is not None and s2 is not None and s2.offsets == (10, 3) and s2.count == 2
    # in one batch: a new event, then its id again, then its offset again
    c = Interaction("u", "i5", "click", t + 2)
    out = process(bundle, [s2] * 3, [c, c, c], event_ids=["e9", "e9", None], positions=[(0, 20), (0, 21), (0, 20)])
    assert out.skipped == [None, "duplicate", "redelivered"] and out.recs[0] is not None
    assert out.states["u"].count == 3 and out.states["u"].offsets == (20, 3)


def test_inputs_are_never_modified(bundle: Bundle) -> None:
    e = Interaction("u", "i3", "browse", 1_700_000_000_000)
    s1, _ = step_one(bundle, None, e)
    assert s1 is not None
    before = s1.pack()
    s2, _ = step_one(bundle, s1, Interaction("u", "i4", "browse", e.ts + 10))
    assert s2 is not None and s1.pack() == before and s2 is not s1 and s2.count == 2
    assert not s2.h.flags.writeable
    blank = initial_state(bundle)
    assert blank.count == 0 and not blank.h.any() and blank.h.shape == (bundle.manifest.layers, bundle.manifest.hidden)


def test_k_override_and_bad_arguments(bundle: Bundle) -> None:
    e = Interaction("u", "i3", "browse", 1_700_000_000_000)
    _, rec = step_one(bundle, None, e, k=3)
    assert rec is not None and len(rec.items) == 3
    with pytest.raises(ValueError, match="2 states for 1 events"):
        process(bundle, [None, None], [e])
    with pytest.raises(ValueError, match="source slot"):
        process(bundle, [None], [e], positions=[(2, 0)])


def test_top_k_keeps_the_first_k_unseen_in_list_order() -> None:
    from streamrec.streams.logic import top_k

    items, scores = np.array([7, 3, 9, 4, 5]), np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    assert top_k(items, scores, (3, 4), 2) == ([7, 9], [pytest.approx(0.9), pytest.approx(0.7)])
    assert top_k([7, 3, 9], [3.0, 2.0, 1.0], (7, 3, 9), 2) == ([], [])  # everything seen
    assert top_k([7, 3, 9], [3.0, 2.0, 1.0], (), 5) == ([7, 3, 9], [3.0, 2.0, 1.0])  # fewer than k
    assert top_k([7, 3, 9], [3.0, 2.0, 1.0], (), 0) == ([], [])


def test_attention_bundles_get_the_window_after_the_event(attention_bundle: Bundle,
                                                          histories: dict[str, list[Interaction]],
                                                          by_hand: Callable) -> None:
    """The step of an attention bundle takes the user's last 4 distinct known items after remembering
    the event: one user against the stepper by hand (repeats and an unknown item included), and a
    batch of many users (several events each, waves) against one event at a time."""
    b = attention_bundle
    assert b.manifest.attention == 4
    events = list(max(histories.values(), key=len))
    events[5] = dataclasses.replace(events[5], item_id="never-seen-item")
    events[8] = dataclasses.replace(events[8], item_id=events[3].item_id)  # a repeat
    states, recs = _one_by_one(b, events)
    for state, rec, step in zip(states, recs, by_hand(b, events)):
        _assert_matches(rec, step.items, step.scores)
        np.testing.assert_allclose(state.h, step.h, atol=ATOL, rtol=0)
        assert list(state.seen) == step.seen
    batch = [e for t in range(25) for seq in histories.values() if t < len(seq) for e in seq[t:t + 1]]
    batch += [e for seq in histories.values() for e in seq[::3]]  # and bursts: runs of one user
    alone_states, alone_recs = _one_by_one(b, batch)
    out = process(b, [None] * len(batch), batch)
    assert out.recs == alone_recs
    for u, state in _last_by_user(batch, alone_states).items():
        _assert_same(out.states[u], state)


def test_calls_hold_whole_users_and_shrink_with_the_catalog() -> None:
    from streamrec.streams.logic import _groups, run_rows

    assert run_rows(1_682) == 256 and run_rows(12_102) == 86 and run_rows(1_000_000) == 64
    assert _groups([3, 2, 4, 1], 5) == [range(0, 2), range(2, 4)]
    assert _groups([9, 1, 1], 5) == [range(0, 1), range(1, 3)]  # a longer run is a call of its own
    assert _groups([], 5) == []


def test_reading_the_top_list_in_part_changes_nothing(bundle: Bundle, histories: dict[str, list[Interaction]],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are read k + LIST_SLACK entries deep, and whole when seen items crowd more out: with no slack
    at all (every row with a seen item in its first k is read again) the lists are the same."""
    import streamrec.streams.logic as logic

    events = [e for seq in histories.values() for e in seq]
    full = process(bundle, [None] * len(events), events)
    monkeypatch.setattr(logic, "LIST_SLACK", 0)
    assert process(bundle, [None] * len(events), events).recs == full.recs
    assert all(r is not None and len(r.items) == bundle.k for r in full.recs)
