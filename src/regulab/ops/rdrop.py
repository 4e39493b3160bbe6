"""R-Drop: make two dropout passes agree.

Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks". Two
stochastic forward passes give ``P`` and ``Q``; the loss is
``CE = (CE(P, y) + CE(Q, y))/2`` plus ``α·(KL(P‖Q) + KL(Q‖P))/2``. KL terms are
summed over classes and averaged over the batch (the official code sums over
the batch; divide ``alpha`` by the batch size to compare).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import NONNEG, check, register

__all__ = ["rdrop_kl", "rdrop_loss", "rdrop"]

register("rdrop_loss", "alpha", NONNEG)


def rdrop_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Symmetric KL ``(KL(P‖Q) + KL(Q‖P))/2`` of two logit tensors (N, C), batch mean.

    Examples:
        >>> import torch
        >>> from regulab.ops import rdrop_kl
        >>> a = torch.randn(4, 3)
        >>> float(rdrop_kl(a, a))
        0.0
    """
    lp, lq = F.log_softmax(logits_p, dim=-1), F.log_softmax(logits_q, dim=-1)
    kl_pq = F.kl_div(lq, lp, reduction="batchmean", log_target=True)  # KL(P‖Q)
    kl_qp = F.kl_div(lp, lq, reduction="batchmean", log_target=True)  # KL(Q‖P)
    return (kl_pq + kl_qp) / 2


def rdrop_loss(logits_p: Tensor, logits_q: Tensor, target: Tensor, alpha: float = 1.0) -> Tensor:
    """R-Drop loss from two passes' logits: ``(CE(P,y) + CE(Q,y))/2 + α·(KL(P‖Q) + KL(Q‖P))/2``.

    Args:
        logits_p: (N, C) logits of the first pass.
        logits_q: (N, C) logits of the second pass.
        target: (N,) class indices.
        alpha: weight α >= 0 of the consistency term.

    Returns:
        A 0-dim loss.

    Examples:
        >>> import torch
        >>> from regulab.ops import rdrop_loss
        >>> a, y = torch.zeros(2, 4), torch.tensor([0, 1])
        >>> round(float(rdrop_loss(a, a, y, alpha=1.0)), 4)  # log 4, no KL
        1.3863
    """
    alpha = float(check("rdrop_loss", "alpha", alpha, NONNEG))
    ce = (F.cross_entropy(logits_p, target) + F.cross_entropy(logits_q, target)) / 2
    return ce + alpha * rdrop_kl(logits_p, logits_q)


def rdrop(model: nn.Module, x: Tensor, target: Tensor, alpha: float = 1.0) -> Tensor:
    """Run ``model`` twice on ``x`` (two dropout masks) and return :func:`rdrop_loss`.

    The model must be in training mode for the passes to differ.

    Examples:
        >>> import torch, regulab
        >>> net = torch.nn.Sequential(torch.nn.Linear(5, 3), regulab.nn.Dropout(0.3))
        >>> loss = regulab.ops.rdrop(net, torch.randn(8, 5), torch.randint(0, 3, (8,)))
        >>> loss.backward()
    """
    return rdrop_loss(model(x), model(x), target, alpha)


del torch
