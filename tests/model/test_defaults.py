"""The model defaults since issue 12 (attention 20, 128-d, cosine scores x 20), and checkpoints
written before those fields existed: they load as the models they were (no attention, dot product)."""
from pathlib import Path

import torch

from streamrec.model import checkpoint
from streamrec.model.lstm import BEFORE_FIELDS, LSTMConfig, LSTMRecommender
from streamrec.model.vocab import Vocab


def test_the_default_model_attends_and_scores_by_cosine():
    torch.manual_seed(0)
    m = LSTMRecommender(LSTMConfig(n_items=30, n_event_types=3)).eval()
    assert (m.cfg.dim, m.cfg.attention, m.cfg.cosine) == (128, 20, 20.0)
    items = torch.randint(2, 30, (2, 25))
    ones, zeros = torch.ones_like(items), torch.zeros_like(items)
    scores, _ = m(items, ones, zeros)
    with torch.no_grad():
        m.bias.uniform_(-1, 1)  # the item bias adds on top of the cosine term, nothing else does
    biased, _ = m(items, ones, zeros)
    assert torch.allclose(biased - scores, m.bias.expand_as(scores), atol=1e-5)
    assert scores.abs().max() <= 20.0 + 1e-4 and scores.std() > 0.1  # cosine x 20
    # attention is on: the same events with empty windows (all PAD) give other query vectors
    q, _ = m.encode(items, ones, zeros)
    q_empty, _ = m.encode(items, ones, zeros, window=torch.zeros(2, 25, 20, dtype=torch.int64))
    assert not torch.allclose(q, q_empty, atol=1e-4)


def test_a_checkpoint_from_before_the_new_fields_loads_as_the_plain_model(tmp_path: Path):
    torch.manual_seed(0)
    plain = LSTMRecommender(LSTMConfig(n_items=12, n_event_types=3, dim=8, hidden=8, cosine=0.0, attention=0)).eval()
    vocab = Vocab.build(str(i) for i in range(10))
    path = checkpoint.save(checkpoint.Checkpoint(plain, vocab, vocab), tmp_path)
    payload = torch.load(path, weights_only=True)
    for name in BEFORE_FIELDS:  # as written by code that predates them
        del payload["config"][name]
    torch.save(payload, path)
    loaded = checkpoint.load(path).model
    assert (loaded.cfg.attention, loaded.cfg.cosine, loaded.cfg.heads) == (0, 0.0, 1)
    items = torch.tensor([[2, 5, 7, 3]])
    want, _ = plain(items, torch.ones_like(items), torch.zeros_like(items))
    got, _ = loaded(items, torch.ones_like(items), torch.zeros_like(items))
    assert torch.equal(want, got)
