"""Export -> bundle -> runtime: parity with PyTorch, refusal of bad bundles, torch-free runtime."""
import json
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
    assert set(m["files"]) == {"step.onnx", "items.json", "event_types.json"}
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


def test_a_model_attending_over_the_window_is_refused_before_anything_is_written(tmp_path):
    """The exported step has no window input yet (issue 12): export says so instead of failing mid-trace."""
    ckpt, _ = train_small(small_events(users=60, items=40, seed=6), epochs=1, attention=4)
    with pytest.raises(ValueError, match="attention=4.*cannot be served"):
        export_bundle(ckpt, tmp_path / "b")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".bundle-*"))


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
