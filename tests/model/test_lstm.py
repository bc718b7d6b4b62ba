import numpy as np
import torch

from streamrec.model.lstm import LSTMConfig, LSTMRecommender, recent_windows


def _model(layers: int, first_order_dim: int = 0, transitions: int = 0, cosine: float = 0.0, ffn: int = 0,
           attention: int = 0) -> LSTMRecommender:
    torch.manual_seed(layers)
    m = LSTMRecommender(LSTMConfig(n_items=300, n_event_types=5, dim=16, hidden=24, layers=layers,
                                   first_order_dim=first_order_dim, transitions=transitions, cosine=cosine,
                                   ffn=ffn, attention=attention))
    if transitions:
        m.set_transitions(torch.randint(0, 300, (300, transitions)), torch.randint(0, 9, (300, transitions)).float())
    return m.eval()


def _events(B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(1, 300, (B, T), generator=g), torch.randint(1, 5, (B, T), generator=g),
            torch.randint(0, 26, (B, T), generator=g))


def test_T_single_steps_equal_one_forward_over_T():
    for layers, fo_dim, trans, cosine, ffn, att in (
            (1, 0, 0, 0.0, 0, 0), (2, 0, 0, 0.0, 0, 0), (1, 8, 0, 0.0, 0, 0), (2, 0, 6, 0.0, 0, 0),
            (1, 0, 0, 10.0, 0, 0), (1, 8, 6, 10.0, 0, 0),
            (1, 0, 0, 0.0, 20, 0), (2, 8, 6, 10.0, 32, 0), (1, 0, 0, 0.0, 16, 5), (2, 8, 0, 0.0, 16, 5),
            (1, 0, 0, 20.0, 0, 5), (2, 8, 0, 20.0, 16, 5)):
        m = _model(layers, fo_dim, trans, cosine, ffn, att)
        items, types, gaps = _events(B=7, T=60)
        windows = recent_windows(items, att) if att else None
        with torch.no_grad():
            full, (h_f, c_f) = m(items, types, gaps)
            h, c = m.init_state(7)
            for t in range(60):
                h, c, s = m.step(items[:, t], types[:, t], gaps[:, t], h, c, None if att == 0 else windows[:, t])
                assert (s - full[:, t]).abs().max().item() <= 1e-5
        assert (h - h_f).abs().max().item() <= 1e-5
        assert (c - c_f).abs().max().item() <= 1e-5


def test_forward_in_chunks_with_carried_state_equals_one_forward():
    m = _model(2)
    items, types, gaps = _events(B=3, T=40, seed=1)
    with torch.no_grad():
        full, _ = m(items, types, gaps)
        a, st = m(items[:, :15], types[:, :15], gaps[:, :15])
        b, _ = m(items[:, 15:], types[:, 15:], gaps[:, 15:], st)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)


def test_padding_item_has_zero_embedding_and_dropout_off_in_eval():
    m = _model(1)
    assert m.item_emb.weight[0].abs().sum().item() == 0
    items, types, gaps = _events(B=2, T=5)
    with torch.no_grad():
        assert torch.equal(m(items, types, gaps)[0], m(items, types, gaps)[0])


def test_transition_table_and_leave_one_out():
    from streamrec.model.encode import Encoded
    from streamrec.model.losses import leave_one_out as _leave_one_out
    from streamrec.model.train import transition_table

    z = lambda a: np.zeros(len(a), np.int64)  # noqa: E731
    seqs = [Encoded(np.array(a), z(a), z(a), z(a)) for a in ([2, 3, 2, 3, 4], [2, 3], [3, 4])]
    idx, cnt = transition_table(seqs, n_items=6, top=2)
    assert idx[2].tolist() == [3, 0] and cnt[2].tolist() == [3.0, 0.0]  # 2->3 three times
    assert idx[3].tolist() == [4, 2] and cnt[3].tolist() == [2.0, 1.0]  # 3->4 twice, 3->2 once
    m = LSTMRecommender(LSTMConfig(n_items=6, n_event_types=3, dim=4, hidden=4, transitions=2)).eval()
    m.set_transitions(idx, cnt)
    items, target = torch.tensor([[3]]), torch.tensor([[4]])
    with torch.no_grad():
        s, _ = m(items, torch.zeros_like(items), torch.zeros_like(items))
        loo = _leave_one_out(m, s, items, target)
        expect = m.transition_prior(torch.tensor(2.0)) - m.transition_prior(torch.tensor(1.0))
    assert torch.allclose(s[0, 0, 4] - loo[0, 0, 4], expect)
    assert torch.equal(torch.cat([s[..., :4], s[..., 5:]], -1), torch.cat([loo[..., :4], loo[..., 5:]], -1))


def test_feed_forward_block_is_opt_in_and_changes_the_scores():
    """ffn = 0 builds no block (the same parameters and initial weights as before it existed); ffn > 0
    adds one whose output reaches the scores, in eval mode too, and leaves the other weights' draws."""
    plain, ffn = _model(1), _model(1, ffn=20)
    extra = set(ffn.state_dict()) - set(plain.state_dict())
    assert not any(k.startswith("ffn") for k in plain.state_dict())
    assert extra == {"ffn_in.weight", "ffn_in.bias", "ffn_out.weight", "ffn_out.bias",
                     "ffn_norm.weight", "ffn_norm.bias"}
    assert all(torch.equal(v, ffn.state_dict()[k]) for k, v in plain.state_dict().items())
    items, types, gaps = _events(B=2, T=5)
    with torch.no_grad():
        assert (plain(items, types, gaps)[0] - ffn(items, types, gaps)[0]).abs().max().item() > 1e-3
        q = torch.randn(3, 16)
        manual = ffn.ffn_norm(q + ffn.ffn_out(torch.relu(ffn.ffn_in(q))))
        assert torch.allclose(ffn.feed_forward(q), manual, atol=1e-6)


def test_cosine_scores_are_the_scaled_cosine_plus_the_item_bias():
    m = _model(1, cosine=20.0)
    with torch.no_grad():
        m.bias.copy_(torch.randn(300))
        q = torch.randn(4, 16)
        s = m.score(q, torch.full((4,), 2))
        cos = torch.nn.functional.cosine_similarity(q[:, None, :], m.item_emb.weight[None, 1:, :], dim=-1)
        assert (s[:, 1:] - m.bias[1:] - 20.0 * cos).abs().max().item() <= 1e-4
        assert torch.equal(m.scoring_table(), torch.nn.functional.normalize(m.item_emb.weight, dim=-1))
        assert torch.equal(_model(1).scoring_table(), _model(1).item_emb.weight)  # off: the table as is
