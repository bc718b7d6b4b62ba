"""Exported graphs of the issue-12 options that change scoring and attention: cosine scores against a
unit item table precomputed at export, and multi-head attention over the recent-items window."""
import numpy as np

from streamrec.export import contract
from streamrec.export.onnx_export import export_bundle
from streamrec.export.runtime import Bundle
from tests.factories import small_events, train_small

A, A_M = 4, 200  # the attention window, and a seen window m that covers the catalog (exact ranks)


def test_a_cosine_bundle_scores_against_a_precomputed_unit_table(tmp_path):
    """Cosine scores with attention: parity (step and runs graphs), and neither graph normalizes the catalog
    at every call: the item embeddings are read only by the input lookups, the scores use a constant unit table."""
    import onnx
    from onnx import numpy_helper

    ckpt, _ = train_small(small_events(users=120, items=60, seed=5), epochs=1, cosine=20.0, attention=A)
    _, report = export_bundle(ckpt, tmp_path / "cos", k=5, m=A_M)
    assert report.ok, report.text()
    unit = ckpt.model.scoring_table().detach().numpy()
    assert np.allclose(np.linalg.norm(unit[1:], axis=1), 1.0, atol=1e-5)
    for name in (contract.STEP_FILE, contract.RUNS_FILE):
        g = onnx.load(str(tmp_path / "cos" / name)).graph
        assert {n.op_type for n in g.node if "model.item_emb.weight" in n.input} == {"Gather"}, name
        tables = [numpy_helper.to_array(i) for i in g.initializer if unit.shape in (tuple(i.dims), tuple(i.dims)[::-1])]
        assert any(np.array_equal(t if t.shape == unit.shape else t.T, unit) for t in tables), name


def test_multi_head_attention_exports_and_passes_parity(tmp_path):
    ckpt, _ = train_small(small_events(users=120, items=60, seed=7), epochs=1, attention=A, heads=2)
    manifest, report = export_bundle(ckpt, tmp_path / "mh", k=5, m=A_M)
    assert report.ok, report.text()
    assert manifest.attention == A and manifest.training["config"]["heads"] == 2
    b = Bundle.load(tmp_path / "mh")
    h, c = b.init_state(3)
    out = b.step(np.array([2, 3, 1]), np.array([2, 2, 3]), np.array([0, 5, 9]), h, c,
                 window=contract.windows_of([(2,), (5, 3), ()], A))
    assert (out.top_items > 1).all() and np.isfinite(out.top_scores).all()
