import numpy as np

from streamrec.model.gaps import FIRST_EVENT, N_GAP_BUCKETS, NO_GAP, gap_bucket, gap_buckets


def test_scalar_buckets_by_hand():
    assert gap_bucket(None) == FIRST_EVENT
    assert gap_bucket(0) == NO_GAP
    assert gap_bucket(-5_000) == NO_GAP
    assert gap_bucket(999) == 2  # under one second
    assert gap_bucket(1_000) == 3
    assert gap_bucket(1_999) == 3
    assert gap_bucket(2_000) == 4
    assert gap_bucket(3_999) == 4
    assert gap_bucket(4_000) == 5
    assert gap_bucket(10**15) == N_GAP_BUCKETS - 1  # capped


def test_vector_equals_scalar_on_many_gaps():
    rng = np.random.default_rng(0)
    gaps = np.concatenate([rng.integers(-10_000, 10**11, 5000), [0, 1, 999, 1000, 1023_999, 1024_000]])
    ts = np.concatenate([[0], np.cumsum(gaps)])
    vec = gap_buckets(ts)
    ref = [gap_bucket(None)] + [gap_bucket(int(g)) for g in gaps]
    assert vec.tolist() == ref
