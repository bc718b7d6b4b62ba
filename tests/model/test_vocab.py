import json

import numpy as np
import pytest

from streamrec.model.vocab import OOV, PAD, Vocab


def test_order_by_frequency_then_id_after_reserved_slots():
    v = Vocab.build(["b", "a", "c", "b", "c", "d", "c"])
    assert [v.token(i) for i in range(len(v))] == ["<pad>", "<oov>", "c", "b", "a", "d"]
    assert (PAD, OOV) == (0, 1)
    assert len(v) == 6
    assert v.index("c") == 2 and v.index("d") == 5
    assert v.ids == ["c", "b", "a", "d"]


def test_oov_and_contains():
    v = Vocab.build(["x", "y"])
    assert v.index("zzz") == OOV
    assert "x" in v and "zzz" not in v
    # the reserved display names are not ids: a real id spelled "<pad>" gets its own index
    assert "<pad>" not in v and "<oov>" not in v
    w = Vocab.build(["<pad>"])
    assert w.index("<pad>") == 2
    with pytest.raises(IndexError):
        v.token(len(v))
    with pytest.raises(IndexError):
        v.token(-1)


def test_indices_array():
    v = Vocab.build(["a", "a", "b"])
    arr = v.indices(["b", "a", "q", "a"])
    assert arr.dtype == np.int64
    assert arr.tolist() == [3, 2, OOV, 2]
    assert v.indices([]).dtype == np.int64 and v.indices([]).size == 0


def test_deterministic_regardless_of_input_order():
    ids = ["i%d" % (k % 7) for k in range(100)] + ["z", "a"]
    a = Vocab.build(ids)
    b = Vocab.build(list(reversed(ids)))
    assert a == b and a.fingerprint() == b.fingerprint()
    assert Vocab.build(["a", "b"]).fingerprint() != Vocab.build(["b", "b", "a"]).fingerprint()
    assert len(a.fingerprint()) == 64


def test_min_count_and_max_size():
    v = Vocab.build(["a", "a", "b", "c", "c", "c"], min_count=2)
    assert v.ids == ["c", "a"]
    assert Vocab.build(["a", "a", "b", "c", "c", "c"], max_size=1).ids == ["c"]


def test_json_round_trip(tmp_path):
    v = Vocab.build(["é", "b", "b", "1"])
    path = tmp_path / "items.json"
    v.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["ids"] == ["b", "1", "é"] and data["format"] == "streamrec.vocab"
    w = Vocab.load(path)
    assert w == v and w.fingerprint() == v.fingerprint()
    assert Vocab.from_dict(v.to_dict()) == v
    assert [w.index(t) for t in ("b", "1", "é", "?")] == [2, 3, 4, OOV]


def test_rejects_bad_documents(tmp_path):
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        Vocab(["a", "b", "a"])
    with pytest.raises(ValueError, match="not a streamrec.vocab"):
        Vocab.from_dict({"ids": ["a"]})
    good = Vocab.build(["a"]).to_dict()
    with pytest.raises(ValueError, match="version"):
        Vocab.from_dict({**good, "version": 99})
    bad = tmp_path / "v.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="v.json"):
        Vocab.load(bad)
