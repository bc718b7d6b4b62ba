"""Label smoothing in the training loss (TrainConfig.label_smoothing): the smoothing mass goes only to
the items the loss ranks the target against, never to masked (seen) items or to PAD/OOV."""
import pytest
import torch

from streamrec.model.config import TrainConfig
from streamrec.model.losses import sampled_loss as _sampled_loss, smoothed_ce as _smoothed_ce
from streamrec.model.lstm import LSTMConfig, LSTMRecommender
from streamrec.model.train import fit
from tests.factories import chain_data


def test_no_smoothing_is_plain_cross_entropy():
    logits, target = torch.randn(4, 9), torch.tensor([2, 3, 8, 5])
    want = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    assert torch.equal(_smoothed_ce(logits, target, 0.0), want)


def test_smoothing_spreads_over_unmasked_items_only_by_hand():
    logits, target = torch.randn(2, 8), torch.tensor([3, 6])
    logits[0, [2, 5]] = -1e9  # seen items of row 0
    logits[1, 7] = -1e9
    got = _smoothed_ce(logits, target, 0.2)
    logp = torch.log_softmax(logits, -1)
    want = 0.0
    for r, live in ((0, [3, 4, 6, 7]), (1, [2, 3, 4, 5, 6])):  # PAD 0 / OOV 1 and the masked items left out
        want = want - 0.8 * logp[r, target[r]] - 0.2 * logp[r, live].mean()
    assert torch.allclose(got, want, atol=1e-5)
    # torch's own smoothing puts mass on the masked logits: a loss of the order of 1e8
    assert got.item() < 100 < torch.nn.functional.cross_entropy(logits, target, reduction="sum",
                                                               label_smoothing=0.2).item()


def test_smoothing_out_of_range_is_refused():
    with pytest.raises(ValueError, match="label smoothing"):
        _smoothed_ce(torch.randn(1, 4), torch.tensor([2]), 1.0)


def test_sampled_loss_with_smoothing_by_hand():
    torch.manual_seed(0)
    m = LSTMRecommender(LSTMConfig(n_items=12, n_event_types=3, dim=8, hidden=8, cosine=0.0, attention=0)).eval()
    q, target = torch.randn(3, 8), torch.tensor([2, 5, 9])
    got = _sampled_loss(m, q, target, 6, torch.Generator().manual_seed(4), smoothing=0.1)
    neg = torch.randint(2, 12, (6,), generator=torch.Generator().manual_seed(4))
    full = q @ m.item_emb.weight.t() + m.bias
    want = 0.0
    for r in range(3):
        row = torch.stack([full[r, target[r]], *[full[r, j] for j in neg.tolist() if j != target[r].item()]])
        logp = torch.log_softmax(row, 0)
        want = want - 0.9 * logp[0] - 0.1 * logp.mean()
    assert torch.allclose(got, want, atol=1e-5)


def test_fit_with_label_smoothing_learns_a_chain():
    encoded, fit_seqs, valid = chain_data()
    cfg = LSTMConfig(n_items=22, n_event_types=3, dim=16, hidden=16, dropout=0.1, ffn=16)
    for negatives in (0, 8):
        model, history = fit(cfg, TrainConfig(epochs=12, batch_size=16, lr=1e-2, label_smoothing=0.1,
                                              negatives=negatives, threads=1),
                             fit_seqs, encoded, valid, progress=False)
        assert history[-1]["valid_HR@10"] > 0.9
