"""Knowledge distillation (Hinton et al., 2015): a trained teacher's softened outputs as extra targets.

The student's loss per image is ``(1 - alpha) · cross-entropy(labels) + alpha · T² · KL(teacher_T ‖ student_T)``,
where ``x_T = softmax(logits / T)``; the factor ``T²`` keeps the soft term's gradients on the
scale of the hard one as ``T`` changes.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per image ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``: logits (N, classes) -> (N,)."""
    student_log = F.log_softmax(student / temperature, dim=1)
    teacher_log = F.log_softmax(teacher / temperature, dim=1)
    return temperature**2 * (teacher_log.exp() * (teacher_log - student_log)).sum(dim=1)
