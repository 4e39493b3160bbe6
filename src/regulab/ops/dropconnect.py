"""DropConnect: dropout on the weight matrix instead of the activations.

Wan et al. 2013, "Regularization of Neural Networks using DropConnect". Each
forward draws a fresh mask on ``W`` (seeded, mask-free: the weight goes through
:func:`regulab.ops.dropout`), ``y = x·(W⊙M/(1−p))ᵀ + b``. With the inverted
scaling the mean weight is ``W``, so inference uses ``W`` itself (the paper's
moment-matched Gaussian inference is not implemented).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validate import PROB, check_p, register
from .dropout import dropout

__all__ = ["drop_connect_linear"]

register("drop_connect_linear", "p", PROB)


def drop_connect_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, p: float = 0.5,
                        training: bool = True, *, generator: torch.Generator | None = None) -> Tensor:
    """``F.linear`` with a fresh dropout mask on ``weight`` (DropConnect, Wan et al. 2013).

    Formula: ``y = x·(W⊙M/(1−p))ᵀ + b``, ``M ~ Bernoulli(1−p)``; ``y = x·Wᵀ + b`` in eval.
    The bias is not dropped.

    Args:
        x: (*, in_features).
        weight: (out_features, in_features).
        bias: (out_features,) or None.
        p: drop probability of a weight in [0, 1].
        training: drop weights (True) or use the mean weight ``W``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (*, in), output (*, out).

    Returns:
        The linear map of ``x``.

    Examples:
        >>> import torch, regulab
        >>> w = torch.ones(3, 4)
        >>> regulab.ops.drop_connect_linear(torch.ones(1, 4), w, p=0.5, training=False)
        tensor([[4., 4., 4.]])
    """
    p = check_p("drop_connect_linear", p)
    return F.linear(x, dropout(weight, p, training, generator=generator), bias)
