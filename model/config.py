"""Training settings (torch-free, so ``streamrec train --help`` shows defaults without torch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 128  # users per batch
    max_len: int = 50  # truncated-BPTT chunk length (events)
    lr: float = 2e-3
    weight_decay: float = 0.05
    patience: int = 4  # epochs without validation NDCG@10 gain before stopping
    lr_decay: float = 0.5  # on an epoch without gain: go back to the best weights, lr *= this (1 = off)
    clip: float = 5.0
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    time_budget_s: float = 0.0  # stop after this much wall time (0 = none); best epoch is kept

    def to_dict(self) -> dict:
        return asdict(self)
