"""DropConnect modules: ``DropConnectLinear`` and ``drop_connect`` (weight dropout for any module).

Wan et al. 2013, "Regularization of Neural Networks using DropConnect"; weight-dropped
LSTMs in Merity et al. 2018 (AWD-LSTM ``WeightDrop``). The mask goes on weights, not on
activations, and is redrawn every forward (seeded, mask-free: :func:`regulab.ops.dropout`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import ops
from .._validate import PROB, register
from ..errors import format_error
from .base import DropoutBase

__all__ = ["DropConnectLinear", "WeightDropout", "drop_connect"]

register("DropConnectLinear", "p", PROB)
register("WeightDropout", "p", PROB)


class DropConnectLinear(DropoutBase):
    """A ``nn.Linear`` whose weight matrix is dropped out each forward (DropConnect).

    ``y = x·(W⊙M/(1−p))ᵀ + b``, ``M ~ Bernoulli(1−p)`` in training; ``y = x·Wᵀ + b`` (the
    mean weight) in eval. Same parameters, initialisation and ``state_dict`` keys as
    ``nn.Linear``, so weights load both ways.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias (not dropped). Default: True.
        p: drop probability of a weight. Default: 0.5.

    Shape:
        Input (*, in_features), output (*, out_features).

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.DropConnectLinear(4, 3, p=0.5)
        >>> m
        DropConnectLinear(in_features=4, out_features=3, bias=True, p=0.5)
        >>> sorted(m.state_dict())
        ['bias', 'weight']
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5,
                 device=None, dtype=None) -> None:
        super().__init__(p)
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **kw))
        else:
            self.register_parameter("bias", None)
        nn.Linear.reset_parameters(self)  # torch's own initialisation

    def forward(self, input: Tensor) -> Tensor:
        return ops.drop_connect_linear(input, self.weight, self.bias, self.p, self.training)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, p={self.p}"


class WeightDropout(DropoutBase):
    """Parametrization ``W ↦ dropout(W, p)`` used by :func:`drop_connect`; follows the host module's mode.

    Examples:
        >>> import torch, regulab
        >>> w = regulab.nn.WeightDropout(0.5).eval()(torch.ones(2))
        >>> w
        tensor([1., 1.])
    """

    def forward(self, weight: Tensor) -> Tensor:
        return ops.dropout(weight, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_connect(module: nn.Module, p: float = 0.5, names: Sequence[str] = ("weight",)) -> nn.Module:
    """Apply DropConnect to the named parameters of any module, in place (weight dropout).

    Registers a :class:`WeightDropout` parametrization (``torch.nn.utils.parametrize``) on
    each name: every access to ``module.<name>`` in training returns a freshly dropped copy;
    in eval it returns the parameter itself. The parametrization is a child of ``module``,
    so ``module.train()``/``eval()`` (and :func:`regulab.mc_dropout`) drive it. The
    parameter moves to ``module.parametrizations.<name>.original`` in ``state_dict``;
    ``parametrize.remove_parametrizations(module, name, leave_parametrized=False)`` undoes it.
    Modules that cache flat weight copies (cuDNN ``nn.LSTM``) do not see the parametrized
    weight; use it on ``Linear``/``Conv`` layers or on custom recurrent cells.

    Args:
        module: the module to modify.
        p: drop probability of a weight in [0, 1].
        names: parameter names to drop. Default: ("weight",).

    Returns:
        ``module`` itself.

    Examples:
        >>> import torch, regulab
        >>> lin = regulab.nn.drop_connect(torch.nn.Linear(4, 3), p=0.5)
        >>> bool((lin.weight == 0).any()), lin.eval().weight is lin.parametrizations.weight.original
        (True, True)
    """
    drop = WeightDropout(p)  # validates p
    for name in names:
        if not isinstance(getattr(module, name, None), nn.Parameter):
            raise ValueError(format_error("drop_connect", "names", f"parameter names of {type(module).__name__}",
                                          name, f"parameters: {[n for n, _ in module.named_parameters(recurse=False)]}"))
        parametrize.register_parametrization(module, name, WeightDropout(drop.p), unsafe=False)
        getattr(module.parametrizations, name)[0].train(module.training)
    return module

