"""Training-only options: seen-item masking in the loss, item dropout, weight averaging."""
import numpy as np
import torch

from streamrec.model.config import TrainConfig
from streamrec.model.encode import Encoded
from streamrec.model.lstm import LSTMConfig, LSTMRecommender
from streamrec.model.losses import mask_items as _mask_items, mask_seen as _mask_seen
from streamrec.model.train import fit, train_epoch, transition_table
from tests.factories import chain_data


def test_mask_seen_by_hand():
    history = torch.tensor([[2, 5, 3, 6]])  # the inputs from the user's first event
    target = torch.tensor([[5, 3, 4, 2]])  # the next item at each position (4 -> 2 is a repeat)
    out = _mask_seen(torch.zeros(1, 4, 8), history, 0, target)
    # position t masks the inputs 0..t except its own target (slots left unmasked write to the
    # PAD column 0, never a target, so it is left out here)
    masked = [sorted(set(np.flatnonzero(row.numpy() < -1e8).tolist()) - {0}) for row in out[0]]
    assert masked == [[2], [2, 5], [2, 3, 5], [3, 5, 6]]
    assert (out[0, :, 1:] > -1e8).sum().item() == 4 * 7 - 9  # nothing else is touched
    # a later chunk (positions 2, 3) still masks the items of earlier chunks
    tail = _mask_seen(torch.zeros(1, 2, 8), history, 2, target[:, 2:])
    assert torch.equal(tail, out[:, 2:])


def test_mask_items_only_touches_real_items():
    items = torch.tensor([[2, 3, 4, 0, 1, 5] * 200])
    out = _mask_items(items, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out[items <= 1], items[items <= 1])  # PAD and OOV stay
    changed = out != items
    assert (out[changed] == 1).all()
    assert 0.25 < changed[items > 1].float().mean().item() < 0.35


def _toy():
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(60):
        start = int(rng.integers(2, 20))
        items = np.array([2 + (start + k) % 20 for k in range(12)], dtype=np.int64)  # i -> i+1 chains
        seqs.append(Encoded(items, np.ones(12, np.int64), np.zeros(12, np.int64), np.arange(12, dtype=np.int64)))
    return seqs


def _toy_fit():
    """The toy users, their first 10 events to fit, the 11th as validation target, a small model."""
    from streamrec.model.encode import build_targets

    seqs = _toy()
    encoded = {str(u): s for u, s in enumerate(seqs)}
    fit_seqs = [Encoded(s.items[:10], s.types[:10], s.gaps[:10], s.ts[:10]) for s in seqs]
    valid = build_targets(encoded, [(u, 10) for u in encoded])
    return seqs, encoded, fit_seqs, valid, LSTMConfig(n_items=22, n_event_types=3, dim=16, hidden=16, dropout=0.1)


def test_fit_with_every_training_option_learns_a_chain():
    _, encoded, fit_seqs, valid, cfg = _toy_fit()
    model, history = fit(cfg, TrainConfig(epochs=12, batch_size=16, lr=1e-2, mask_seen=True, item_mask=0.1,
                                          ema=0.9, threads=1), fit_seqs, encoded, valid, progress=False)
    assert history[-1]["valid_HR@10"] > 0.9
    assert all(np.isfinite(h["loss"]) for h in history)


def test_fit_records_the_learning_rate_path_and_refit_replays_it():
    from streamrec.model.encode import build_targets
    from streamrec.model.train import evaluate_model, refit

    seqs, encoded, fit_seqs, valid, cfg = _toy_fit()
    tc = TrainConfig(epochs=6, batch_size=16, lr=1e-2, lr_decay=0.5, patience=6, threads=1)
    _, history = fit(cfg, tc, fit_seqs, encoded, valid, progress=False)
    best = max(history, key=lambda h: h["valid_NDCG@10"])
    assert len(best["lr_path"]) <= best["epoch"] and best["lr_path"][0] == 1e-2
    # the path of an epoch = the path of the best epoch before it (after a revert) + its own lr
    for h in history:
        assert h["lr_path"][-1] == h["lr"]
    model = refit(cfg, tc, seqs, best["lr_path"], progress=False)  # all 12 events of each user
    test = build_targets(encoded, [(u, 11) for u in encoded])
    assert evaluate_model(model, encoded, test)["HR@10"] > 0.9


def test_known_events_add_the_validation_targets():
    from streamrec.model.events import Interaction
    from streamrec.model.pipeline import known_events
    from streamrec.model.prepare import prepare

    ev = [Interaction("a", i, "click", 1000 * k) for k, i in enumerate("pqrst")]  # 5 events
    ev += [Interaction("b", i, "click", 1000 * k) for k, i in enumerate("pq")]  # too short: training only
    p = prepare(ev, "loo-full")
    known = {len(s): s for s in known_events(p)}
    assert sorted(known) == [2, 4]  # a: all but the test target (t); b: everything
    assert known[4].items.tolist() == p.encoded["a"].items[:4].tolist()
    assert sorted(len(s) for s in p.fit) == [2, 3]  # the fitted part stops before the validation target


def test_finetune_continues_on_the_validation_targets():
    from streamrec.model.encode import build_targets
    from streamrec.model.train import evaluate_model

    seqs = _toy()
    encoded = {str(u): s for u, s in enumerate(seqs)}
    cut = lambda s, k: Encoded(s.items[:k], s.types[:k], s.gaps[:k], s.ts[:k])  # noqa: E731
    valid = build_targets(encoded, [(u, 10) for u in encoded])
    cfg = LSTMConfig(n_items=22, n_event_types=3, dim=16, hidden=16, dropout=0.1)
    tc = TrainConfig(epochs=4, patience=4, batch_size=16, lr=1e-2, threads=1, finetune=2, finetune_lr=0.5)
    model, history = fit(cfg, tc, [cut(s, 10) for s in seqs], encoded, valid, progress=False,
                         known=[cut(s, 11) for s in seqs])
    fit_rows = [h for h in history if h.get("phase") != "finetune"]
    tune_rows = [h for h in history if h.get("phase") == "finetune"]
    assert len(fit_rows) == 4 and [h["epoch"] for h in tune_rows] == [5, 6]
    assert all(h["lr"] == 1e-2 * 0.5 and np.isfinite(h["loss"]) and "valid_NDCG@10" not in h
               for h in tune_rows)
    test = build_targets(encoded, [(u, 11) for u in encoded])
    assert evaluate_model(model, encoded, test)["HR@10"] > 0.9


def test_mask_seen_on_selected_positions_equals_the_full_mask():
    history = torch.tensor([[2, 5, 3, 6], [4, 2, 0, 0]])
    target = torch.tensor([[5, 3, 4, 2], [2, 0, 0, 0]])
    scores = torch.randn(2, 4, 8)
    sel = target > 1
    full = _mask_seen(scores, history, 0, target)
    assert torch.equal(_mask_seen(scores[sel], history, 0, target, sel), full[sel])


def _plateau_lrs(scores: list[float], lr: float, decay: float, patience: int) -> list[float]:
    """The rate of each epoch under the plateau rule, replayed from its validation scores."""
    best, flat, out = -float("inf"), 0, []
    for s in scores:
        out.append(lr)
        if s > best:
            best, flat = s, 0
        else:
            flat += 1
            if flat >= patience:
                flat, lr = 0, lr * decay
    return out


def test_plateau_decay_waits_decay_patience_epochs_and_can_go_on_from_the_current_weights():
    _, encoded, fit_seqs, valid, cfg = _toy_fit()
    decays = 0
    for patience, resume in [(1, True), (2, True), (3, False)]:
        tc = TrainConfig(epochs=10, batch_size=16, lr=1e-2, patience=10, threads=1, decay_patience=patience,
                         decay_resume=resume)
        _, history = fit(cfg, tc, fit_seqs, encoded, valid, progress=False)
        scores = [h["valid_NDCG@10"] for h in history]
        lrs = [h["lr"] for h in history]
        assert lrs == _plateau_lrs(scores, 1e-2, 0.5, patience)
        decays += lrs[-1] < 1e-2
        if not resume:  # no revert: each epoch's path is every epoch so far
            assert all(h["lr_path"] == lrs[:k + 1] for k, h in enumerate(history))
    assert decays >= 2  # the toy's validation levels off, so the rule is exercised


def test_scores_in_row_blocks_train_the_same_weights():
    """``score_block``: a chunk's whole-catalog scores and loss in blocks of rows give the loss and the
    weights of one block, up to float rounding (the sums run in another order); 0 is one block."""
    encoded, fit_seqs, _ = chain_data()
    weights = {}
    for block in (0, 7, 10**6):
        torch.manual_seed(0)
        model = LSTMRecommender(LSTMConfig(n_items=22, n_event_types=3, dim=8, hidden=8, attention=3, transitions=4))
        model.set_transitions(*transition_table(fit_seqs, 22, 4))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        cfg = TrainConfig(batch_size=16, max_len=5, score_block=block, item_mask=0.1, label_smoothing=0.1)
        loss = train_epoch(model, fit_seqs, opt, cfg, np.random.default_rng(0))
        weights[block] = (loss, [p.detach().clone() for p in model.parameters()])
    for block in (7, 10**6):
        assert abs(weights[block][0] - weights[0][0]) < 1e-5
        for a, b in zip(weights[block][1], weights[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(weights[10**6][1], weights[0][1]))  # one block either way
