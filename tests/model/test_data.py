from pathlib import Path

import pytest

from streamrec.model.data import (
    FORMATS,
    SYNTHETIC_BASE_MS,
    SYNTHETIC_STEP_MS,
    DataError,
    describe,
    load,
    parse_columns,
)
from streamrec.model.events import Interaction, by_user


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def I(u: str, i: str, t: str, ts: int) -> Interaction:  # noqa: E743
    return Interaction(u, i, t, ts)


# ---- tiny files, every format -------------------------------------------------------------


def test_recbole_seconds_to_ms_and_header_types(tmp_path):
    f = write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
              "u1\ti1\t3\t100\nu2\ti2\t5\t101.5\n\nu1\ti3\t1\t99\n")
    assert load(f, "recbole") == [I("u1", "i1", "click", 100_000), I("u2", "i2", "click", 101_500),
                                  I("u1", "i3", "click", 99_000)]
    assert [e.item_id for e in by_user(load(f, "recbole"))["u1"]] == ["i3", "i1"]


def test_recbole_event_column_directory_and_no_timestamp(tmp_path):
    write(tmp_path / "d.inter", "user_id:token\titem_id:token\tevent_type:token\ttimestamp:float\nu\ta\tbuy\t7\n")
    write(tmp_path / "d.item", "item_id:token\ta\n")  # beside it, ignored
    assert load(tmp_path, "recbole") == [I("u", "a", "buy", 7000)]
    g = write(tmp_path / "g.inter", "item_id:token\tuser_id:token\nb\tu\nc\tu\nd\tv\n")
    assert load(g, "recbole") == [I("u", "b", "click", SYNTHETIC_BASE_MS), I("u", "c", "click", SYNTHETIC_BASE_MS + 1000),
                                  I("v", "d", "click", SYNTHETIC_BASE_MS)]
    with pytest.raises(DataError, match="several"):
        load(tmp_path, "recbole")


def test_recbole_malformed_lines(tmp_path):
    f = write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\ti\n")
    with pytest.raises(DataError, match=r"x\.inter:3: expected 3 fields"):
        load(f, "recbole")
    f = write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\ti\tsoon\n")
    with pytest.raises(DataError, match=r"x\.inter:3: timestamp 'soon'"):
        load(f, "recbole")
    f = write(tmp_path / "x.inter", "uid:token\titem_id:token\n")
    with pytest.raises(DataError, match=r"x\.inter:1: header has no column 'user_id'"):
        load(f, "recbole")


def test_sequences_synthetic_time_is_monotone_per_user(tmp_path):
    f = write(tmp_path / "s.txt", "1 10 11 12\n\n2 11\n1 13\n")  # user 1 continues on line 4
    ev = load(f, "sequences")
    assert [(e.user_id, e.item_id) for e in ev] == [("1", "10"), ("1", "11"), ("1", "12"), ("2", "11"), ("1", "13")]
    seqs = by_user(ev)
    assert [e.ts - SYNTHETIC_BASE_MS for e in seqs["1"]] == [0, 1000, 2000, 3000]
    assert [e.ts for e in seqs["2"]] == [SYNTHETIC_BASE_MS]
    assert all(e.event_type == "click" for e in ev)
    with pytest.raises(DataError, match=r"s\.txt:2: .*user without items"):
        load(write(tmp_path / "s.txt", "1 10\n7\n"), "sequences")


def test_pairs_order_only(tmp_path):
    f = write(tmp_path / "p.txt", "a x\nb y\na z\n")
    seqs = by_user(load(f, "pairs"))
    assert [(e.item_id, e.ts) for e in seqs["a"]] == [("x", SYNTHETIC_BASE_MS), ("z", SYNTHETIC_BASE_MS + SYNTHETIC_STEP_MS)]
    with pytest.raises(DataError, match=r"p\.txt:2: expected 'user item', got 3"):
        load(write(tmp_path / "p.txt", "a x\na y z\n"), "pairs")


def test_gru4rec_file_and_session_rec_directory(tmp_path):
    head = "SessionId\tItemId\tTime\n"
    write(tmp_path / "c_train_full.txt", head + "1\t5\t1396831392.56\n1\t6\t1396831393.001\n")
    write(tmp_path / "c_train_tr.txt", head + "1\t5\t1396831392.56\n")  # a re-split of train_full: not read
    write(tmp_path / "c_test.txt", head + "2\t5\t1396831793.197\n")
    assert load(tmp_path / "c_test.txt", "gru4rec") == [I("2", "5", "click", 1396831793197)]
    assert load(tmp_path, "gru4rec") == [I("1", "5", "click", 1396831392560), I("1", "6", "click", 1396831393001),
                                         I("2", "5", "click", 1396831793197)]
    assert len(load(tmp_path, "gru4rec", limit=2)) == 2
    with pytest.raises(DataError, match=r"c_test\.txt:3: expected 3 fields"):
        load(write(tmp_path / "c_test.txt", head + "2\t5\t1.0\n2\t5\n"), "gru4rec")


def test_taobao_behaviors(tmp_path):
    f = write(tmp_path / "UserBehavior.csv", "1,10,100,pv,1511544070\n1,11,100,cart,1511544071\n"
              "2,10,100,fav,1511544072\n2,12,101,buy,1511544073\n")
    assert [(e.event_type, e.ts) for e in load(tmp_path, "taobao")] == [
        ("browse", 1511544070000), ("cart", 1511544071000), ("fav", 1511544072000), ("buy", 1511544073000)]
    with pytest.raises(DataError, match=r"UserBehavior\.csv:2: behavior 'like'"):
        load(write(f, "1,10,100,pv,1\n1,10,100,like,2\n"), "taobao")
    with pytest.raises(DataError, match=r"UserBehavior\.csv:1: expected user,item"):
        load(write(f, "1,10,100,pv\n"), "taobao")


def test_diginetica_date_plus_timeframe(tmp_path):
    f = write(tmp_path / "v.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
              "1;NA;81766;526309;2016-05-09\n2;7;3147;0;1970-01-02\n")
    assert load(f, "diginetica") == [I("1", "81766", "browse", 1462752000000 + 526309), I("2", "3147", "browse", 86_400_000)]
    with pytest.raises(DataError, match=r"v\.csv:2: eventdate '2016/05/09'"):
        load(write(f, "session_id;user_id;item_id;timeframe;eventdate\n1;NA;1;5;2016/05/09\n"), "diginetica")
    with pytest.raises(DataError, match=r"v\.csv:2: timeframe '-5'"):
        load(write(f, "session_id;user_id;item_id;timeframe;eventdate\n1;NA;1;-5;2016-05-09\n"), "diginetica")


def test_csv_column_mapping(tmp_path):
    f = write(tmp_path / "log.csv", 'time,iid,uid,type\n1700000000123,"a,b",u1,view\n1700000000000,c,u2,buy\n')
    cols = parse_columns("user_id=uid, item_id=iid, ts=time:ms, event_type=type")
    assert cols == {"user_id": "uid", "item_id": "iid", "ts": "time", "ts_unit": "ms", "event_type": "type"}
    assert load(f, "csv", columns=cols) == [I("u1", "a,b", "view", 1700000000123), I("u2", "c", "buy", 1700000000000)]
    g = write(tmp_path / "log.tsv", "uid\tiid\tt\nu\ti\t1.5\n")
    assert load(g, "csv", columns="user_id=uid,item_id=iid,ts=t:s", sep="\t") == [I("u", "i", "click", 1500)]
    with pytest.raises(DataError, match="needs columns"):
        load(f, "csv")
    with pytest.raises(DataError, match="no column 'when'"):
        load(f, "csv", columns="user_id=uid,item_id=iid,ts=when")
    with pytest.raises(DataError, match="unknown column key 'rating'"):
        parse_columns("user_id=u,rating=r")
    with pytest.raises(DataError, match="ts_unit"):
        parse_columns("user_id=u,item_id=i,ts=t,ts_unit=h")


def test_edges_are_clear(tmp_path):
    with pytest.raises(DataError, match="unknown format 'parquet'"):
        load(tmp_path, "parquet")
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nope.txt", "sequences")
    with pytest.raises(DataError, match=r"no \*\.txt files"):
        load(tmp_path, "sequences")
    with pytest.raises(DataError, match="no events found"):
        load(write(tmp_path / "e.txt", "\n\n"), "sequences")
    with pytest.raises(DataError, match="fixed columns"):
        load(tmp_path / "e.txt", "sequences", columns={"user_id": "u"})
    assert set(FORMATS) == {"recbole", "sequences", "pairs", "gru4rec", "taobao", "diginetica", "csv"}


def test_describe():
    ev = [I("a", "x", "click", 5), I("b", "x", "buy", 1), I("a", "y", "click", 9)]
    d = describe(ev)
    assert (d["rows"], d["users"], d["items"], d["event_types"], d["ts_min"], d["ts_max"]) == (
        3, 2, 2, {"click": 2, "buy": 1}, 1, 9)
    assert describe([])["rows"] == 0


# ---- the real data sets reproduce the README's counts exactly --------------------------------


def counts(ev: list[Interaction]) -> tuple[int, int, int]:
    d = describe(ev)
    return d["rows"], d["users"], d["items"]


@pytest.mark.shared_data
def test_ml100k(real_events):
    ev = real_events("ml-100k", "recbole")
    assert counts(ev) == (100_000, 943, 1_682)
    assert describe(ev)["event_types"] == {"click": 100_000}
    assert (ev[0].user_id, ev[0].item_id, ev[0].ts) == ("196", "242", 881250949000)


@pytest.mark.shared_data
def test_beauty(data_dir, real_events):
    ev = load(data_dir / "beauty" / "Beauty.txt", "sequences")
    assert counts(ev) == (198_502, 22_363, 12_101)
    seqs = by_user(ev)
    assert all(b.ts - a.ts == SYNTHETIC_STEP_MS for s in seqs.values() for a, b in zip(s, s[1:]))


@pytest.mark.shared_data
def test_yoochoose_per_file_and_together(data_dir, real_events):
    d = data_dir / "yoochoose-100k"
    train = load(d / "yoochoose-clicks-100k_train_full.txt", "gru4rec")
    test = load(d / "yoochoose-clicks-100k_test.txt", "gru4rec")
    assert counts(train) == (70_278, 17_794, 2_933)
    assert counts(test) == (13_568, 3_416, 1_771)
    both = real_events("yoochoose-100k", "gru4rec")
    # The README's 2,933 items is both the train file's count and the union's: every test item
    # also occurs in train. Sessions of the two files are disjoint (17,794 + 3,416 = 21,210).
    assert counts(both) == (70_278 + 13_568, 17_794 + 3_416, 2_933)
    assert max(e.ts for e in train) < min(e.ts for e in test)  # the files are a time cut


@pytest.mark.shared_data
def test_taobao(real_events):
    ev = real_events("taobao-tiny", "taobao")
    assert counts(ev) == (4_321, 43, 3_276)
    assert describe(ev)["event_types"] == {"browse": 3_926, "cart": 190, "fav": 128, "buy": 77}


@pytest.mark.shared_data
def test_diginetica(real_events):
    ev = real_events("diginetica-sample", "diginetica")
    assert counts(ev) == (12_391, 2_986, 7_139)
    assert ev[0] == I("1", "81766", "browse", 1462752000000 + 526309)
