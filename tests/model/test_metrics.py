import math

import numpy as np
import pytest

from streamrec.model.metrics import MISS, rank_in_list, rank_rows, summarize


def test_rank_by_hand_with_masking_and_ties():
    #                 pad  oov   2    3    4    5    6
    scores = np.array([[9., 9., 0.5, 0.9, 0.5, 0.7, 0.1],
                       [9., 9., 0.5, 0.9, 0.5, 0.7, 0.1],
                       [9., 9., 0.5, 0.9, 0.5, 0.7, 0.1]])
    targets = np.array([2, 2, 1])
    masks = [np.array([], np.int64), np.array([3, 2]), np.array([3])]
    ranks, ncand = rank_rows(scores.copy(), targets, masks)
    # row 0: strictly above 0.5 are items 3 (0.9) and 5 (0.7); item 4 ties -> rank 3
    # row 1: item 3 masked; item 2 is the target so stays unmasked -> only item 5 above -> 2
    # row 2: OOV target -> miss
    assert ranks.tolist() == [3, 2, MISS]
    assert ncand.tolist() == [5, 4, 4]


def test_summary_by_hand():
    ranks = np.array([1, 3, 15, MISS])
    m = summarize(ranks, n_candidates=np.array([11, 11, 21, 11]), ks=(10, 20))
    assert m["HR@10"] == pytest.approx(2 / 4)
    assert m["HR@20"] == pytest.approx(3 / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["NDCG@20"] == pytest.approx((1 + 0.5 + 1 / math.log2(16)) / 4)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["Precision@10"] == pytest.approx(2 / 4 / 10)
    assert m["F1@10"] == pytest.approx((2 / 11 + 2 / 11) / 4)
    assert m["AUC"] == pytest.approx((1 + (1 - 2 / 10) + (1 - 14 / 20) + 0) / 4)
    assert m["n_targets"] == 4


def test_rank_in_list_matches_full_ranking():
    rng = np.random.default_rng(3)
    for _ in range(200):
        s = rng.normal(size=50).round(1)  # rounding makes ties frequent
        target = int(rng.integers(2, 50))
        masked = set(rng.choice(np.arange(2, 50), 8, replace=False).tolist())
        full, _ = rank_rows(s[None].copy(), np.array([target]), [np.array(sorted(masked))])
        order = np.argsort(-s, kind="stable")[:30]  # a top-30 list
        r = rank_in_list(order, s[order], target, masked)
        if r != MISS:
            assert r == full[0]
        else:
            assert full[0] > 30 - len(masked) or target not in order
