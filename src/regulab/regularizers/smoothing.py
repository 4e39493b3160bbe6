"""Label-smoothing cross-entropy with per-member ε and soft targets (for mixup/cutmix).

Convention (Szegedy et al. 2016; torch ``F.cross_entropy(label_smoothing=ε)``, Keras, timm):
the target becomes ``q = (1 − ε)·y + ε/C`` with ``y`` the one-hot (or soft) target, so ε is
spread over all C classes *including* the true one, and the loss is ``−Σ_c q_c·log softmax(z)_c``.
The loss is minimal at ``softmax(z) = q``: confidence is capped at ``1 − ε + ε/C``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import PROB, OneOf, check, register
from ..errors import format_error
from ._strength import check_strength, is_per_member

__all__ = ["label_smoothing_cross_entropy", "LabelSmoothingCrossEntropy"]

REDUCTION = OneOf(("mean", "sum", "none"))
for _where in ("label_smoothing_cross_entropy", "LabelSmoothingCrossEntropy"):
    register(_where, "epsilon", PROB)
    register(_where, "reduction", REDUCTION)


def label_smoothing_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon=0.0, *, reduction: str = "mean"):
    """Cross-entropy against ``(1 − ε)·y + ε/C``; equals ``F.cross_entropy(logits, y, label_smoothing=ε)``.

    Formula: ``loss_b = (1 − ε)·(−Σ_c y_bc log p_bc) + (ε/C)·(−Σ_c log p_bc)``, ``p = softmax(logits)``.

    Args:
        logits: ``(B, C)``, or ``(M, B, C)`` for M stacked members.
        target: class indices ``(B,)`` / ``(M, B)``, or soft targets (rows summing to 1)
            ``(B, C)`` / ``(M, B, C)``; a ``(B, ...)`` target is shared by all members.
        epsilon: ε in [0, 1], or an ``(M,)`` tensor (one ε per member, needs ``(M, B, C)`` logits).
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"``.

    Shape:
        Returns ``()`` / ``(B,)`` for ``(B, C)`` logits and ``(M,)`` / ``(M, B)`` for stacked
        logits (``"mean"``/``"sum"`` and ``"none"`` respectively).

    Returns:
        The loss.

    Examples:
        >>> z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
        >>> a = label_smoothing_cross_entropy(z, y, 0.1)
        >>> torch.allclose(a, F.cross_entropy(z, y, label_smoothing=0.1))
        True
        >>> label_smoothing_cross_entropy(z.expand(2, 1, 3), y, torch.tensor([0.0, 0.1])).shape
        torch.Size([2])
    """
    where = "label_smoothing_cross_entropy"
    epsilon = check_strength(where, "epsilon", epsilon, PROB)
    check(where, "reduction", reduction, REDUCTION)
    stacked = logits.ndim == 3
    if logits.ndim not in (2, 3):
        raise ValueError(format_error(where, "logits", "(B, C) or (M, B, C)", f"shape {tuple(logits.shape)}"))
    if is_per_member(epsilon) and (not stacked or epsilon.shape[0] != logits.shape[0]):
        raise ValueError(format_error(where, "logits", f"(M, B, C) with M = {epsilon.shape[0]} for an (M,) epsilon",
                                      f"shape {tuple(logits.shape)}"))
    n_classes = logits.shape[-1]
    logp = F.log_softmax(logits, dim=-1)  # (..., B, C)
    if target.is_floating_point():
        if target.shape[-1] != n_classes or target.shape[-2] != logits.shape[-2] or target.ndim > logits.ndim:
            raise ValueError(format_error(where, "target", f"soft targets of shape (B, C) or (M, B, C) matching logits "
                                          f"{tuple(logits.shape)}", f"shape {tuple(target.shape)}"))
        nll = -(target * logp).sum(-1)  # (..., B)
    else:
        if target.shape[-1] != logits.shape[-2] or target.ndim >= logits.ndim:
            raise ValueError(format_error(where, "target", f"class indices of shape (B,) or (M, B) matching logits "
                                          f"{tuple(logits.shape)}", f"shape {tuple(target.shape)}"))
        index = target.expand(logits.shape[:-1]).unsqueeze(-1)  # (..., B, 1)
        nll = -logp.gather(-1, index).squeeze(-1)  # (..., B)
    if is_per_member(epsilon):
        eps = epsilon.to(device=logits.device, dtype=logits.dtype).unsqueeze(-1)  # (M, 1)
        loss = (1 - eps) * nll + (eps / n_classes) * (-logp.sum(-1))
    elif epsilon > 0:
        loss = (1 - epsilon) * nll + (epsilon / n_classes) * (-logp.sum(-1))
    else:
        loss = nll
    if reduction == "mean":
        return loss.mean(-1)
    if reduction == "sum":
        return loss.sum(-1)
    return loss


class LabelSmoothingCrossEntropy(nn.Module):
    """Label-smoothing cross-entropy module: target ``(1 − ε)·y + ε/C`` (torch/Keras/timm convention).

    See :func:`label_smoothing_cross_entropy` for the formula and shapes.

    Args:
        epsilon: ε in [0, 1], or an ``(M,)`` tensor for stacked ``(M, B, C)`` logits.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``forward(logits, target)`` returns the loss (``(M,)`` per member when stacked).

    Examples:
        >>> loss = LabelSmoothingCrossEntropy(0.1)
        >>> z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
        >>> torch.allclose(loss(z, y), F.cross_entropy(z, y, label_smoothing=0.1))
        True
    """

    def __init__(self, epsilon=0.1, reduction: str = "mean") -> None:
        super().__init__()
        self.epsilon = check_strength("LabelSmoothingCrossEntropy", "epsilon", epsilon, PROB)
        self.reduction = check("LabelSmoothingCrossEntropy", "reduction", reduction, REDUCTION)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return label_smoothing_cross_entropy(logits, target, self.epsilon, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, reduction={self.reduction!r}"
