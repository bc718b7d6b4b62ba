"""Factories shared by the tests: small synthetic data, a quickly trained checkpoint, a bundle.

Everything is made by the test suite itself (no shared data needed), seeded, and small enough
for this 2-core machine: a model trains in seconds.
"""
from __future__ import annotations

from pathlib import Path

from streamrec.model.synth import SynthConfig, generate


def small_events(users: int = 300, items: int = 120, seed: int = 0):
    return generate(SynthConfig(users=users, items=items, topics=8, sessions=4.0, seed=seed))


def train_small(events, protocol: str = "temporal", epochs: int = 3, dim: int = 16, hidden: int = 24,
                layers: int = 1, seed: int = 0, **model_kw):
    """A tiny trained checkpoint (model.checkpoint.Checkpoint) and its Prepared data: the plain model
    (no attention, dot-product scores) unless ``model_kw`` asks for more, so that tests of serving
    can use seen windows smaller than the default attention window and graphs without its input."""
    from streamrec.model.checkpoint import Checkpoint
    from streamrec.model.lstm import LSTMConfig
    from streamrec.model.prepare import prepare
    from streamrec.model.train import TrainConfig, fit, parity_sample

    p = prepare(events, protocol)
    model_kw = {"attention": 0, "cosine": 0.0, **model_kw}
    cfg = LSTMConfig(n_items=len(p.items), n_event_types=len(p.types), dim=dim, hidden=hidden, layers=layers,
                      **model_kw)
    model, _ = fit(cfg, TrainConfig(epochs=epochs, patience=epochs, lr=5e-3, seed=seed), p.fit, p.encoded,
                   p.valid, progress=False)
    ckpt = Checkpoint(model, p.items, p.types, data={"name": "test", "parity_sample": parity_sample(p.fit)})
    return ckpt, p


def make_bundle(out: Path, events=None, k: int = 10, m: int = 20, **train_kw) -> Path:
    """Train a tiny model on ``events`` (default: small synthetic data) and export it to ``out``."""
    from streamrec.export.onnx_export import export_bundle

    ckpt, _ = train_small(events if events is not None else small_events(), **train_kw)
    export_bundle(ckpt, out, k=k, m=m)
    return out


def chain_data(users: int = 60, length: int = 12, seen: int = 10, seed: int = 0):
    """Users walking one 20-item cycle from a random start: (encoded histories by user, their first
    ``seen`` events to fit on, validation targets at position ``seen``). A model that learns the
    chain reaches a validation HR@10 near 1."""
    import numpy as np

    from streamrec.model.encode import Encoded, build_targets

    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        start = int(rng.integers(2, 20))
        items = np.array([2 + (start + k) % 20 for k in range(length)], dtype=np.int64)
        seqs.append(Encoded(items, np.ones(length, np.int64), np.zeros(length, np.int64),
                            np.arange(length, dtype=np.int64)))
    encoded = {str(u): s for u, s in enumerate(seqs)}
    fit_seqs = [Encoded(s.items[:seen], s.types[:seen], s.gaps[:seen], s.ts[:seen]) for s in seqs]
    return encoded, fit_seqs, build_targets(encoded, [(u, seen) for u in encoded])
