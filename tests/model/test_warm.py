"""Incremental retraining (issue 10 item 4): the vocabulary grows without moving an id, the earlier
model's rows carry over exactly, new items get fresh rows and the new bundle serves them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.model import checkpoint
from streamrec.model.events import Interaction
from streamrec.model.lstm import LSTMConfig, LSTMRecommender
from streamrec.model.pipeline import train
from streamrec.model.train import TrainConfig
from streamrec.model.vocab import Vocab
from streamrec.model.warm import grow, grown_config, require_extension
from tests.factories import small_events, train_small


def test_extended_keeps_every_index_and_adds_by_frequency() -> None:
    old = Vocab(["a", "b", "c"])
    new = old.extended(["z", "b", "y", "z", "x", "y", "z", "a"])
    assert new.ids == ["a", "b", "c", "z", "y", "x"] and new.extends(old) and not old.extends(new)
    assert all(new.index(t) == old.index(t) for t in old.ids)
    assert old.extended([]) == old and old.extended(["q"], min_count=2) == old
    assert not Vocab(["b", "a", "c", "d"]).extends(old)  # same ids, another order: not an extension
    require_extension(old, new, "item")  # an extension passes
    with pytest.raises(ValueError, match=r"item vocabulary is not an extension.*id #1 is 'b', the checkpoint's 'a'"):
        require_extension(old, Vocab(["b", "a", "c", "d"]), "item")
    with pytest.raises(ValueError, match=r"id #3 is 'nothing'"):
        require_extension(old, Vocab(["a", "b"]), "item")


def test_grow_copies_the_old_rows_and_keeps_fresh_ones_for_new_items() -> None:
    torch.manual_seed(1)
    old = LSTMRecommender(LSTMConfig(n_items=12, n_event_types=4, dim=8, hidden=10, item_bias=True))
    with torch.no_grad():
        old.bias.uniform_(-1, 1)
    cfg = grown_config(old.cfg, 20, 5)
    torch.manual_seed(2)
    fresh = LSTMRecommender(cfg)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    grown = grow(old, fresh)
    s, o = grown.state_dict(), old.state_dict()
    assert torch.equal(s["item_emb.weight"][:12], o["item_emb.weight"])
    assert torch.equal(s["item_emb.weight"][12:], before["item_emb.weight"][12:])
    assert torch.equal(s["bias"][:12], o["bias"]) and torch.equal(s["bias"][12:], before["bias"][12:])
    assert torch.equal(s["type_emb.weight"][:4], o["type_emb.weight"])
    for name in ("lstm.weight_ih_l0", "proj.weight", "norm.weight"):
        assert torch.equal(s[name], o[name])
    with pytest.raises(ValueError, match="shrank"):
        grown_config(old.cfg, 10, 4)
    other = LSTMRecommender(LSTMConfig(n_items=20, n_event_types=5, dim=8, hidden=16))
    with pytest.raises(ValueError, match="lstm.*here"):
        grow(old, other)


def test_init_from_continues_on_newer_data_and_the_bundle_serves_new_items(tmp_path: Path) -> None:
    events = sorted(small_events(users=200, items=100, seed=4), key=lambda e: e.ts)
    first = events[: len(events) // 2]
    first_items = {e.item_id for e in first}
    new_item = "brand-new-item"  # appears only in the newer data
    n = len(events)  # the new item in the newer half, before the temporal cutoff (90th percentile): trained on
    later = events + [Interaction(e.user_id, new_item, e.event_type, e.ts + 1) for e in events[n * 6 // 10:n * 8 // 10:3]]
    old_ckpt, _ = train_small(first, epochs=2)
    checkpoint.save(old_ckpt, tmp_path / "old")
    old = checkpoint.load(tmp_path / "old")
    # lr 0 (and no EMA): training moves no weight, so the result is exactly the grown model
    doc = train(later, "temporal", tmp_path / "new", train_cfg=TrainConfig(epochs=1, lr=0.0, ema=0.0, item_mask=0.0),
                progress=False, with_baselines=False, init_from=old)
    new = checkpoint.load(tmp_path / "new")
    assert new.items.extends(old.items) and new_item in new.items and new_item not in first_items
    assert doc["init_from"]["items_added"] == len(new.items) - len(old.items) >= 1
    n_old = len(old.items)
    w_old, w_new = old.model.item_emb.weight.detach(), new.model.item_emb.weight.detach()
    assert torch.equal(w_new[:n_old], w_old) and w_new.shape[0] == len(new.items)
    assert not torch.equal(w_new[n_old:], torch.zeros_like(w_new[n_old:]))  # fresh rows, not zeros
    assert new.model.cfg.dim == old.model.cfg.dim and new.model.cfg.hidden == old.model.cfg.hidden

    from streamrec.export.onnx_export import export_bundle
    from streamrec.export.runtime import Bundle

    export_bundle(new, tmp_path / "bundle", k=10, m=20)
    bundle = Bundle.load(tmp_path / "bundle")
    idx = int(bundle.items.indices([new_item])[0])
    assert idx >= n_old  # a real id, after every old one: not the out-of-vocabulary slot
    h, c = bundle.init_state(1)
    out = bundle.step(np.array([idx]), np.array([bundle.types.index("click")]), np.array([0]), h, c)
    assert out.top_items.shape[1] == bundle.k + bundle.manifest.m


def test_the_cli_refuses_what_it_cannot_continue_from(tmp_path: Path) -> None:
    data = tmp_path / "events.csv"
    from streamrec.model.synth import CSV_COLUMNS, write_csv

    write_csv(small_events(users=30, items=20, seed=1), data)
    run = lambda *a: subprocess.run([sys.executable, "-m", "streamrec.cli.main", "train", "--data", str(data),  # noqa: E731
                                     "--format", "csv", "--columns", CSV_COLUMNS, "--out", str(tmp_path / "o"),
                                     "--epochs", "1", "--no-baselines", *a], capture_output=True, text=True,
                                    timeout=300)
    missing = run("--init-from", str(tmp_path / "nothing"))
    assert missing.returncode != 0 and "--init-from" in missing.stderr and "no checkpoint" in missing.stderr
    old_ckpt, _ = train_small(small_events(users=30, items=20, seed=1), epochs=1)
    checkpoint.save(old_ckpt, tmp_path / "old")
    refit = run("--init-from", str(tmp_path / "old"), "--refit")
    assert refit.returncode != 0 and "cannot be combined with --init-from" in refit.stderr
