"""The paper's optimiser and learning-rate schedule.

MobileNets were trained in TensorFlow 1 with RMSProp, whose update differs from
``torch.optim.RMSprop``: epsilon sits inside the square root, the mean square starts at 1, and the
learning rate is applied inside the momentum buffer. Hyper-parameters tuned for one do not carry
to the other, so :class:`RMSpropTF` reproduces TensorFlow's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("exponential", "cosine")


class RMSpropTF(Optimizer):
    """RMSProp as TensorFlow 1 computes it. For each parameter p with gradient g:

    .. code-block:: text

        g   ← g + weight_decay · p                      (L2 regularisation, as a loss term)
        ms  ← decay · ms + (1 − decay) · g²             (ms starts at ``initial_ms``, TF: 1)
        mom ← momentum · mom + lr · g / √(ms + eps)     (eps inside the root)
        p   ← p − mom
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        decay: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        initial_ms: float = 1.0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        defaults = {
            "lr": lr,
            "decay": decay,
            "momentum": momentum,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_ms": initial_ms,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.full_like(p, group["initial_ms"], memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            square_avg = [self.state[p]["square_avg"] for p in params]
            momentum = [self.state[p]["momentum_buffer"] for p in params]
            grads = [p.grad for p in params]
            # The foreach ops update every tensor of the group in a few kernel launches.
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_mul_(square_avg, group["decay"])
            torch._foreach_addcmul_(square_avg, grads, grads, value=1 - group["decay"])
            denom = torch._foreach_add(square_avg, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(momentum, group["momentum"])
            torch._foreach_addcdiv_(momentum, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, momentum)
        return loss


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def param_groups(model: nn.Module, weight_decay: float, depthwise_weight_decay: float) -> list[dict[str, Any]]:
    """Parameters split by weight decay: ``weight_decay`` on conv and FC weights,
    ``depthwise_weight_decay`` on depthwise filters (the paper: little or none, they hold few
    parameters), none on BatchNorm and biases. Empty groups are left out."""
    depthwise = {id(m.weight) for m in model.modules() if is_depthwise(m)}
    groups: dict[str, list[nn.Parameter]] = {"weights": [], "depthwise": [], "no_decay": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = "no_decay" if p.ndim <= 1 else "depthwise" if id(p) in depthwise else "weights"
        groups[key].append(p)
    decay = {"weights": weight_decay, "depthwise": depthwise_weight_decay, "no_decay": 0.0}
    return [{"params": ps, "weight_decay": decay[key], "name": key} for key, ps in groups.items() if ps]


def lr_factor(
    step: int, *, steps_per_epoch: int, epochs: int, warmup_epochs: float, schedule: str, decay: float
) -> float:
    """Learning rate at optimiser ``step`` as a fraction of the peak.

    Linear warm-up over ``warmup_epochs``, times either ``decay`` ** (whole epochs done)
    ("exponential", the papers' 0.98 per epoch) or a half cosine from the end of warm-up to 0.
    """
    epoch = step / steps_per_epoch
    warm = min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 1.0
    if schedule == "exponential":
        return warm * decay ** math.floor(epoch)
    span = max(epochs - warmup_epochs, 1e-9)
    progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
    return warm * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: Optimizer, *, steps_per_epoch: int, epochs: int, warmup_epochs: float, schedule: str, decay: float
) -> LambdaLR:
    """A per-step scheduler following :func:`lr_factor`; call ``step()`` after each optimiser step."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    return LambdaLR(
        optimizer,
        partial(
            lr_factor,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            schedule=schedule,
            decay=decay,
        ),
    )
