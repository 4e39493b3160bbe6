"""Batched, seeded data augmentation for 1-D signals, and the ``Augment`` pipeline module.

Convention: ops act on tensors already in memory, one independent draw per sample (dim 0),
shared across channels; ``(B, L)`` or ``(B, C, L)`` signals. Every op takes ``training``
(the input object itself is returned when False, as in eval-mode dropout) and
``generator=`` (same seed → same output). Draws are vectorised: no Python loop over samples.
Inputs stacked for M members, ``(M, B, ...)``, are augmented per sample by flattening
them to ``(M·B, ...)`` first. Image ops live in :mod:`regulab.regularizers.augment_image`, mixup/cutmix in
:mod:`regulab.regularizers.mixing`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._validate import NONNEG, NONNEG_INT, POSITIVE, check, register
from ..errors import format_error
from . import _random
from .noise import gaussian_noise

__all__ = ["random_shift", "random_scale", "additive_noise", "time_mask", "Augment"]

register("random_shift", "max_shift", NONNEG_INT)
register("random_scale", "low", POSITIVE)
register("random_scale", "high", POSITIVE)
register("additive_noise", "sigma", NONNEG)
register("time_mask", "max_width", NONNEG_INT)


def _check_signal(where: str, x: torch.Tensor) -> None:
    if x.ndim not in (2, 3):
        raise ValueError(format_error(where, "x", "a (B, L) or (B, C, L) signal batch", f"shape {tuple(x.shape)}"))


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a ``(B,)`` or ``(B, L)`` draw so it broadcasts over ``x`` (``(B, 1, L)`` for 3-D ``x``)."""
    if v.ndim == 2:
        return v.unsqueeze(1) if x.ndim == 3 else v  # (B, 1, L) or (B, L)
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))  # (B, 1, ..., 1)


def random_shift(x: torch.Tensor, max_shift: int, training: bool = True, *, generator=None) -> torch.Tensor:
    """Circularly shift each signal by a random integer in ``[−max_shift, max_shift]``.

    Formula: ``y[b, ..., t] = x[b, ..., (t − s_b) mod L]`` (``torch.roll`` by ``s_b``).

    Args:
        x: ``(B, L)`` or ``(B, C, L)``.
        max_shift: largest shift in samples (an integer >= 0).
        training: augment only when True.
        generator: torch generator for a reproducible draw.

    Returns:
        The shifted batch (``x`` itself when not training or ``max_shift == 0``).

    Examples:
        >>> x = torch.arange(5.0).expand(2, 5)
        >>> y = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
        >>> [sorted(r.tolist()) == x[0].tolist() for r in y]
        [True, True]
    """
    check("random_shift", "max_shift", max_shift, NONNEG_INT)
    _check_signal("random_shift", x)
    if not training or max_shift == 0 or x.numel() == 0:
        return x
    batch, length = x.shape[0], x.shape[-1]
    shift = _random.randint(2 * max_shift + 1, (batch, 1), generator, x.device) - max_shift  # (B, 1)
    index = (torch.arange(length, device=x.device) - shift) % length  # (B, L)
    return x.gather(-1, _per_sample(index, x).expand_as(x))


def random_scale(x: torch.Tensor, low: float = 0.8, high: float = 1.2, training: bool = True, *, generator=None):
    """Multiply each signal by an amplitude factor drawn from ``U(low, high)``.

    Formula: ``y_b = a_b·x_b``, ``a_b ~ U(low, high)``.

    Args:
        x: ``(B, L)`` or ``(B, C, L)``.
        low: smallest factor (> 0).
        high: largest factor (>= low).
        training: augment only when True.
        generator: torch generator for a reproducible draw.

    Returns:
        The scaled batch (``x`` itself when not training).

    Examples:
        >>> y = random_scale(torch.ones(3, 4), 0.5, 2.0, generator=torch.Generator().manual_seed(0))
        >>> bool(((y >= 0.5) & (y <= 2.0)).all()), bool((y == y[:, :1]).all())
        (True, True)
    """
    check("random_scale", "low", low, POSITIVE)
    check("random_scale", "high", high, POSITIVE)
    if high < low:
        raise ValueError(format_error("random_scale", "high", f"a number >= low ({low})", high))
    _check_signal("random_scale", x)
    if not training or x.numel() == 0:
        return x
    factor = _random.uniform((x.shape[0],), generator, x.device, low, high).to(x.dtype)  # (B,)
    return x * _per_sample(factor, x)


def additive_noise(x: torch.Tensor, sigma: float = 0.05, training: bool = True, *, generator=None) -> torch.Tensor:
    """Add Gaussian noise ``N(0, σ²)`` to every sample point (the augmentation form of :func:`gaussian_noise`).

    Formula: ``y = x + σ·ε``, ``ε ~ N(0, 1)`` elementwise.

    Args:
        x: any batch.
        sigma: σ (a number >= 0).
        training: augment only when True.
        generator: torch generator for a reproducible draw.

    Returns:
        The noisy batch (``x`` itself when not training or σ = 0).

    Examples:
        >>> x = torch.zeros(2, 8)
        >>> additive_noise(x, 0.1, training=False) is x
        True
    """
    check("additive_noise", "sigma", sigma, NONNEG)
    return gaussian_noise(x, sigma, training, generator=generator)


def time_mask(x: torch.Tensor, max_width: int, training: bool = True, *, value: float = 0.0, generator=None):
    """Set one random window of each signal to ``value`` (SpecAugment time masking, Park et al. 2019).

    Formula: width ``w_b ~ U{0..max_width}`` (capped at L), start ``t0_b ~ U{0..L−w_b}``;
    ``y[b, ..., t] = value`` for ``t0_b <= t < t0_b + w_b``, else ``x``. Shared over channels.

    Args:
        x: ``(B, L)`` or ``(B, C, L)``.
        max_width: widest window in samples (an integer >= 0).
        training: augment only when True.
        value: fill value.
        generator: torch generator for a reproducible draw.

    Returns:
        The masked batch (``x`` itself when not training or ``max_width == 0``).

    Examples:
        >>> y = time_mask(torch.ones(4, 10), 3, generator=torch.Generator().manual_seed(0))
        >>> bool(((10 - y.sum(1)) <= 3).all())
        True
    """
    check("time_mask", "max_width", max_width, NONNEG_INT)
    _check_signal("time_mask", x)
    if not training or max_width == 0 or x.numel() == 0:
        return x
    batch, length = x.shape[0], x.shape[-1]
    width = _random.randint(min(max_width, length) + 1, (batch, 1), generator, x.device)  # (B, 1)
    start = _random.randint(length - width + 1, (batch, 1), generator, x.device)  # (B, 1)
    t = torch.arange(length, device=x.device)  # (L,)
    masked = (t >= start) & (t < start + width)  # (B, L)
    return x.masked_fill(_per_sample(masked, x), value)


class Augment(nn.Module):
    """Apply augmentation ops in order in training; return the input itself in eval.

    Each op is a callable ``op(x, *, generator=...)`` such as
    ``functools.partial(random_shift, max_shift=4)``; the module's ``generator`` is passed to
    each, so one seed reproduces the whole pipeline.

    Args:
        *ops: the augmentation callables.
        generator: torch generator shared by the ops (None: torch's default generator).

    Returns:
        ``forward(x)`` returns the augmented batch.

    Examples:
        >>> from functools import partial
        >>> aug = Augment(partial(random_shift, max_shift=2), partial(time_mask, max_width=3))
        >>> x = torch.randn(4, 16)
        >>> aug.eval()(x) is x, aug.train()(x).shape
        (True, torch.Size([4, 16]))
    """

    def __init__(self, *ops: Callable[..., torch.Tensor], generator: torch.Generator | None = None) -> None:
        super().__init__()
        for i, op in enumerate(ops):
            if not callable(op):
                raise ValueError(format_error("Augment", f"ops[{i}]", "callable", op))
        self.ops = list(ops)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        for op in self.ops:
            x = op(x, generator=self.generator)
        return x

    def extra_repr(self) -> str:
        return ", ".join(getattr(op, "__name__", None) or getattr(getattr(op, "func", None), "__name__", repr(op))
                         for op in self.ops)
