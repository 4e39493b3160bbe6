"""Additive Gaussian input noise, training only, seeded, with a per-member σ.

Convention (Keras ``GaussianNoise``; Bishop 1995: training with noise ≈ Tikhonov
regularisation): ``y = x + σ·ε``, ``ε ~ N(0, 1)`` elementwise, in training; in eval the
input object itself is returned. ``σ`` may be an ``(M,)`` tensor for inputs stacked on a
leading member dim ``(M, B, ...)``. The noise itself is :func:`regulab.ops.gaussian_noise`
(one implementation: seeded counter-based normals, numba kernel on CPU).
"""
from __future__ import annotations

import torch
from torch import nn

from .._validate import NONNEG, register
from ..ops.gaussian import gaussian_noise as ops_gaussian_noise
from ._strength import check_strength

__all__ = ["gaussian_noise", "GaussianNoise", "randn_like_seeded"]

register("gaussian_noise", "sigma", NONNEG)
register("GaussianNoise", "sigma", NONNEG)


def randn_like_seeded(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device, then moved to ``x``'s.

    Drawing on the generator's device keeps a CPU generator usable (and reproducible) for
    inputs on any device.
    """
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def gaussian_noise(x: torch.Tensor, sigma, training: bool = True, *, generator: torch.Generator | None = None):
    """Add ``N(0, σ²)`` noise to ``x`` in training; return ``x`` itself otherwise.

    Formula: ``y = x + σ·ε``, ``ε ~ N(0, 1)``. One implementation with
    :func:`regulab.ops.gaussian_noise` (this calls it): seeded counter-based normals,
    the numba kernel on CPU, one seed drawn from ``generator`` per call.

    Args:
        x: any floating tensor; ``(M, B, ...)`` when ``sigma`` is per member.
        sigma: σ, a number >= 0, or an ``(M,)`` tensor (one σ per member).
        training: apply the noise only when True.
        generator: torch generator that makes the draw reproducible.

    Returns:
        A new tensor in training (σ > 0), else ``x`` itself.

    Examples:
        >>> x = torch.zeros(2, 3)
        >>> gaussian_noise(x, 0.1, training=False) is x
        True
        >>> a = gaussian_noise(x, 1.0, generator=torch.Generator().manual_seed(0))
        >>> b = gaussian_noise(x, 1.0, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(a, b)
        True
    """
    sigma = check_strength("gaussian_noise", "sigma", sigma, NONNEG)
    return ops_gaussian_noise(x, sigma, training, generator=generator)


class GaussianNoise(nn.Module):
    """Additive Gaussian input noise ``y = x + σ·ε`` in training, identity in eval (Keras ``GaussianNoise``).

    Args:
        sigma: σ, a number >= 0, or an ``(M,)`` tensor for ``(M, B, ...)`` inputs.
        generator: optional torch generator used for every call.

    Returns:
        ``forward(x)`` returns the noisy input (``x`` itself in eval).

    Examples:
        >>> layer = GaussianNoise(0.5).eval()
        >>> x = torch.ones(3)
        >>> layer(x) is x
        True
    """

    def __init__(self, sigma=0.1, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = check_strength("GaussianNoise", "sigma", sigma, NONNEG)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_noise(x, self.sigma, self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
