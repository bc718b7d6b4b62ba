"""Sampled softmax in training (TrainConfig.negatives): the loss by hand, and a fit that learns."""
import torch

from streamrec.model.config import TrainConfig
from streamrec.model.lstm import LSTMConfig, LSTMRecommender
from streamrec.model.losses import sampled_loss as _sampled_loss
from streamrec.model.train import fit
from tests.factories import chain_data


def _model() -> LSTMRecommender:
    torch.manual_seed(0)
    m = LSTMRecommender(LSTMConfig(n_items=12, n_event_types=3, dim=8, hidden=8, cosine=0.0, attention=0))  # dot product, by hand
    with torch.no_grad():
        m.bias.normal_()
    return m.eval()


def test_sampled_loss_by_hand():
    m = _model()
    q, target = torch.randn(3, 8), torch.tensor([2, 5, 9])
    got = _sampled_loss(m, q, target, 6, torch.Generator().manual_seed(4))
    neg = torch.randint(2, 12, (6,), generator=torch.Generator().manual_seed(4))
    full = q @ m.item_emb.weight.t() + m.bias  # the whole-catalog scores
    want = 0.0
    for r in range(3):
        others = [full[r, j] for j in neg.tolist() if j != target[r].item()]  # a draw of the target does not count
        row = torch.stack([full[r, target[r]], *others])
        want = want - torch.log_softmax(row, 0)[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_sampled_loss_ignores_seen_draws():
    m = _model()
    history = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])  # every real item
    target = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10, 11, 0]])
    sel = target > 1
    loss = _sampled_loss(m, torch.randn(int(sel.sum()), 8), target[sel], 50, torch.Generator().manual_seed(0),
                         (history, 0, target, sel))
    # at the last positions every draw is seen or the target: nothing to rank against, loss ~ 0 there;
    # at the first position (history {2}) it is not
    assert loss.item() > 0
    last = torch.zeros_like(sel)
    last[0, 8] = True
    only_last = _sampled_loss(m, torch.randn(1, 8), target[last], 50, torch.Generator().manual_seed(0),
                              (history, 0, target, last))
    assert only_last.item() < 1e-6


def test_fit_with_sampled_negatives_learns_a_chain():
    encoded, fit_seqs, valid = chain_data()
    cfg = LSTMConfig(n_items=22, n_event_types=3, dim=16, hidden=16, dropout=0.1)
    model, history = fit(cfg, TrainConfig(epochs=12, batch_size=16, lr=1e-2, negatives=8, threads=1),
                         fit_seqs, encoded, valid, progress=False)
    assert history[-1]["valid_HR@10"] > 0.9
