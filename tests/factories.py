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
    """A tiny trained checkpoint (model.checkpoint.Checkpoint) and its Prepared data."""
    from streamrec.model.checkpoint import Checkpoint
    from streamrec.model.lstm import LSTMConfig
    from streamrec.model.prepare import prepare
    from streamrec.model.train import TrainConfig, fit, parity_sample

    p = prepare(events, protocol)
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
