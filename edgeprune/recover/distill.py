"""Knowledge distillation loss (Hinton et al. 2015) for recovering a pruned student.

Consumes: student logits, teacher logits (the unpruned model's), integer targets, a temperature
and a weight. Produces: one scalar loss tensor and its two parts, so the fine-tuning loop can log
how much of the signal came from the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float = 4.0,
    weight: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(loss, ce, kd)`` with ``loss = (1 - weight) * ce + weight * kd``.

    ``kd`` is ``T^2 * KL(softmax(t/T) || softmax(s/T))``; the ``T^2`` keeps its gradient scale
    independent of the temperature (Hinton et al.), so ``weight`` means the same at any ``T``.
    Without a teacher, ``kd`` is zero and the loss is plain cross-entropy.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight must be in [0, 1], got {weight}")
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    ce = F.cross_entropy(student_logits, targets)
    if teacher_logits is None or weight == 0.0:
        return ce, ce.detach(), torch.zeros((), dtype=ce.dtype)
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kd = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)
    loss = (1.0 - weight) * ce + weight * kd
    return loss, ce.detach(), kd.detach()
