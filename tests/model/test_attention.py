"""Attention over the recent-items window (LSTMConfig.attention): the windows training builds are
the serving state's seen window, and T single steps fed those windows equal one forward."""
import random

import numpy as np
import torch

from streamrec.export.contract import window_of, windows_of
from streamrec.model.config import TrainConfig
from streamrec.model.encode import Encoded, build_targets
from streamrec.model.lstm import LSTMConfig, LSTMRecommender, recent_windows
from streamrec.model.train import fit, query_vectors
from streamrec.streams.state import remember
from tests.factories import chain_data


def _by_hand(row: list[int], size: int) -> list[list[int]]:
    """The serving rule: known items (id > 1) moved to the newest end, the last ``size`` kept."""
    win, out = (), []
    for item in row:
        if item > 1:
            win = remember(win, item, size)
        out.append([0] * (size - len(win)) + list(win))
    return out


def test_recent_windows_by_hand():
    items = torch.tensor([[2, 3, 2, 1, 4, 5, 3]])  # a repeat (2, then 3) moves to the newest end; OOV 1 never enters
    w = recent_windows(items, 3)
    assert w[0].tolist() == [[0, 0, 2], [0, 2, 3], [0, 3, 2], [0, 3, 2], [3, 2, 4], [2, 4, 5], [4, 5, 3]]
    assert torch.equal(recent_windows(items, 3, start=4), w[:, 4:])


def test_recent_windows_equal_the_serving_rule_on_random_rows():
    rng = random.Random(0)
    for _ in range(30):
        size, length = rng.choice([1, 4, 9]), rng.randint(1, 70)
        rows = [[rng.choice([1] + list(range(2, 10))) for _ in range(length)] for _ in range(3)]
        start = rng.randint(0, length - 1)
        got = recent_windows(torch.tensor(rows), size, start=start, block=rng.choice([1, 5, 64]))
        for b, row in enumerate(rows):
            assert got[b].tolist() == _by_hand(row, size)[start:]


def test_window_of_the_serving_seen_window_equals_recent_windows():
    """What serving passes the exported step: window_of(seen window after remembering the event, N), at
    every position, with repeats and OOV ids, for seen windows as wide as N and wider."""
    rng = random.Random(1)
    for _ in range(40):
        n, length = rng.choice([1, 3, 6]), rng.randint(1, 50)
        m = n + rng.choice([0, 1, 5, 40])
        rows = [[rng.choice([1] + list(range(2, 12))) for _ in range(length)] for _ in range(3)]
        ref = recent_windows(torch.tensor(rows), n)
        seen = [()] * len(rows)
        for t in range(length):
            seen = [remember(s, row[t], m) if row[t] > 1 else s for s, row in zip(seen, rows)]
            for b in range(len(rows)):
                assert window_of(seen[b], n) == ref[b, t].tolist()
            batch = windows_of(seen, n)
            assert batch.dtype == np.int64 and batch.tolist() == ref[:, t].tolist()


def test_window_of_pads_on_the_left_and_keeps_the_newest():
    assert window_of((), 3) == [0, 0, 0]
    assert window_of((5,), 3) == [0, 0, 5]
    assert window_of((2, 3, 4, 5), 3) == [3, 4, 5]
    assert window_of((2, 3), 0) == [] and windows_of([(2, 3), ()], 0).shape == (2, 0)
    assert windows_of([], 4).shape == (0, 4)


def _model(layers: int = 1, fo_dim: int = 0, heads: int = 1) -> LSTMRecommender:
    torch.manual_seed(3)
    return LSTMRecommender(LSTMConfig(n_items=40, n_event_types=4, dim=16, hidden=24, layers=layers,
                                      first_order_dim=fo_dim, attention=6, heads=heads)).eval()


def test_T_single_steps_with_windows_equal_one_forward():
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, 40, (5, 30), generator=g)  # OOV ids and repeats included
    types, gaps = torch.randint(1, 4, (5, 30), generator=g), torch.randint(0, 20, (5, 30), generator=g)
    for layers, fo_dim, heads in ((1, 0, 1), (2, 8, 1), (1, 0, 2), (2, 8, 4)):
        m = _model(layers, fo_dim, heads)
        with torch.no_grad():
            full, _ = m(items, types, gaps)
            windows = recent_windows(items, 6)
            h, c = m.init_state(5)
            for t in range(30):
                h, c, s = m.step(items[:, t], types[:, t], gaps[:, t], h, c, windows[:, t])
                assert (s - full[:, t]).abs().max().item() <= 1e-5
            # chunks with the state and the windows carried equal the whole sequence
            a, st = m(items[:, :11], types[:, :11], gaps[:, :11])
            b, _ = m(items[:, 11:], types[:, 11:], gaps[:, 11:], st, windows[:, 11:])
        assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)


def test_query_vectors_of_selected_positions_equal_the_full_encode():
    """``encode(..., sel=...)`` (only the selected positions) gives the query vectors the full
    encode gives there, and the same state; ``query_vectors`` (evaluation, which selects the positions
    before targets) equals the full encode at those positions."""
    g = torch.Generator().manual_seed(3)
    items = torch.randint(0, 40, (6, 25), generator=g)  # PAD, OOV ids and repeats included
    types, gaps = torch.randint(1, 4, (6, 25), generator=g), torch.randint(0, 20, (6, 25), generator=g)
    sel = torch.rand(6, 25, generator=g) < 0.3
    for layers, fo_dim, heads in ((1, 0, 1), (2, 8, 1), (1, 0, 2), (2, 8, 4)):
        m = _model(layers, fo_dim, heads).eval()
        with torch.no_grad():
            full, (h, c) = m.encode(items, types, gaps)
            part, (h2, c2) = m.encode(items, types, gaps, sel=sel)
        assert part.shape == (int(sel.sum()), full.shape[-1])
        torch.testing.assert_close(part, full[sel], rtol=1e-6, atol=1e-6)
        assert torch.equal(h, h2) and torch.equal(c, c2)

    m = _model().eval()
    seqs = {str(u): Encoded(np.array(row[:n]), np.array(t[:n]), np.array(gp[:n]), np.arange(n))
            for u, (row, t, gp, n) in enumerate(zip(items.clamp(min=2).tolist(), types.tolist(), gaps.tolist(),
                                                     (25, 9, 17, 25, 3, 14)))}
    targets = build_targets(seqs, [(u, p) for u, s in seqs.items() for p in range(1, len(s.items)) if p % 3 != 1])
    with torch.no_grad():
        got = query_vectors(m, seqs, targets, batch_users=4, chunk=7)  # several user groups and chunks
        full, _ = m.encode(items.clamp(min=2), types, gaps)
    want = np.stack([full[int(u), p - 1].numpy() for u, p in zip(targets.users, targets.positions)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_attention_reads_the_window_and_an_empty_window_gives_no_context():
    m = _model()
    with torch.no_grad():
        out = torch.randn(2, 24)
        empty = m.attend(out, torch.tensor([[0] * 6, [0, 0, 0, 0, 1, 1]]))
        assert empty.abs().max().item() == 0.0
        x = m.attend(out, torch.tensor([[0, 0, 0, 0, 5, 7]] * 2))
        y = m.attend(out, torch.tensor([[0, 0, 0, 0, 5, 9]] * 2))
        assert (x - y).abs().max().item() > 1e-4


def test_each_head_attends_over_its_own_slice():
    """heads=2 (the same weights as heads=1: heads add none): each slice of dim is one-head attention
    over that slice of the query and keys, with its own softmax; both slices' contexts, concatenated,
    go through att_out. An empty window still gives no context."""
    one, two = _model(), _model(heads=2)
    two.load_state_dict(one.state_dict())
    g = torch.Generator().manual_seed(2)
    out = torch.randn(3, 24, generator=g)
    window = torch.tensor([[0, 0, 0, 5, 1, 7], [3, 9, 4, 2, 8, 6], [0] * 6])
    with torch.no_grad():
        got = two.attend(out, window)
        a, emb = two.att_q(out), two.item_emb(window)
        keys, live = emb + two.att_pos, window > 1
        ctx = []
        for sl in (slice(0, 8), slice(8, 16)):
            logits = (keys[..., sl] @ a[:, sl, None]).squeeze(-1) / np.sqrt(8)
            w = torch.softmax(logits.masked_fill(~live, -1e9), -1) * live
            ctx.append((w[:, None, :] @ emb[..., sl]).squeeze(1))
        expect = two.att_out(torch.cat(ctx, -1))
        assert (got - expect).abs().max().item() <= 1e-6
        assert got[2].abs().max().item() == 0.0
        assert (got - one.attend(out, window)).abs().max().item() > 1e-4


def test_heads_must_divide_dim():
    try:
        LSTMRecommender(LSTMConfig(n_items=40, n_event_types=4, dim=16, attention=6, heads=3))
    except ValueError as exc:
        assert "heads" in str(exc)
    else:
        raise AssertionError("heads=3 with dim=16")


def test_step_of_an_attention_model_refuses_a_missing_window():
    m = _model()
    one = torch.ones(1, dtype=torch.int64)
    h, c = m.init_state(1)
    try:
        m.step(one, one, one * 0, h, c)
    except ValueError as exc:
        assert "window" in str(exc)
    else:
        raise AssertionError("step without a window")


def test_fit_with_attention_learns_a_chain():
    encoded, fit_seqs, valid = chain_data()
    cfg = LSTMConfig(n_items=22, n_event_types=3, dim=16, hidden=16, dropout=0.1, attention=4)
    model, history = fit(cfg, TrainConfig(epochs=12, batch_size=16, lr=1e-2, item_mask=0.1, ema=0.9, threads=1),
                         fit_seqs, encoded, valid, progress=False)
    assert history[-1]["valid_HR@10"] > 0.9
    assert all(np.isfinite(h["loss"]) for h in history)


def test_before_finetune_sees_the_model_validation_chose():
    """fit's hook gets the early-stopped weights, before the fine-tune changes them."""
    seqs = [Encoded(np.array([2 + (s + k) % 20 for k in range(12)], dtype=np.int64), np.ones(12, np.int64),
                    np.zeros(12, np.int64), np.arange(12, dtype=np.int64)) for s in range(2, 22)]
    encoded = {str(u): s for u, s in enumerate(seqs)}
    cut = lambda s, k: Encoded(s.items[:k], s.types[:k], s.gaps[:k], s.ts[:k])  # noqa: E731
    valid = build_targets(encoded, [(u, 10) for u in encoded])
    cfg = LSTMConfig(n_items=22, n_event_types=3, dim=8, hidden=8, attention=3)
    seen = []
    hook = lambda m: seen.append({k: v.clone() for k, v in m.state_dict().items()})  # noqa: E731
    tc = TrainConfig(epochs=2, batch_size=8, threads=1, finetune=1)
    model, history = fit(cfg, tc, [cut(s, 10) for s in seqs], encoded, valid, progress=False,
                         known=[cut(s, 11) for s in seqs], before_finetune=hook)
    assert len(seen) == 1 and sum(h.get("phase") == "finetune" for h in history) == 1
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in seen[0].items())
    fit(cfg, TrainConfig(epochs=1, threads=1, finetune=0), [cut(s, 10) for s in seqs], encoded, valid,
        progress=False, known=[cut(s, 11) for s in seqs], before_finetune=hook)
    assert len(seen) == 1  # no fine-tune, no call
