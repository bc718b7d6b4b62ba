"""Early stopping: patience counts epochs without progress, a gain of more than ``min_delta``
of the score (TrainConfig.min_delta); smaller gains still choose the checkpoint."""
import numpy as np

from streamrec.model.config import TrainConfig
from streamrec.model.encode import Encoded, build_targets
from streamrec.model.lstm import LSTMConfig
from streamrec.model.train import fit, stale_epochs, stop_epoch

# Beauty, attention 20 + 128-d + cosine scores x 20, seed 1: validation NDCG@10 per epoch
# (benchmarks/results/quality-beauty-att20-d128-cos20-s1.json, rounded to 6 digits). It levels
# off at epoch 14; epochs 17, 20 and 21 beat the best by 0.00003, 0.00001 and 0.000001.
BEAUTY_S1 = [0.009248, 0.023554, 0.035124, 0.047437, 0.055301, 0.057755, 0.059116, 0.060468,
             0.061861, 0.061824, 0.061892, 0.062176, 0.062177, 0.063078, 0.062809, 0.062657,
             0.063111, 0.062868, 0.063054, 0.063147, 0.063148, 0.063071, 0.063032, 0.063128, 0.063145]


def test_a_levelled_off_run_stops_four_epochs_after_its_last_progress():
    assert stop_epoch(BEAUTY_S1, 4, 0.001) == 18  # last progress: epoch 14 (+1.4%)
    # every gain counted: the run went on to epoch 25 on gains of 0.00003 and less
    assert stop_epoch(BEAUTY_S1, 4, 0.0) == 25
    # the checkpoint is still the best score seen before the stop (epoch 17, not 14)
    assert int(np.argmax(BEAUTY_S1[:18])) + 1 == 17


def test_min_delta_zero_counts_epochs_since_the_last_improvement():
    scores = [0.1, 0.2, 0.2, 0.19, 0.21, 0.21, 0.2]
    assert [stale_epochs(scores[:n], 0.0) for n in range(1, 8)] == [0, 0, 1, 2, 0, 1, 2]


def test_progress_is_measured_from_the_last_epoch_that_made_progress():
    # small gains do not move the reference, so they add up: 1.0 -> 1.0006 -> 1.0012 (progress)
    assert [stale_epochs([1.0, 1.0006, 1.0012][:n], 0.001) for n in (1, 2, 3)] == [0, 1, 0]


def test_the_margin_is_relative_scale_free_and_works_on_negative_scores():
    scores = [0.3, 0.35, 0.3502, 0.3504, 0.36]
    expect = [stale_epochs(scores[:n], 0.01) for n in range(1, 6)]
    assert expect == [0, 0, 1, 2, 0]
    assert [stale_epochs([s * 1000 for s in scores][:n], 0.01) for n in range(1, 6)] == expect
    # without validation targets fit scores epochs by -loss: 5.0 -> 4.99 is less than 1%
    assert [stale_epochs([-5.0, -4.99, -4.9][:n], 0.01) for n in (1, 2, 3)] == [0, 1, 0]


def test_fit_stops_after_patience_epochs_without_progress():
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(60):
        start = int(rng.integers(2, 20))
        items = np.array([2 + (start + k) % 20 for k in range(12)], dtype=np.int64)
        seqs.append(Encoded(items, np.ones(12, np.int64), np.zeros(12, np.int64), np.arange(12, dtype=np.int64)))
    encoded = {str(u): s for u, s in enumerate(seqs)}
    fit_seqs = [Encoded(s.items[:10], s.types[:10], s.gaps[:10], s.ts[:10]) for s in seqs]
    valid = build_targets(encoded, [(u, 10) for u in encoded])
    cfg = LSTMConfig(n_items=22, n_event_types=3, dim=16, hidden=16, dropout=0.1)
    runs = {}
    for delta in (0.0, 100.0):  # 100: no gain after the first epoch is progress
        tc = TrainConfig(epochs=8, patience=2, batch_size=16, lr=1e-2, threads=1, min_delta=delta)
        runs[delta] = fit(cfg, tc, fit_seqs, encoded, valid, progress=False)[1]
    assert len(runs[100.0]) == 3  # epoch 1, then two without progress
    assert len(runs[0.0]) > 3  # every gain counted: it went on
    # the same path up to the stop: the rule only cuts it short
    same = ("loss", "lr", "valid_NDCG@10")
    assert [[h[k] for k in same] for h in runs[100.0]] == [[h[k] for k in same] for h in runs[0.0][:3]]
