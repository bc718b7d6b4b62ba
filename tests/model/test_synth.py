"""The synthetic generator: seeded, realistic in shape, and learnable beyond popularity and
first-order transitions (the LSTM beats MostPopular and Markov on it)."""
from collections import Counter

import numpy as np

from streamrec.model.pipeline import train
from streamrec.model.synth import SynthConfig, generate


def test_seeded_and_shaped_like_real_streams():
    a = generate(SynthConfig(users=200, items=150, seed=7))
    assert a == generate(SynthConfig(users=200, items=150, seed=7))
    assert a != generate(SynthConfig(users=200, items=150, seed=8))
    types = Counter(e.event_type for e in a)
    assert types["browse"] > 2 * types["click"] > 0  # browses outnumber clicks
    counts = np.array(sorted(Counter(e.item_id for e in a).values(), reverse=True))
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # long tail: top 10% of items >30% of events
    by_user: dict[str, list[int]] = {}
    for e in a:
        by_user.setdefault(e.user_id, []).append(e.ts)
    gaps = np.concatenate([np.diff(ts) for ts in by_user.values() if len(ts) > 1])
    assert (gaps >= 0).all()
    assert (gaps > 3_600_000).mean() > 0.05 and np.median(gaps) < 120_000  # sessions: short gaps inside, long between


def test_lstm_beats_most_popular_and_markov_on_the_demo_data(tmp_path):
    """Exactly what `streamrec demo` trains by default."""
    from streamrec.cli.demo_cmd import DEMO_ITEMS, DEMO_USERS, MODEL_KW, train_config

    events = generate(SynthConfig(users=DEMO_USERS, items=DEMO_ITEMS, seed=0))
    doc = train(events, "temporal", tmp_path, MODEL_KW, train_config(), {"name": "synth"}, progress=False)
    lstm, base = doc["model"]["NDCG@10"], doc["baselines"]
    assert doc["model"]["n_targets"] > 1000
    assert lstm > base["Markov"]["NDCG@10"] and lstm > base["MostPopular"]["NDCG@10"], (lstm, base)
