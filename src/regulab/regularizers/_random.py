"""Seeded per-sample draws for the augmentation ops.

Every draw happens on the generator's device (the default device when no generator is
given) and is then moved to the data's device, so a CPU generator reproduces the same
augmentation for data on any device. Draws are float64 so that ``floor(u·n)`` is an
unbiased integer in ``[0, n)`` for any realistic n.
"""
from __future__ import annotations

import torch

__all__ = ["uniform", "randint", "randperm"]


def _device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def uniform(shape, generator, device, low=0.0, high=1.0) -> torch.Tensor:
    """``U(low, high)`` float64 draws of ``shape`` (low/high may be tensors broadcasting to it)."""
    u = torch.rand(shape, generator=generator, device=_device(generator, device), dtype=torch.float64).to(device)
    return low + (high - low) * u


def randint(n, shape, generator, device) -> torch.Tensor:
    """Integers uniform in ``[0, n)``; ``n`` an int or an int64 tensor broadcasting to ``shape``."""
    u = uniform(shape, generator, device)
    n = torch.as_tensor(n, device=device)
    return torch.minimum(torch.floor(u * n).long(), n - 1)


def randperm(n: int, generator, device) -> torch.Tensor:
    """A random permutation of ``range(n)``."""
    return torch.randperm(n, generator=generator, device=_device(generator, device)).to(device)
