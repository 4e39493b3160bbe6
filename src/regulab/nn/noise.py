"""Gaussian noise modules: multiplicative ``GaussianDropout`` and additive ``GaussianNoise``."""
from __future__ import annotations

from torch import Tensor, nn

from .. import ops
from .._validate import NONNEG, PROB_OPEN_RIGHT, check, check_p, register
from .base import DropoutBase

__all__ = ["GaussianDropout", "GaussianNoise"]

register("GaussianDropout", "p", PROB_OPEN_RIGHT)
register("GaussianNoise", "sigma", NONNEG)


class GaussianDropout(DropoutBase):
    """Multiplicative Gaussian noise with dropout's variance (Srivastava et al. 2014, §10).

    ``y = x·(1 + σz)``, ``z ~ N(0, 1)``, ``σ² = p/(1−p)``; the input itself in eval
    (no rescaling). Seeded paired Box-Muller kernel.

    Args:
        p: drop probability in [0, 1) that sets σ. Default: 0.5.

    Shape:
        Input (*), output (*).

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.GaussianDropout(0.5)
        >>> m
        GaussianDropout(p=0.5)
        >>> x = torch.ones(3); m.eval()(x) is x
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(check_p("GaussianDropout", p, PROB_OPEN_RIGHT))

    def forward(self, input: Tensor) -> Tensor:
        return ops.gaussian_dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GaussianNoise(nn.Module):
    """Additive Gaussian noise ``y = x + σz`` in training, identity in eval (Keras ``GaussianNoise``).

    Seeded counter-based normals (the same kernel as :class:`GaussianDropout`). Not a
    dropout module (it has no ``p``), so MC dropout and rate schedules leave it alone.

    Args:
        sigma: standard deviation σ >= 0. Default: 0.1.

    Shape:
        Input (*), output (*).

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.GaussianNoise(0.5)
        >>> m
        GaussianNoise(sigma=0.5)
        >>> x = torch.ones(3); m.eval()(x) is x
        True
    """

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        self.sigma = float(check("GaussianNoise", "sigma", sigma, NONNEG))

    def forward(self, input: Tensor) -> Tensor:
        return ops.gaussian_noise(input, self.sigma, self.training)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
