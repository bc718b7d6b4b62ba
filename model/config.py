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
    patience: int = 4  # epochs without progress on validation NDCG@10 before stopping
    min_delta: float = 0.001  # progress = a gain of more than this share of the score since the
    # last epoch that made progress (smaller gains still update the best weights; 0 = any gain)
    lr_decay: float = 0.5  # after ``decay_patience`` epochs without gain: lr *= this (and, with
    # ``decay_resume``, back to the best weights; 1 = off)
    decay_patience: int = 2  # plateau schedule: epochs in a row without a gain (counted again after each
    # decay) before the rate decays; 1 = on the first such epoch (the rule before 2026-12-07)
    decay_resume: bool = True  # plateau schedule: a decay goes back to the best weights (False: the
    # run goes on from its current weights at the smaller rate)
    schedule: str = "plateau"  # "plateau" (lr_decay above) or "cosine" (lr follows half a cosine
    # from lr to 0 over ``epochs``; lr_decay unused)
    clip: float = 5.0
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    time_budget_s: float = 0.0  # stop after this much wall time (0 = none); best epoch is kept
    mask_seen: bool = True  # training loss ranks only items not yet in the user's history (the
    # target itself always counts), as evaluation and serving do
    item_mask: float = 0.2  # share of input items replaced by the out-of-vocabulary id in training
    refit: bool = False  # temporal protocol: after validation has chosen the epochs, train a fresh
    # model on every event before T along the same learning-rate path (loo-full: never)
    finetune: int = 5  # loo-full: after early stopping, continue from the best weights for this
    # many epochs on every event of the test inputs (the validation targets included); 0 = off
    finetune_lr: float = 1.0  # learning rate of those epochs, as a share of ``lr``
    negatives: int = 0  # > 0: sampled softmax in training: each chunk's targets are ranked against
    # this many items drawn uniformly (shared by the chunk's positions) instead of the whole catalog
    # (seen items and the target itself excluded from them); 0: the whole catalog
    score_block: int = 512  # > 0: a chunk's whole-catalog scores and their loss in blocks of this many rows
    # (a chunk has up to batch_size x max_len; a [512, 12k] block is faster a row than [3000, 12k]);
    # 0: one block (with ``ema_epochs`` 0 as well: the figures of every run before 2026-12-07 to the last digit)
    label_smoothing: float = 0.0  # > 0: training targets are (1 - this) on the true next item plus this
    # spread evenly over the items the loss ranks it against (seen items, PAD and OOV get none;
    # with ``negatives``, over the draws that count); 0: off
    ema: float = 0.99  # > 0: validate, keep and return an exponential moving average of the
    # weights instead of the last weights (with ``ema_epochs`` 0: this decay per optimizer step)
    ema_epochs: float = 3.0  # > 0: the average's decay settles at 1 - 1 / (this x optimizer steps in an
    # epoch), a horizon of about this many epochs on a data set of any size, instead of ``ema``
    # (which must still be > 0: 0 turns the average off); 0: the fixed decay ``ema`` (the default before
    # 2026-12-07)

    def to_dict(self) -> dict:
        return asdict(self)
