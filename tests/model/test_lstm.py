import torch

from model.lstm import LSTMConfig, LSTMRecommender


def _model(layers: int, first_order_dim: int = 0) -> LSTMRecommender:
    torch.manual_seed(layers)
    m = LSTMRecommender(LSTMConfig(n_items=300, n_event_types=5, dim=16, hidden=24, layers=layers,
                                   first_order_dim=first_order_dim))
    return m.eval()


def _events(B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(1, 300, (B, T), generator=g), torch.randint(1, 5, (B, T), generator=g),
            torch.randint(0, 26, (B, T), generator=g))


def test_T_single_steps_equal_one_forward_over_T():
    for layers, fo_dim in ((1, 0), (2, 0), (1, 8)):
        m = _model(layers, fo_dim)
        items, types, gaps = _events(B=7, T=60)
        with torch.no_grad():
            full, (h_f, c_f) = m(items, types, gaps)
            h, c = m.init_state(7)
            for t in range(60):
                h, c, s = m.step(items[:, t], types[:, t], gaps[:, t], h, c)
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
