"""Exponential moving average of a model's weights, evaluated in place of the raw weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    """A frozen copy of ``model`` whose parameters and BatchNorm statistics track the model's.

    As TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``, the decay after t updates is
    ``min(decay, (1 + t) / (10 + t))``: short runs average over their recent steps rather than
    staying close to the random initialisation. Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay!r}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1 - self.current_decay()
        averaged, current = [], []
        for mine, theirs in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, weight)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
