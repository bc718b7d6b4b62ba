"""Checkpoints as plain data: state_dict, configs, vocabularies, metrics, data fingerprint.

Never a pickled module: ``load`` is the one place that reads a checkpoint, with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamrec.model.lstm import LSTMConfig, LSTMRecommender
from streamrec.model.vocab import Vocab

FORMAT = "streamrec.checkpoint"
VERSION = 1
FILENAME = "model.pt"


@dataclass
class Checkpoint:
    model: LSTMRecommender
    items: Vocab
    types: Vocab
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # path, format, protocol, fingerprint, summary


def save(ckpt: Checkpoint, out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "version": VERSION,
        "config": ckpt.model.cfg.to_dict(),
        "state_dict": ckpt.model.state_dict(),
        "items": ckpt.items.to_dict(), "types": ckpt.types.to_dict(),
        "train_config": ckpt.train_config, "metrics": ckpt.metrics, "data": ckpt.data,
    }
    path = out / FILENAME
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint
    return path


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """Load ``DIR/model.pt`` (or the file itself); raises ValueError with what is wrong."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.exists():
        raise ValueError(f"no checkpoint at {p} (train one with: streamrec train --out DIR)")
    payload = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{p} is not a streamrec checkpoint")
    if payload.get("version") != VERSION:
        raise ValueError(f"{p}: checkpoint version {payload.get('version')} (this code reads {VERSION})")
    model = LSTMRecommender(LSTMConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return Checkpoint(model=model.eval(), items=Vocab.from_dict(payload["items"]),
                      types=Vocab.from_dict(payload["types"]), train_config=payload["train_config"],
                      metrics=payload["metrics"], data=payload["data"])
