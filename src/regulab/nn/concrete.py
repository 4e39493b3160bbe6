"""``ConcreteDropout``: dropout whose rate is a learnt parameter (Gal, Hron & Kendall 2017)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import ops
from .._validate import NONNEG, POSITIVE, Interval, check, register
from .base import DropoutBase

__all__ = ["ConcreteDropout", "concrete_regularization"]

_P_INIT = Interval(0.0, 1.0, "neither")
register("ConcreteDropout", "p_init", _P_INIT)
register("ConcreteDropout", "temperature", POSITIVE)
register("ConcreteDropout", "weight_regularizer", NONNEG)
register("ConcreteDropout", "dropout_regularizer", NONNEG)


class ConcreteDropout(DropoutBase):
    """Concrete dropout in front of ``layer``, with a learnable rate ``p = sigmoid(p_logit)``.

    Gal, Hron & Kendall 2017, "Concrete Dropout". Training: ``y = layer(x·(1 − z)/(1 − p))``
    with ``z = sigmoid((logit + log u − log(1−u))/t)`` the relaxed drop indicator; eval:
    ``y = layer(x)``. Each training forward stores ``regularization_``,
    ``w_r·Σθ²/(1−p) + d_r·D·(p·log p + (1−p)·log(1−p))`` (θ: ``layer``'s parameters,
    D: features per sample of ``x``), to add to the loss (see :func:`concrete_regularization`).
    ``p_logit`` is the only state; the rate is learnt, so rate schedules skip this module.

    Args:
        layer: the module the dropped input feeds (its weights enter the regulariser).
            Default: identity (no weight term).
        p_init: initial rate in (0, 1). Default: 0.1.
        temperature: Concrete temperature t. Default: 0.1.
        weight_regularizer: w_r (≈ l²/N). Default: 1e-6.
        dropout_regularizer: d_r (≈ 2/(τN)). Default: 1e-5.

    Shape:
        Input (N, *), output ``layer``'s output.

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.ConcreteDropout(torch.nn.Linear(4, 2), p_init=0.2)
        >>> y = m(torch.randn(8, 4))
        >>> (y + m.regularization_).sum().backward()
        >>> round(m.p, 3), m.p_logit.grad is not None
        (0.2, True)
    """

    learned_p = True  # rate schedules leave it alone

    def __init__(self, layer: nn.Module | None = None, p_init: float = 0.1, temperature: float = 0.1,
                 weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5) -> None:
        nn.Module.__init__(self)  # p is derived from p_logit, not stored
        p_init = float(check("ConcreteDropout", "p_init", p_init, _P_INIT))
        self.temperature = float(check("ConcreteDropout", "temperature", temperature, POSITIVE))
        self.weight_regularizer = float(check("ConcreteDropout", "weight_regularizer", weight_regularizer, NONNEG))
        self.dropout_regularizer = float(check("ConcreteDropout", "dropout_regularizer", dropout_regularizer, NONNEG))
        self.inplace = False
        self.layer = layer if layer is not None else nn.Identity()
        self.p_logit = nn.Parameter(torch.tensor(math.log(p_init) - math.log1p(-p_init)))
        self.regularization_: Tensor | None = None

    @property
    def p(self) -> float:
        """The current rate ``sigmoid(p_logit)`` as a float."""
        return float(torch.sigmoid(self.p_logit.detach()))

    def regularization(self, input_dim: int) -> Tensor:
        """The regulariser for inputs of ``input_dim`` features per sample (differentiable)."""
        sq = sum((q * q).sum() for q in self.layer.parameters()) if any(True for _ in self.layer.parameters()) else 0.0
        return ops.concrete_regularizer(self.p_logit, sq, input_dim, self.weight_regularizer, self.dropout_regularizer)

    def forward(self, input: Tensor) -> Tensor:
        if self.training:
            self.regularization_ = self.regularization(input[0].numel() if input.dim() else 1)
        return self.layer(ops.concrete_dropout(input, self.p_logit, self.temperature, self.training))

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}, temperature={self.temperature}"


def concrete_regularization(model: nn.Module) -> Tensor:
    """Sum of ``regularization_`` over the ``ConcreteDropout`` modules of ``model`` that ran in training.

    Examples:
        >>> import torch, regulab
        >>> net = torch.nn.Sequential(regulab.nn.ConcreteDropout(torch.nn.Linear(3, 1)))
        >>> _ = net(torch.randn(5, 3))
        >>> regulab.nn.concrete_regularization(net).dim()
        0
    """
    terms = [m.regularization_ for m in model.modules()
             if isinstance(m, ConcreteDropout) and m.regularization_ is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())
