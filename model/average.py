"""The running average of the weights (EMA) that training validates, keeps and returns.

Its decay per optimizer step warms up as (1 + t) / (10 + t) after t steps, so the average never keeps
much of the random initial weights however few steps an epoch has, and stops at a cap: a fixed decay
(``TrainConfig.ema``), or a horizon counted in epochs (``TrainConfig.ema_epochs``), which spans the same
share of training on a data set of any size (its steps per epoch: ``model/train.py`` ``epoch_steps``).
"""
from __future__ import annotations

import torch


def decay_cap(ema: float, ema_epochs: float, steps_per_epoch: int) -> float:
    """The decay the average settles at: ``1 - 1 / (ema_epochs x steps_per_epoch)`` when
    ``ema_epochs`` > 0 (an average over about that many epochs), else ``ema``."""
    if ema_epochs > 0:
        return 1.0 - 1.0 / max(ema_epochs * steps_per_epoch, 1.0)
    return ema


def warm_decay(step: int, cap: float) -> float:
    """The decay applied at optimizer step ``step`` (0-based) of an average capped at ``cap``."""
    return min(cap, (1.0 + step) / (10.0 + step))


class Average:
    """An exponential moving average of ``params``, starting from their current values.

    ``warm``: the decay warms up from step 0 (a fresh run); otherwise it starts at ``cap`` (a run
    that continues from trained weights, as the fine-tune does)."""

    def __init__(self, params: list[torch.Tensor], cap: float, warm: bool = True) -> None:
        self.params = params
        self.values = [p.detach().clone() for p in params]
        self.cap = cap
        self.steps = 0 if warm else 10**9

    def update(self) -> None:
        decay = warm_decay(self.steps, self.cap)
        self.steps += 1
        with torch.no_grad():
            torch._foreach_lerp_(self.values, [p.detach() for p in self.params], 1.0 - decay)

    def reset(self) -> None:
        """Restart the average from the current parameters (its step count goes on)."""
        assign(self.values, self.params)

    def apply(self) -> None:
        """Copy the average into the parameters."""
        assign(self.params, self.values)


def assign(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    with torch.no_grad():
        torch._foreach_copy_(dst, [s.detach() for s in src])
