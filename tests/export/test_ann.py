"""Two-stage bundles (export --index): the index travels in the bundle, checksummed; recall is
computed right; an exhaustive index gives exactly the full scan's lists; the gate refuses."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from streamrec.export import contract
from streamrec.export.ann import IndexSpec, ItemIndex, recall
from streamrec.export.bundle_eval import evaluate_bundle
from streamrec.export.manifest import BundleError
from streamrec.export.onnx_export import export_bundle
from streamrec.export.parity import _event_matrix
from streamrec.export.recall import RecallError, measure, scoring_vectors
from streamrec.export.runtime import Bundle
from tests.factories import small_events, train_small

K, M = 10, 20
#: an index that misses on purpose: 2 links per node, built with a search width of 4
COARSE = IndexSpec("hnsw", {"M": 2, "ef_construction": 4, "ef_search": 1})


@pytest.fixture(scope="module")
def trained():
    return train_small(small_events(users=200, items=300, seed=7), epochs=2)


@pytest.fixture(scope="module")
def bundles(trained, tmp_path_factory):
    ckpt, _ = trained
    root = tmp_path_factory.mktemp("ann")
    out = {"exact": root / "exact", "flat": root / "flat", "hnsw": root / "hnsw", "ivf": root / "ivf"}
    export_bundle(ckpt, out["exact"], k=K, m=M)
    export_bundle(ckpt, out["flat"], k=K, m=M, index=IndexSpec("flat"))
    # ef_search >= the catalog: the graph search visits every item, so it is exhaustive too
    export_bundle(ckpt, out["hnsw"], k=K, m=M, index=IndexSpec("hnsw", {"M": 8, "ef_search": 400}))
    # nprobe = nlist: every list is scanned, exhaustive as well (through the L2 transform of export/ann.py)
    export_bundle(ckpt, out["ivf"], k=K, m=M, index=IndexSpec("ivf", {"nlist": 8, "nprobe": 8}))
    return out


def test_index_round_trips_through_the_bundle(bundles, trained):
    ckpt, _ = trained
    mf = json.loads((bundles["hnsw"] / contract.MANIFEST_FILE).read_text())
    ix = mf["index"]
    assert ix["kind"] == "hnsw" and ix["library"] == "faiss-cpu" and ix["params"]["M"] == 8
    assert set(mf["files"]) == {"step.onnx", "runs.onnx", "items.json", "event_types.json", ix["file"], ix["table"]}
    assert ix["dim"] == ckpt.model.cfg.dim + 1 and ix["candidates"] == K + M
    assert set(ix["recall"]) >= {"recall@10", f"recall@{K + M}", "states", "threshold"}
    b = Bundle.load(bundles["hnsw"])
    assert b.indexed and b.index.size == len(ckpt.items) - 2 and b.index.dim == ix["dim"]
    assert b.index.index.hnsw.efSearch == 400
    # the table is the model's scoring layer: [v, b] per item
    v, bias = ckpt.model.output_table().detach().numpy(), ckpt.model.bias.detach().numpy()
    np.testing.assert_allclose(b.table[:, :-1], v, atol=0)
    np.testing.assert_allclose(b.table[:, -1], bias, atol=0)
    # a full-scan bundle's manifest has no index entry
    assert "index" not in json.loads((bundles["exact"] / contract.MANIFEST_FILE).read_text())


@pytest.mark.parametrize("name", [contract.INDEX_FILE, contract.TABLE_FILE])
def test_tampered_index_or_table_is_refused(bundles, tmp_path, name):
    bad = tmp_path / "bad"
    shutil.copytree(bundles["hnsw"], bad)
    with open(bad / name, "r+b") as f:  # flip one byte in the middle
        f.seek(f.seek(0, 2) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=f"{name}: sha256 differs"):
        Bundle.load(bad)
    (bad / name).unlink()
    with pytest.raises(BundleError, match=f"{name}: missing"):
        Bundle.load(bad)


def test_index_of_another_catalog_is_refused(bundles, tmp_path):
    """A well-formed index whose size disagrees with the manifest (checksums made to match)."""
    from streamrec.export.ann import build
    from streamrec.export.manifest import sha256_file

    bad = tmp_path / "other"
    shutil.copytree(bundles["hnsw"], bad)
    table = np.load(bad / contract.TABLE_FILE)
    mf = json.loads((bad / contract.MANIFEST_FILE).read_text())
    for kind, params, error in (("hnsw", {"M": 8, "ef_construction": 40}, "vectors of dim"),
                                ("flat", {}, "IndexFlatIP, the manifest says hnsw")):
        build(table[:-5], kind, params, bad / contract.INDEX_FILE)
        mf["files"][contract.INDEX_FILE] = sha256_file(bad / contract.INDEX_FILE)
        (bad / contract.MANIFEST_FILE).write_text(json.dumps(mf))
        with pytest.raises(BundleError, match=error):
            Bundle.load(bad)


def test_ivf_searches_the_l2_transform_and_reads_inner_product_ivf_files(bundles, tmp_path):
    """The ivf file is the L2 transform (a zero-padding remap onto an L2 IVF one dimension wider) and
    answers plain queries; an inner-product IVF file (bundles exported before the transform) still
    loads and answers the same, and an L2 IVF without the remap is refused."""
    import faiss

    from streamrec.export.manifest import sha256_file

    b = Bundle.load(bundles["ivf"])
    mf = b.manifest.index
    assert type(b.index.index) is faiss.IndexPreTransform and b.index.dim == mf["dim"]
    inner = faiss.extract_index_ivf(b.index.index)
    assert inner.metric_type == faiss.METRIC_L2 and inner.d == mf["dim"] + 1 and inner.nprobe == 8
    # every row of the transformed table has the same norm: nearest in L2 = largest inner product
    q = np.random.default_rng(0).normal(size=(5, mf["dim"])).astype(np.float32)
    q[:, -1] = 1
    full = q @ np.asarray(b.table[2:]).T
    np.testing.assert_array_equal(b.index.search(q, 15), np.argsort(-full, axis=1, kind="stable")[:, :15] + 2)

    old = tmp_path / "ip-ivf"
    shutil.copytree(bundles["ivf"], old)
    x = np.ascontiguousarray(np.load(old / contract.TABLE_FILE)[2:])
    d = x.shape[1]
    for index, error in ((faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, 8, faiss.METRIC_INNER_PRODUCT), None),
                         (faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, 8, faiss.METRIC_L2), "does not rank by inner")):
        index.train(x)
        index.add(x)
        faiss.write_index(index, str(old / contract.INDEX_FILE))
        m = json.loads((old / contract.MANIFEST_FILE).read_text())
        m["files"][contract.INDEX_FILE] = sha256_file(old / contract.INDEX_FILE)
        (old / contract.MANIFEST_FILE).write_text(json.dumps(m))
        if error is None:
            np.testing.assert_array_equal(Bundle.load(old).index.search(q, 15), b.index.search(q, 15))
        else:
            with pytest.raises(BundleError, match=error):
                Bundle.load(old)


def test_recall_on_a_known_catalog(tmp_path):
    # hand-made lists: 2 of the exact top-4 found in row 0, all 4 in row 1 (order inside does not matter)
    exact = np.array([[5, 6, 7, 8], [1, 2, 3, 4]])
    approx = np.array([[5, 9, 8, 10], [4, 3, 2, 1]])
    assert recall(approx, exact, 4) == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert recall(approx, exact, 1) == pytest.approx((1 + 0) / 2)
    # an index over a catalog whose exact answer is known: items on a circle, bias 0, query = item 7's
    # direction: the exact top-3 are 7 and its two neighbours
    n, d = 40, 2
    ang = 2 * np.pi * np.arange(n) / n
    table = np.zeros((n + 2, d + 1), np.float32)
    table[2:, 0], table[2:, 1] = np.cos(ang), np.sin(ang)
    from streamrec.export.ann import build

    build(table, "flat", {}, tmp_path / "i.faiss")
    ix = ItemIndex(tmp_path / "i.faiss", "flat", {})
    q = np.array([[np.cos(ang[7]), np.sin(ang[7]), 1.0]], np.float32)
    got = ix.search(q, 3)
    assert got[0, 0] == 7 + 2 and set(got[0].tolist()) == {6 + 2, 7 + 2, 8 + 2}
    assert recall(got, np.array([[9, 8, 10]]), 3) == 1.0


def test_recall_report_equals_an_independent_count(trained, tmp_path):
    """A sparse graph (2 links per node) misses items; measure() agrees with brute force numpy."""
    ckpt, _ = trained
    seqs = ckpt.data["parity_sample"]
    manifest, _ = export_bundle(ckpt, tmp_path / "sparse", k=K, m=M, index=COARSE, min_recall=0.0)
    b = Bundle.load(tmp_path / "sparse")
    rep = measure(b, seqs, threshold=0.0)
    q = scoring_vectors(b, seqs)
    assert rep.states == len(q) == sum(len(s["items"]) for s in seqs)
    full = q @ np.asarray(b.table).T
    full[:, :2] = -np.inf
    exact = np.argsort(-full, axis=1, kind="stable")[:, :K + M]
    cand = b.index.search(q, K + M)
    rescored = np.where(cand >= 0, np.take_along_axis(full, np.maximum(cand, 0), 1), -np.inf)
    approx = np.take_along_axis(cand, np.argsort(-rescored, axis=1, kind="stable"), 1)
    assert (cand >= 0).all() and rep.full_scan_rows == 0  # a graph search always fills its list
    ours10 = np.mean([len(set(a[:10]) & set(e[:10])) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
    ours_n = np.mean([len(set(a) & set(e)) / (K + M) for a, e in zip(approx.tolist(), exact.tolist())])
    assert rep.recall_at_10 == pytest.approx(ours10, abs=1e-9)
    assert rep.recall_at_n == pytest.approx(ours_n, abs=1e-9)
    assert rep.recall_at_n < 1.0  # the coarse index really misses: the test measures something
    assert manifest.index["recall"]["recall@10"] == pytest.approx(rep.recall_at_10, abs=1e-5)


def test_recall_gate_refuses_and_writes_nothing(trained, tmp_path):
    ckpt, _ = trained
    manifest, _ = export_bundle(ckpt, tmp_path / "ok", k=K, m=M, index=COARSE, min_recall=0.0)
    got = manifest.index["recall"]["recall@10"]
    assert got < 1.0
    with pytest.raises(RecallError, match="recall@10"):
        export_bundle(ckpt, tmp_path / "never", k=K, m=M, index=COARSE, min_recall=got + 1e-4)
    assert not (tmp_path / "never").exists()
    assert not any(p.name.startswith(".bundle-") for p in tmp_path.iterdir())


def test_short_candidate_lists_fall_back_to_the_full_scan(trained, tmp_path):
    """An IVF list smaller than k + m: the row is answered by the full scan (never a -1 id), and counted."""
    ckpt, _ = trained
    export_bundle(ckpt, tmp_path / "ivf", k=K, m=M, index=IndexSpec("ivf", {"nlist": 64, "nprobe": 1}), min_recall=0)
    b = Bundle.load(tmp_path / "ivf")
    q = scoring_vectors(b, ckpt.data["parity_sample"])
    short = int((b.index.search(q, K + M) < 0).any(axis=1).sum())
    ti, ts = b.top_indexed(q)
    assert short > 0 and b.full_scan_rows == short and (ti >= 2).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_exhaustive_index_gives_the_full_scan_lists(bundles, trained, kind):
    """Every step of the recorded sequences, batch 1 and 8, states carried: the same ids as the graph's
    TopK (except between scores tied within the contract's tolerance), the same scores and states."""
    ckpt, _ = trained
    exact, approx = Bundle.load(bundles["exact"]), Bundle.load(bundles[kind])
    for batch in (1, 8):
        ev = _event_matrix(ckpt.data["parity_sample"], batch, 40)
        he, ce = exact.init_state(batch)
        ha, ca = approx.init_state(batch)
        for t in range(ev.shape[1]):
            a = exact.step(ev[0, t], ev[1, t], ev[2, t], he, ce)
            b = approx.step(ev[0, t], ev[1, t], ev[2, t], ha, ca)
            he, ce, ha, ca = a.h, a.c, b.h, b.c
            np.testing.assert_allclose(b.h, a.h, atol=contract.STATE_ATOL)
            np.testing.assert_allclose(b.top_scores, a.top_scores, atol=contract.SCORE_ATOL)
            differ = a.top_items != b.top_items
            if differ.any():  # only where neighbouring scores tie
                gaps = np.abs(np.diff(a.top_scores, axis=1)).min(axis=1)
                assert (gaps[differ.any(axis=1)] <= contract.SCORE_ATOL).all()


def test_evaluate_reports_index_and_exact_scan(bundles, trained):
    from streamrec.export.bundle_eval import evaluate_bundle_on

    ckpt, p = trained
    b = Bundle.load(bundles["flat"])
    got = evaluate_bundle(b, p.encoded, p.test)
    ref = evaluate_bundle(Bundle.load(bundles["exact"]), p.encoded, p.test)
    assert got["n_targets"] == ref["n_targets"] > 50
    for key in ("HR@10", "NDCG@10"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    events = small_events(users=200, items=300, seed=7)
    doc = evaluate_bundle_on(b, events, "temporal")
    assert set(doc) >= {"model", "model_exact"} and doc["model"]["HR@10"] == pytest.approx(doc["model_exact"]["HR@10"])


def test_transition_prior_cannot_be_indexed(tmp_path):
    ckpt, _ = train_small(small_events(users=100, items=60, seed=4), epochs=1, transitions=4)
    with pytest.raises(ValueError, match="transition prior"):
        export_bundle(ckpt, tmp_path / "t", k=5, m=5, index=IndexSpec("hnsw"))
    assert not (tmp_path / "t").exists()


def test_indexed_runtime_never_imports_torch(bundles):
    code = ("import sys; from streamrec.export.runtime import Bundle; b = Bundle.load(sys.argv[1]); "
            "h, c = b.init_state(1); import numpy as np; b.step(np.array([2]), np.array([2]), np.array([0]), h, c); "
            "print(b.indexed, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(bundles["hnsw"])], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_cli_index_flags(trained, tmp_path, capsys):
    from streamrec.cli.main import main
    from streamrec.model import checkpoint

    ckpt, _ = trained
    checkpoint.save(ckpt, tmp_path / "model")
    assert main(["export", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "b"), "--k", "5", "--m", "5",
                 "--index", "hnsw", "--hnsw-m", "8", "--ef-search", "64"]) == 0
    out = capsys.readouterr().out
    assert "index hnsw" in out and "recall@10" in out
    assert Bundle.load(tmp_path / "b").manifest.index["params"]["ef_search"] == 64
    assert main(["export", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "c"),
                 "--index", "flat", "--nprobe", "4"]) != 0
    assert "--nprobe do not apply to --index flat" in capsys.readouterr().err
