"""The weight average: its step count per epoch, its decay rule and its wiring into ``fit``."""
import numpy as np
import pytest
import torch

from streamrec.model.average import Average, decay_cap, warm_decay
from streamrec.model.config import TrainConfig
from streamrec.model.encode import Encoded
from streamrec.model.lstm import LSTMConfig, LSTMRecommender
from streamrec.model.train import epoch_steps, fit, train_epoch
from tests.model.test_train import _toy_fit


def _seqs(lengths: list[int], seed: int = 0) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        items = rng.integers(2, 30, n).astype(np.int64)
        out.append(Encoded(items, np.ones(n, np.int64), np.zeros(n, np.int64), np.arange(n, dtype=np.int64)))
    return out


@pytest.mark.parametrize("batch_size,max_len", [(4, 5), (3, 50), (16, 7)])
def test_epoch_steps_counts_the_optimizer_steps_an_epoch_takes(batch_size, max_len):
    lengths = [1, 2, 2, 3, 5, 6, 6, 9, 11, 12, 17, 23, 4, 8, 30, 2]  # one too short to train on
    every = _seqs(lengths)
    seqs = [s for s in every if len(s) >= 2]
    model = LSTMRecommender(LSTMConfig(n_items=30, n_event_types=3, dim=8, hidden=8, dropout=0.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = [0]
    opt.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    cfg = TrainConfig(batch_size=batch_size, max_len=max_len, item_mask=0.0, threads=1)
    train_epoch(model, seqs, opt, cfg, np.random.default_rng(1))
    assert steps[0] == epoch_steps(every, batch_size, max_len)


def test_decay_cap_is_a_horizon_in_epochs_or_the_fixed_decay():
    assert decay_cap(0.99, 0.0, 180) == 0.99
    assert decay_cap(0.99, 3.0, 180) == pytest.approx(1 - 1 / 540)
    assert decay_cap(0.99, 3.0, 9) == pytest.approx(1 - 1 / 27)  # a small set: a shorter span in steps
    # the warm-up: (1 + t) / (10 + t) until the cap
    assert [warm_decay(t, 0.5) for t in (0, 8, 100)] == [0.1, 0.5, 0.5]


def test_average_warms_up_or_starts_at_its_cap():
    p = torch.zeros(3)
    warm, cold = Average([p], cap=0.9), Average([p], cap=0.9, warm=False)
    p += 1.0
    warm.update(), cold.update()
    assert torch.allclose(warm.values[0], torch.full((3,), 0.9))  # decay 0.1 at the first step
    assert torch.allclose(cold.values[0], torch.full((3,), 0.1))  # decay 0.9 straight away
    cold.reset()
    assert torch.equal(cold.values[0], p) and cold.values[0] is not p
    warm.apply()  # the parameters take the average's values
    assert torch.allclose(p, torch.full((3,), 0.9))


def test_fit_with_a_horizon_in_epochs_equals_the_fixed_decay_it_stands_for():
    _, encoded, fit_seqs, valid, cfg = _toy_fit()
    steps = epoch_steps(fit_seqs, 8, 50)
    cap = decay_cap(0.99, 0.25, steps)  # a quarter of an epoch: the cap binds in the first epochs
    assert steps == 8 and cap == 0.5
    common = dict(epochs=5, patience=5, batch_size=8, lr=1e-2, threads=1, finetune=0)
    runs = [fit(cfg, TrainConfig(**tc, **common), fit_seqs, encoded, valid, progress=False)
            for tc in ({"ema_epochs": 0.25}, {"ema": cap, "ema_epochs": 0}, {"ema_epochs": 0})]
    (by_epochs, h1), (by_decay, h2), (fixed, _) = runs
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    weights = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m, _ in runs]
    assert torch.equal(weights[0], weights[1])
    assert not torch.allclose(weights[0], weights[2])  # the fixed 0.99 is another average
