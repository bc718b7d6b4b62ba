"""Train and evaluate end to end: events -> checkpoint + metrics.json + training curve.

The CLI (``streamrec train`` / ``streamrec evaluate``) and the benchmarks call these.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from streamrec.model import checkpoint
from streamrec.model.evaluate import baselines_for
from streamrec.model.events import Interaction
from streamrec.model.lstm import LSTMConfig
from streamrec.model.plots import training_curve
from streamrec.model.prepare import Prepared, prepare
from streamrec.model.splits import split, summary, training_events
from streamrec.model.encode import Encoded
from streamrec.model.train import TrainConfig, evaluate_model, fit, parity_sample, refit
from streamrec.model.warm import grown_config, require_extension


def train(events: list[Interaction], protocol: str, out_dir: str | Path, model_kw: dict | None = None,
          train_cfg: TrainConfig = TrainConfig(), data_info: dict | None = None, progress: bool = True,
          with_baselines: bool = True, init_from: checkpoint.Checkpoint | None = None,
          test_before_finetune: bool = False) -> dict:
    """Fit, pick the best epoch on validation, evaluate on test; write DIR/model.pt,
    DIR/metrics.json and DIR/training_curve.png. Returns the metrics document.

    ``init_from``: continue from this checkpoint (incremental retraining, ``model/warm.py``): its
    vocabularies extended with the new ids of the training events, its model's shape (``model_kw``
    is not used), its weights to start from. ``test_before_finetune``: also evaluate on test the
    model validation chose, before the loo-full fine-tune (``doc["model_before_finetune"]``; its
    time is not counted in ``train_seconds``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if init_from is not None and train_cfg.refit:
        raise ValueError("--refit trains a fresh model again; it cannot be combined with --init-from")
    if init_from is None:
        p = prepare(events, protocol)
        cfg = LSTMConfig(n_items=len(p.items), n_event_types=len(p.types), **(model_kw or {}))
    else:
        seen = training_events(split(events, protocol))
        p = prepare(events, protocol, items=init_from.items.extended(e.item_id for e in seen),
                    types=init_from.types.extended(e.event_type for e in seen))
        require_extension(init_from.items, p.items, "item")
        require_extension(init_from.types, p.types, "event type")
        cfg = grown_config(init_from.model.cfg, len(p.items), len(p.types))
    # loo-full: once validation has chosen the epoch, fine-tune on the validation targets too
    # (the test inputs hold them); temporal: see refit below
    before: dict = {}
    pause = [0.0]

    def test_now(m) -> None:
        t = time.monotonic()
        before.update(evaluate_model(m, p.encoded, p.test))
        pause[0] += time.monotonic() - t

    model, history = fit(cfg, train_cfg, p.fit, p.encoded, p.valid, progress=progress,
                         known=known_events(p) if p.split.protocol == "loo-full" else None,
                         init=None if init_from is None else init_from.model,
                         before_finetune=test_now if test_before_finetune else None)
    best_valid = max(history, key=lambda h: h.get("valid_NDCG@10", float("-inf")))
    refit_epochs = 0
    if (train_cfg.refit and p.split.protocol == "temporal" and "valid_NDCG@10" in best_valid
            and p.split.fit_len != p.split.train_len):
        # validation chose the epochs; the protocol trains on every event before T, so train
        # again on all of them along the same path (loo-full fine-tunes instead, above)
        every = [Encoded(e.items[:k], e.types[:k], e.gaps[:k], e.ts[:k])
                 for u, e in p.encoded.items() if (k := p.split.train_len[u]) > 0]
        model = refit(cfg, train_cfg, every, best_valid["lr_path"], progress=progress)
        refit_epochs = len(best_valid["lr_path"])
    train_s = time.monotonic() - t0 - pause[0]
    test = evaluate_model(model, p.encoded, p.test, desc="test" if progress else None)
    doc = {
        "protocol": p.split.protocol, "split": summary(p.split), "n_items": len(p.items) - 2,
        "model": test, "best_valid": best_valid, "refit_epochs": refit_epochs,
        "finetune_epochs": sum(h.get("phase") == "finetune" for h in history),
        "history": history, "train_seconds": round(train_s, 1),
        "config": cfg.to_dict(), "train_config": train_cfg.to_dict(),
    }
    if before:
        doc["model_before_finetune"] = before
    if with_baselines:
        doc["baselines"] = baselines_for(p, progress=progress)
    info = dict(data_info or {}, protocol=p.split.protocol, fingerprint=p.fingerprint,
                parity_sample=parity_sample(p.fit))
    if init_from is not None:
        doc["init_from"] = info["init_from"] = {
            "data": {k: v for k, v in init_from.data.items() if k != "parity_sample"},
            "items_before": len(init_from.items) - 2, "items_added": len(p.items) - len(init_from.items),
            "items_fingerprint_before": init_from.items.fingerprint()}
    checkpoint.save(checkpoint.Checkpoint(model, p.items, p.types, train_cfg.to_dict(),
                                          {"test": test, "valid": doc["best_valid"]}, info), out)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=float), encoding="utf-8")
    training_curve(history, out / "training_curve.png", title=f"{info.get('name', 'model')} ({p.split.protocol})")
    return doc


def known_events(p: Prepared) -> list[Encoded]:
    """Every event known before the first test target, per user: the training events plus the
    validation targets (loo-full: each history but its last item; temporal: every event before T)."""
    length = dict(p.split.train_len)
    for u, pos in p.split.valid:
        length[u] = max(length[u], pos + 1)
    return [Encoded(e.items[:k], e.types[:k], e.gaps[:k], e.ts[:k])
            for u, e in p.encoded.items() if (k := length[u]) > 0]


def evaluate_checkpoint(ckpt: checkpoint.Checkpoint, events: list[Interaction], protocol: str,
                        with_baselines: bool = True, progress: bool = False, window: int | None = None) -> dict:
    """Test metrics of a checkpoint (its own vocabularies) and of the baselines on ``events``;
    ``window=m`` masks by the serving rule instead of the history rule."""
    p = prepare(events, protocol, items=ckpt.items, types=ckpt.types, window=window)
    doc = {"model": evaluate_model(ckpt.model, p.encoded, p.test, desc="LSTM" if progress else None)}
    if with_baselines:
        doc["baselines"] = baselines_for(p, progress=progress)
    doc["n_targets"] = len(p.test)
    return doc
