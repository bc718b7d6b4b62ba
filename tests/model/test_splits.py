import numpy as np
import pytest

from streamrec.model.events import Interaction
from streamrec.model.splits import split, summary, training_events


def log(*rows: tuple[str, str, int]) -> list[Interaction]:
    return [Interaction(u, i, "click", ts) for u, i, ts in rows]


# ---- LOO-full --------------------------------------------------------------------------------


def test_loo_full_by_hand():
    ev = log(("a", "1", 3), ("a", "2", 1), ("a", "3", 2), ("a", "4", 4), ("b", "1", 1), ("b", "2", 2),
             ("c", "5", 1), ("c", "6", 1), ("c", "7", 1))  # c: ties keep file order
    s = split(ev, "loo-full")
    assert [e.item_id for e in s.sequences["a"]] == ["2", "3", "1", "4"]
    assert s.train_len == s.fit_len == {"a": 2, "b": 2, "c": 1}
    assert s.valid == [("a", 2), ("c", 1)]
    assert s.test == [("a", 3), ("c", 2)]
    assert s.sequences["c"][2].item_id == "7" and s.cutoff_ts is None
    assert [e.item_id for e in training_events(s)] == ["2", "3", "1", "2", "5"]
    assert summary(s)["test_users"] == 2 and summary(s)["training_events"] == 5


# ---- TEMPORAL-stream --------------------------------------------------------------------------


def test_temporal_by_hand():
    # 20 events at ts 0..19 -> T = percentile 90 = 17.1; training ts <= 17.
    rows = [("u", f"i{t}", t) for t in range(0, 18, 2)]          # u: 0,2,...,16 (all training)
    rows += [("v", f"i{t}", t) for t in range(1, 18, 2)]         # v: 1,3,...,17
    rows += [("v", "late", 19), ("w", "new", 18)]               # v continues after T; w starts after T
    s = split(log(*rows), "TEMPORAL")
    assert s.protocol == "temporal"
    assert s.cutoff_ts == pytest.approx(17.1)
    assert s.train_len == {"u": 9, "v": 9, "w": 0}
    assert s.test == [("v", 9)]  # w has no event before T: excluded
    # T_v = percentile 90 of 0..17 = 15.3: valid = training events at 16 (u) and 17 (v)
    assert s.valid_cutoff_ts == pytest.approx(15.3)
    assert s.fit_len == {"u": 8, "v": 8, "w": 0}
    assert s.valid == [("u", 8), ("v", 8)]
    assert [e.ts for e in training_events(s)] == list(range(0, 18, 2)) + list(range(1, 18, 2))
    sm = summary(s)
    assert (sm["users"], sm["events"], sm["test_targets"], sm["valid_targets"], sm["fit_events"]) == (3, 20, 1, 2, 16)


def test_temporal_ties_at_the_cutoff_are_targets():
    # T = percentile 90 of five 0s and five 10s = 10 exactly: events with ts == T are targets.
    rows = [("a", "x", 0)] * 5 + [("a", "y", 10)] * 3 + [("b", "z", 10)] * 2
    s = split(log(*rows), "temporal")
    assert s.cutoff_ts == 10.0
    assert s.train_len == {"a": 5, "b": 0}
    assert s.test == [("a", p) for p in range(5, 8)]  # b: no event before T
    assert s.valid_cutoff_ts == 0.0 and s.fit_len == {"a": 0, "b": 0} and s.valid == []


def test_temporal_prequential_inputs_and_numpy_percentile():
    rng = np.random.default_rng(1)
    rows = [(f"u{rng.integers(0, 30)}", f"i{rng.integers(0, 50)}", int(rng.integers(0, 10**6))) for _ in range(2000)]
    s = split(log(*rows), "temporal")
    ts = np.array([r[2] for r in rows])
    t = np.percentile(ts, 90)
    assert s.cutoff_ts == t
    users_before = {r[0] for r in rows if r[2] < t}
    assert len(s.test) == sum(1 for r in rows if r[2] >= t and r[0] in users_before) > 0
    for u, p in s.test:
        seq = s.sequences[u]
        assert seq[p].ts >= t and seq[s.train_len[u] - 1].ts < t and all(e.ts <= seq[p].ts for e in seq[:p])
    assert s.valid_cutoff_ts == np.percentile(ts[ts < t], 90)
    assert all(s.fit_len[u] <= p < s.train_len[u] for u, p in s.valid)


def test_errors():
    with pytest.raises(ValueError, match="unknown protocol"):
        split(log(("a", "x", 1)), "random")
    with pytest.raises(ValueError, match="empty"):
        split([], "loo-full")


# ---- real data -------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_beauty_loo_full(real_events):
    ev = real_events("beauty", "sequences")
    s = split(ev, "loo-full")
    long_users = sum(1 for seq in s.sequences.values() if len(seq) >= 3)
    assert len(s.test) == len(s.valid) == long_users == 22_363
    assert sum(s.train_len.values()) == 198_502 - 2 * 22_363
    assert all(p == len(s.sequences[u]) - 1 for u, p in s.test)


@pytest.mark.shared_data
def test_ml100k_temporal(real_events):
    ev = real_events("ml-100k", "recbole")
    s = split(ev, "temporal")
    ts = np.array([e.ts for e in ev])
    assert s.cutoff_ts == np.percentile(ts, 90)
    sm = summary(s)
    assert sm["training_events"] == int((ts < s.cutoff_ts).sum())
    assert sm["test_targets"] + sm["training_events"] + sum(
        len(seq) for u, seq in s.sequences.items() if s.train_len[u] == 0) == 100_000
