"""The run the training tests start from: a few seconds on the ``folder`` fixture's images."""

from pathlib import Path

from mobilenets.train import TrainConfig

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
