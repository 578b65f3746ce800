"""Training and evaluation with the paper's recipe: :func:`train`, :func:`evaluate_weights`, their parts.

The run folder (``TrainConfig.out``) holds ``config.json``, ``metrics.jsonl``/``metrics.csv``,
``curves.png``, ``last.safetensors`` (the checkpoint to resume from), ``previous.safetensors``
(the one before it), ``best.safetensors`` (the best weights), and at the end ``confusion.png`` and
``report.json``; ``.lock`` is locked by the run writing into the folder.
"""

from ..checkpoint import load_checkpoint, read_saved_weights, save_checkpoint, save_weights
from .config import TrainConfig
from .ema import ModelEma
from .evaluate import EvalResult, evaluate
from .loop import NonFiniteLoss, TrainingInterrupted, TrainResult, resume_config, train
from .optim import RMSpropTF, build_scheduler, lr_factor, param_groups

__all__ = [
    "EvalResult",
    "ModelEma",
    "NonFiniteLoss",
    "RMSpropTF",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_scheduler",
    "evaluate",
    "load_checkpoint",
    "lr_factor",
    "param_groups",
    "read_saved_weights",
    "resume_config",
    "save_checkpoint",
    "save_weights",
    "train",
]
