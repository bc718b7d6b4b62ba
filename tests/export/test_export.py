"""Export -> bundle -> runtime: parity with PyTorch, refusal of bad bundles, torch-free runtime."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamrec.export import contract
from streamrec.export.bundle_eval import evaluate_bundle
from streamrec.export.manifest import BundleError
from streamrec.export.onnx_export import export_bundle
from streamrec.export.parity import ParityError, check_parity
from streamrec.export.runtime import Bundle
from streamrec.model.checkpoint import Checkpoint
from streamrec.model.train import evaluate_model
from tests.factories import small_events, train_small


@pytest.fixture(scope="module")
def trained():
    return train_small(small_events(users=250, items=100, seed=3), protocol="temporal", epochs=3, layers=2)


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    ckpt, _ = trained
    out = tmp_path_factory.mktemp("b") / "bundle"
    manifest, report = export_bundle(ckpt, out, k=10, m=200)  # m covers the catalog: exact ranks
    assert report.ok, report.text()
    return out


def test_parity_report_covers_every_output(trained, bundle_dir):
    ckpt, _ = trained
    report = check_parity(ckpt, bundle_dir)
    names = " ".join(c.name for c in report.checks)
    for out in contract.OUTPUT_NAMES:
        assert out in names
    assert "batch 1" in names and "batch 8" in names and "batched vs one-by-one" in names
    assert report.ok, report.text()


def test_manifest_and_files(bundle_dir, trained):
    ckpt, _ = trained
    m = json.loads((bundle_dir / "manifest.json").read_text())
    assert m["layers"] == 2 and m["hidden"] == ckpt.model.cfg.hidden and m["n_items"] == len(ckpt.items)
    assert m["k"] == 10 and m["n_top"] == len(ckpt.items) - 2
    assert set(m["files"]) == {"step.onnx", "runs.onnx", "items.json", "event_types.json"}
    assert m["model_version"].startswith(m["model_id"])
    b = Bundle.load(bundle_dir)
    h, c = b.init_state(3)
    out = b.step(np.array([2, 3, 4]), np.array([2, 2, 3]), np.array([0, 5, 9]), h, c)
    assert out.h.shape == (2, 3, m["hidden"]) and out.top_items.shape == (3, m["n_top"])
    assert (out.top_items > 1).all()  # PAD and OOV never recommended
    assert (np.diff(out.top_scores, axis=1) <= 0).all()


def test_tampered_bundle_is_refused(bundle_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    with open(bad / "items.json", "a") as f:
        f.write(" ")
    with pytest.raises(BundleError, match="items.json: sha256 differs"):
        Bundle.load(bad)


def test_mismatched_dims_are_refused(bundle_dir, tmp_path):
    import shutil

    bad = tmp_path / "dims"
    shutil.copytree(bundle_dir, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["hidden"] += 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="axis H"):
        Bundle.load(bad)


def test_parity_with_first_order_tables_and_transition_prior(tmp_path):
    ckpt, _ = train_small(small_events(users=120, items=60, seed=4), epochs=1, first_order_dim=8, transitions=8)
    assert ckpt.model.succ_cnt.sum() > 0
    _, report = export_bundle(ckpt, tmp_path / "fo", k=5, m=5)
    assert report.ok, report.text()


def test_parity_with_cosine_scores(tmp_path):
    ckpt, _ = train_small(small_events(users=120, items=60, seed=5), epochs=1, cosine=10.0)
    _, report = export_bundle(ckpt, tmp_path / "cos", k=5, m=5)
    assert report.ok, report.text()


# ---- attention over the recent-items window (issue 12) ------------------------------------------
A, A_M = 4, 200  # the attention window, and a seen window m that covers the catalog (exact ranks)


@pytest.fixture(scope="module")
def attention_trained():
    return train_small(small_events(users=120, items=60, seed=6), epochs=1, attention=A)


@pytest.fixture(scope="module")
def attention_bundle(attention_trained, tmp_path_factory):
    ckpt, _ = attention_trained
    out = tmp_path_factory.mktemp("att") / "bundle"
    manifest, report = export_bundle(ckpt, out, k=10, m=A_M)
    assert report.ok, report.text()
    assert manifest.attention == A
    return out


def test_an_attention_model_exports_with_a_window_input(attention_bundle):
    m = json.loads((attention_bundle / "manifest.json").read_text())
    assert m["attention"] == A and m["training"]["config"]["attention"] == A
    b = Bundle.load(attention_bundle)
    assert b.attention == A
    ins = {i.name: i.shape for i in b.session.get_inputs()}
    assert tuple(ins) == contract.INPUT_NAMES + ("window",) == contract.input_names(A)
    assert ins["window"][1] == A and not isinstance(ins["window"][0], int)  # [B, A], B dynamic
    h, c = b.init_state(3)
    out = b.step(np.array([2, 3, 1]), np.array([2, 2, 3]), np.array([0, 5, 9]), h, c,
                 window=contract.windows_of([(2,), (5, 3), ()], A))
    assert out.top_items.shape == (3, m["n_top"]) and (out.top_items > 1).all()


def test_attention_parity_covers_the_window(attention_trained, attention_bundle):
    """The gate feeds both sides the serving windows: a change to the attention weights alone is caught."""
    ckpt, _ = attention_trained
    assert check_parity(ckpt, attention_bundle).ok
    bad = type(ckpt.model)(ckpt.model.cfg)
    bad.load_state_dict(ckpt.model.state_dict())
    with torch.no_grad():
        bad.att_out.weight.mul_(1.5)
    report = check_parity(Checkpoint(bad.eval(), ckpt.items, ckpt.types, data=ckpt.data), attention_bundle)
    assert not report.ok and "batch 8 top_scores" in {c.name for c in report.failures()}
    assert not any("h_out" in c.name or "c_out" in c.name for c in report.failures())  # the LSTM is untouched


def test_T_onnx_steps_with_serving_windows_equal_the_torch_forward(attention_trained, attention_bundle):
    """The worker's rule, spelled out: remember the event's item (known items only) in the seen window,
    then pass windows_of(seen windows, A). OOV items and repeats included."""
    from streamrec.model.lstm import recent_windows
    from streamrec.streams.state import remember

    ckpt, _ = attention_trained
    b = Bundle.load(attention_bundle)
    n_items, T, B, m = ckpt.model.cfg.n_items, 40, 5, b.manifest.m
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, 12, (B, T), generator=g)  # a small range: many repeats, OOV (1) included
    types = torch.randint(1, len(ckpt.types), (B, T), generator=g)
    gaps = torch.randint(0, ckpt.model.cfg.n_gap_buckets, (B, T), generator=g)
    assert n_items > 12
    with torch.no_grad():
        full, _ = ckpt.model.eval()(items, types, gaps)  # windows from recent_windows, as in training
    h, c = b.init_state(B)
    seen = [()] * B
    for t in range(T):
        col = items[:, t].tolist()
        seen = [remember(s, x, m) if x > 1 else s for s, x in zip(seen, col)]
        window = contract.windows_of(seen, A)
        assert window.tolist() == recent_windows(items, A)[:, t].tolist()
        out = b.step(items[:, t].numpy(), types[:, t].numpy(), gaps[:, t].numpy(), h, c, window=window)
        h, c = out.h, out.c
        ref = full[:, t].numpy()
        assert np.abs(np.take_along_axis(ref, out.top_items, 1) - out.top_scores).max() <= contract.SCORE_ATOL


def test_attention_bundle_metrics_equal_checkpoint_metrics(attention_trained, attention_bundle):
    """Offline evaluation through the bundle (windows by the serving rule) equals the checkpoint's
    (windows by recent_windows over the whole history), by the history rule and by the serving rule."""
    from streamrec.export.bundle_eval import evaluate_bundle_on
    from streamrec.model.prepare import prepare

    ckpt, p = attention_trained
    b = Bundle.load(attention_bundle)
    ref = evaluate_model(ckpt.model, p.encoded, p.test)
    got = evaluate_bundle(b, p.encoded, p.test)
    assert got["n_targets"] == ref["n_targets"] > 50
    for key in ("HR@10", "NDCG@10", "MRR@10"):
        assert round(got[key], 4) == round(ref[key], 4), key
    events = small_events(users=120, items=60, seed=6)
    served = evaluate_bundle_on(b, events, "temporal")["model"]  # streamrec evaluate --bundle (mask serving)
    ps = prepare(events, "temporal", items=ckpt.items, types=ckpt.types, window=A_M)
    ref_s = evaluate_model(ckpt.model, ps.encoded, ps.test)
    for key in ("HR@10", "NDCG@10", "MRR@10"):
        assert round(served[key], 4) == round(ref_s[key], 4), key


def test_attention_bundle_step_needs_its_window_and_others_refuse_one(attention_bundle, bundle_dir):
    b = Bundle.load(attention_bundle)
    h, c = b.init_state(2)
    one = np.array([2, 3])
    with pytest.raises(ValueError, match=r"last 4 distinct items: pass window=\[B, 4\]"):
        b.step(one, one, one * 0, h, c)
    with pytest.raises(ValueError, match=r"window has shape \[2, 3\], expected \[2, 4\]"):
        b.step(one, one, one * 0, h, c, window=np.zeros((2, 3), np.int64))
    old = Bundle.load(bundle_dir)
    h, c = old.init_state(2)
    with pytest.raises(ValueError, match="does not attend.*pass no window"):
        old.step(one, one, one * 0, h, c, window=np.zeros((2, 4), np.int64))


def test_bundles_without_attention_are_unchanged(bundle_dir, tmp_path):
    """No ``attention`` key in their manifest (old bundles have none either), five graph inputs, no window."""
    import shutil

    from streamrec.export.manifest import Manifest

    text = (bundle_dir / "manifest.json").read_text()
    assert "attention" not in json.loads(text)
    assert Manifest.from_json(text).attention == 0
    b = Bundle.load(bundle_dir)
    assert b.attention == 0 and tuple(i.name for i in b.session.get_inputs()) == contract.INPUT_NAMES
    # a manifest that claims attention over a graph without the window input is refused
    bad = tmp_path / "claims"
    shutil.copytree(bundle_dir, bad)
    m = json.loads(text)
    m["attention"] = 4
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="differ from the contract"):
        Bundle.load(bad)


def test_an_indexed_attention_bundle_takes_the_window_too(attention_trained, attention_bundle, tmp_path):
    """Query graph with the window input: parity through the exact scan, the recall gate stepping serving
    windows, and an exhaustive index giving the full-scan bundle's lists."""
    from streamrec.export.ann import IndexSpec

    ckpt, _ = attention_trained
    manifest, report = export_bundle(ckpt, tmp_path / "ix", k=10, m=A_M, index=IndexSpec("flat"))
    assert report.ok, report.text()
    assert manifest.attention == A and manifest.index["recall"]["recall@10"] == 1.0
    ix, full = Bundle.load(tmp_path / "ix"), Bundle.load(attention_bundle)
    assert tuple(i.name for i in ix.session.get_inputs()) == contract.input_names(A)
    h, c = ix.init_state(2)
    window = contract.windows_of([(7, 2, 5), (3,)], A)
    a = ix.step(np.array([5, 3]), np.array([2, 2]), np.array([3, 0]), h, c, window=window)
    b = full.step(np.array([5, 3]), np.array([2, 2]), np.array([3, 0]), h, c, window=window)
    np.testing.assert_allclose(a.top_scores, b.top_scores, atol=contract.SCORE_ATOL)
    with pytest.raises(ValueError, match="pass window"):
        ix.step(np.array([5, 3]), np.array([2, 2]), np.array([3, 0]), h, c)


def test_attention_wider_than_the_seen_window_is_refused_before_anything_is_written(attention_trained, tmp_path):
    ckpt, _ = attention_trained
    with pytest.raises(ValueError, match=r"attention=4.*seen window is m=3.*--m 4 or more"):
        export_bundle(ckpt, tmp_path / "b", k=5, m=3)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".bundle-*"))
    _, report = export_bundle(ckpt, tmp_path / "b", k=5, m=A)  # m = A: the smallest it takes
    assert report.ok, report.text()


def test_runtime_never_imports_torch(bundle_dir):
    code = ("import sys; from streamrec.export.runtime import Bundle; b = Bundle.load(sys.argv[1]); "
            "h, c = b.init_state(1); import numpy as np; b.step(np.array([2]), np.array([2]), np.array([0]), h, c); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(bundle_dir)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parity_mismatch_is_reported_per_output(trained, bundle_dir):
    ckpt, _ = trained
    perturbed = type(ckpt.model)(ckpt.model.cfg)
    perturbed.load_state_dict(ckpt.model.state_dict())
    with torch.no_grad():
        perturbed.lstm.weight_hh_l0.add_(0.01)
    report = check_parity(Checkpoint(perturbed.eval(), ckpt.items, ckpt.types, data=ckpt.data), bundle_dir)
    assert not report.ok
    failed = {c.name for c in report.failures()}
    assert {"batch 1 h_out over 60 steps", "batch 8 c_out over 60 steps", "batch 8 top_scores"} <= failed
    assert "MISMATCH" in report.text()


def test_failed_parity_writes_nothing(trained, tmp_path, monkeypatch):
    ckpt, _ = trained
    import streamrec.export.onnx_export as ox
    real_write = ox.write_bundle

    def write_perturbed(ck, out, k, m, model_id=None):
        bad = type(ck.model)(ck.model.cfg)
        bad.load_state_dict(ck.model.state_dict())
        with torch.no_grad():
            bad.item_emb.weight.mul_(1.5)
        return real_write(Checkpoint(bad.eval(), ck.items, ck.types, data=ck.data), out, k, m, model_id)

    monkeypatch.setattr(ox, "write_bundle", write_perturbed)
    with pytest.raises(ParityError, match="top_scores"):
        export_bundle(ckpt, tmp_path / "never", k=10, m=20)
    assert not (tmp_path / "never").exists()
    assert not any(p.name.startswith(".bundle-") for p in tmp_path.iterdir())


def test_bundle_metrics_equal_checkpoint_metrics(trained, bundle_dir):
    ckpt, p = trained
    ref = evaluate_model(ckpt.model, p.encoded, p.test)
    got = evaluate_bundle(Bundle.load(bundle_dir), p.encoded, p.test)
    assert got["n_targets"] == ref["n_targets"] > 100
    for key in ("HR@10", "NDCG@10", "MRR@10"):
        assert round(got[key], 4) == round(ref[key], 4), key


def _rehash(bundle: Path) -> None:
    """Recompute the manifest's checksums after a file was swapped on purpose."""
    from streamrec.export.manifest import sha256_file

    m = json.loads((bundle / "manifest.json").read_text())
    m["files"] = {name: sha256_file(bundle / name) for name in m["files"]}
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_the_runs_graph_is_one_lstm_node_per_layer_and_serves_step(bundle_dir, trained):
    import onnx

    ckpt, _ = trained
    graph = onnx.load(str(bundle_dir / contract.RUNS_FILE)).graph
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstms) == ckpt.model.cfg.layers == 2 and all(n.input[4] == "length" for n in lstms)
    b = Bundle.load(bundle_dir)
    assert b.runs is not None and {i.name for i in b.runs.get_inputs()} == {t.name for t in contract.run_inputs()}
    assert b._session is None  # step.onnx is loaded when something steps it: the worker holds one graph
    # run: two users, 3 and 1 events, rows in any order, equal to step.onnx event by event
    items, types = np.array([[2, 5, 7], [9, 0, 0]]), np.array([[1, 2, 1], [2, 0, 0]])
    gaps = np.array([[0, 3, 1], [0, 0, 0]])
    h, c = b.init_state(2)
    out = b.run(items, types, gaps, h, c, np.array([3, 1]), np.array([3, 0, 2, 1]))
    ref = {}
    for t in range(3):
        users = [0, 1] if t == 0 else [0]
        h2, c2, ti, ts = b.session.run(None, b.feeds(items[users, t], types[users, t], gaps[users, t],
                                                      h[:, users], c[:, users]))
        h[:, users], c[:, users] = h2, c2
        for j, u in enumerate(users):
            ref[u * 3 + t] = (ti[j], ts[j])
    for r, flat in enumerate([3, 0, 2, 1]):
        assert np.array_equal(out.top_items[r], ref[flat][0]) and np.array_equal(out.top_scores[r], ref[flat][1])
    assert np.array_equal(out.h, h) and np.array_equal(out.c, c)
    with pytest.raises(ValueError, match=r"length must be in \[1, T=3\]"):
        b.run(items, types, gaps, h, c, np.array([3, 0]), np.array([0]))


def test_a_runs_graph_that_differs_from_step_fails_parity(trained, bundle_dir, tmp_path):
    """runs.onnx from a slightly different model (checksums made to match): the bit-for-bit gate fails,
    though every tolerance check against torch would pass."""
    import shutil

    from streamrec.export.onnx_export import export_runs_onnx

    ckpt, _ = trained
    other = type(ckpt.model)(ckpt.model.cfg)
    other.load_state_dict(ckpt.model.state_dict())
    with torch.no_grad():
        other.proj.bias.add_(1e-7)
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    export_runs_onnx(other.eval(), bad / contract.RUNS_FILE, json.loads((bad / "manifest.json").read_text())["n_top"])
    _rehash(bad)
    report = check_parity(ckpt, bad)
    assert [c.name for c in report.failures()] == ["runs.onnx vs step.onnx (bit for bit)"], report.text()


def test_a_bundle_from_before_the_runs_graph_still_serves(bundle_dir, trained, tmp_path):
    """Only step.onnx (bundles exported before runs.onnx): loads, steps, and ``run`` steps in waves."""
    import shutil

    bad = tmp_path / "old"
    shutil.copytree(bundle_dir, bad)
    (bad / contract.RUNS_FILE).unlink()
    m = json.loads((bad / "manifest.json").read_text())
    del m["files"][contract.RUNS_FILE]
    (bad / "manifest.json").write_text(json.dumps(m))
    old, new = Bundle.load(bad), Bundle.load(bundle_dir)
    assert old.runs is None and new.runs is not None
    items, types, gaps = np.array([[2, 5], [9, 4]]), np.array([[1, 2], [2, 1]]), np.array([[0, 3], [0, 2]])
    h, c = new.init_state(2)
    a = old.run(items, types, gaps, h, c, np.array([2, 1]), np.array([0, 1, 2]))
    b = new.run(items, types, gaps, h, c, np.array([2, 1]), np.array([0, 1, 2]))
    for x, y in zip((a.h, a.c, a.top_items, a.top_scores), (b.h, b.c, b.top_items, b.top_scores)):
        assert np.array_equal(x, y)
    assert check_parity(trained[0], bad).ok
