"""The run the training tests start from: a few seconds on the ``folder`` fixture's images."""

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from mobilenets.train import TrainConfig
from mobilenets.train.loop import Trainer

MODEL = "mobilenet_v1_0.25_128"


def tiny(data: Path | str, out: Path, **changes: object) -> TrainConfig:
    """α = 0.25 at 32×32, 2 epochs of 4 steps on the synthetic set; ``changes`` override."""
    values = {
        "model": MODEL,
        "data": str(data),
        "out": str(out),
        "resolution": 32,
        "epochs": 2,
        "batch_size": 16,
        "warmup_epochs": 0.5,
        "workers": 0,
        "threads": 1,
        **changes,
    }
    return TrainConfig(**values)


def spying(trainer: type[Trainer]) -> type[Trainer]:
    """``trainer`` recording, in its class's ``seen``, the input of each forward pass of its student
    (while training) and of its teacher, by forward hooks: ``seen[who]`` lists (H, W, data address)."""

    class Spy(trainer):  # type: ignore[misc, valid-type]
        seen: ClassVar[dict[str, list[tuple[int, int, int]]]] = {}

        def _build_model(self, resume: bool) -> None:
            super()._build_model(resume)
            Spy.seen = {"student": [], "teacher": []}

            def record(who: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
                def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                    if module.training or who == "teacher":
                        Spy.seen[who].append((*args[0].shape[-2:], args[0].data_ptr()))

                return hook

            self.net.register_forward_pre_hook(record("student"))
            if self.teacher is not None:
                self.teacher.register_forward_pre_hook(record("teacher"))

    return Spy
