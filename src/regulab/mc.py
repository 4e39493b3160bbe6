"""Monte Carlo dropout: keep dropout sampling at inference, everything else in eval.

Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation". ``T`` stochastic
forward passes give a predictive distribution: mean ``(1/T)·Σ f_t(x)``, spread
from the samples. BatchNorm and every other module stay in eval mode (running
statistics, no updates).

What is switched on: every module for which :func:`regulab.nn.is_dropout_module`
is true — regulab's dropout family (``DropoutBase``, including ``DropConnectLinear``,
``drop_connect`` parametrizations and ``ConcreteDropout``) and torch.nn's
``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout`` — plus any
types passed in ``include``. Only the module's own flag is set, not its children's
(``ConcreteDropout(layer)`` samples while ``layer`` stays in eval).

Limits (stated honestly):

* Functional calls follow whatever flag they are given. ``F.dropout(x, p,
  training=self.training)`` inside a custom module samples only if *that* module's
  flag is on: it stays off here unless its type is in ``include``. A hard-coded
  ``F.dropout(x, p)`` (``training=True`` by default) samples in eval too — a bug
  that ``regulab doctor`` reports, not something this context can fix.
* The dropout inside ``nn.RNN/LSTM/GRU(dropout=...)`` follows the RNN's flag; pass
  the RNN type in ``include`` to sample it (its other behaviour has no train/eval difference).
* ``GaussianNoise`` and other noise layers without a ``p`` are not dropout modules
  and stay off.
* The flags are restored on exit, even on error; modules added inside the block
  are left as they are.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ._validate import POS_INT, check, register
from .nn.base import is_dropout_module

__all__ = ["mc_dropout", "mc_predict"]

register("mc_predict", "samples", POS_INT)


@contextlib.contextmanager
def mc_dropout(model: nn.Module, include: tuple[type[nn.Module], ...] = ()) -> Iterator[nn.Module]:
    """Context manager: dropout-family modules sample, every other module is in eval; modes restored on exit.

    Args:
        model: any module tree.
        include: extra module types to switch on (e.g. a custom dropout class).

    Returns:
        The model, inside the ``with`` block.

    Examples:
        >>> import torch, regulab
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
        >>> with regulab.mc_dropout(net):
        ...     print(net[1].training, net[2].training)
        False True
        >>> net[1].training, net[2].training
        (True, True)
    """
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for m in model.modules():
            if is_dropout_module(m) or (include and isinstance(m, include)):
                m.training = True  # this module only, not its children
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def mc_predict(model: nn.Module, x: Tensor, samples: int = 30, include: tuple[type[nn.Module], ...] = ()) -> Tensor:
    """``samples`` stochastic forward passes of ``model`` on ``x`` under :func:`mc_dropout`, stacked.

    Runs without gradients. The mean over dim 0 is the MC prediction; T = 10…100 in
    practice (it matches the weight-scaling eval prediction at about T = 50 on MNIST,
    Srivastava et al. 2014).

    Args:
        model: a module returning one tensor.
        x: its input.
        samples: the number T of passes (>= 1).
        include: extra module types to switch on (see :func:`mc_dropout`).

    Shape:
        Output (T, *out) where ``model(x)`` has shape ``out``.

    Returns:
        The stacked outputs.

    Examples:
        >>> import torch, regulab
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2), regulab.nn.Dropout(0.5)).eval()
        >>> y = regulab.mc_predict(net, torch.randn(3, 4), samples=5)
        >>> y.shape, net.training
        (torch.Size([5, 3, 2]), False)
    """
    samples = check("mc_predict", "samples", samples, POS_INT)
    with mc_dropout(model, include), torch.no_grad():
        return torch.stack([model(x) for _ in range(samples)])
