"""Mixup and CutMix with the matching target mixing, seeded and vectorised.

Convention: mixup (Zhang et al. 2018) ``x̃ = λ·x + (1 − λ)·x[π]``; CutMix (Yun et al. 2019)
pastes a box of ``x[π]`` covering a fraction ``1 − λ`` of the image, λ then set to the
exact uncovered area. In both, λ ~ Beta(α, α), π is a random permutation of the batch and
the target is ``λ·y + (1 − λ)·y[π]`` (equivalently ``λ·CE(y) + (1 − λ)·CE(y[π])``).
One λ per batch as in the papers, or one per sample with ``per_sample=True``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betaincinv

from .._validate import POSITIVE, POS_INT, check, register
from ..errors import format_error
from . import _random

__all__ = ["MixResult", "mixup", "cutmix", "sample_beta"]

register("mixup", "alpha", POSITIVE)
register("cutmix", "alpha", POSITIVE)
register("MixResult.soft_targets", "num_classes", POS_INT)


class MixResult(NamedTuple):
    """What :func:`mixup`/:func:`cutmix` return: mixed inputs, both targets and λ (``()`` or ``(B,)``)."""

    inputs: torch.Tensor
    targets_a: torch.Tensor
    targets_b: torch.Tensor
    lam: torch.Tensor

    def soft_targets(self, num_classes: int | None = None) -> torch.Tensor:
        """``λ·onehot(y_a) + (1 − λ)·onehot(y_b)``, shape ``(B, C)``; soft targets are mixed as given.

        Feed them to :func:`~regulab.regularizers.label_smoothing_cross_entropy` (or
        ``F.cross_entropy``), which accept soft targets.
        """
        a, b = self.targets_a, self.targets_b
        if not a.is_floating_point():
            check("MixResult.soft_targets", "num_classes", num_classes, POS_INT, "pass the number of classes")
            a, b = F.one_hot(a, num_classes).float(), F.one_hot(b, num_classes).float()  # (B, C)
        lam = self.lam.to(a.dtype)
        lam = lam[:, None] if lam.ndim == 1 else lam  # (B, 1) or ()
        return lam * a + (1 - lam) * b


def sample_beta(alpha: float, shape, generator=None, device=None) -> torch.Tensor:
    """Seeded ``Beta(α, α)`` draws (float64) by inverting the CDF of a torch uniform draw.

    torch's Beta distribution takes no generator; inverting the regularised incomplete beta
    function (scipy ``betaincinv``) keeps the draw tied to ``generator``.

    Examples:
        >>> lam = sample_beta(0.4, (1000,), torch.Generator().manual_seed(0))
        >>> bool(((lam >= 0) & (lam <= 1)).all()), abs(lam.mean().item() - 0.5) < 0.05
        (True, True)
    """
    device = device if device is not None else torch.device("cpu")
    u = _random.uniform(shape, generator, device)
    return torch.as_tensor(np.asarray(betaincinv(alpha, alpha, u.cpu().numpy())), dtype=torch.float64, device=device)


def _identity(x: torch.Tensor, y: torch.Tensor) -> MixResult:
    return MixResult(x, y, y, torch.ones((), dtype=torch.float64, device=x.device))


def _check_batch(where: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim < 1 or y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(format_error(where, "y", f"a target batch of length {x.shape[0] if x.ndim else 0} (dim 0 of x)",
                                      f"shape {tuple(y.shape)}"))


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.2, training: bool = True, *,
          per_sample: bool = False, generator=None) -> MixResult:
    """Mix each sample with a random partner: ``x̃ = λ·x + (1 − λ)·x[π]`` (Zhang et al. 2018).

    Args:
        x: ``(B, ...)`` inputs.
        y: ``(B,)`` class indices or ``(B, C)`` soft targets.
        alpha: α > 0 of ``Beta(α, α)``.
        training: mix only when True (else λ = 1 and ``inputs is x``).
        per_sample: one λ per sample instead of one per batch.
        generator: torch generator for a reproducible draw.

    Returns:
        :class:`MixResult` ``(inputs, targets_a=y, targets_b=y[π], lam)``.

    Examples:
        >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
        >>> out = mixup(x, y, 0.4, generator=torch.Generator().manual_seed(0))
        >>> out.inputs.shape, out.soft_targets(4).sum(1)
        (torch.Size([4, 3]), tensor([1., 1., 1., 1.]))
    """
    check("mixup", "alpha", alpha, POSITIVE)
    _check_batch("mixup", x, y)
    if not training or x.shape[0] == 0:
        return _identity(x, y)
    b = x.shape[0]
    perm = _random.randperm(b, generator, x.device)  # (B,)
    lam = sample_beta(alpha, (b,) if per_sample else (), generator, x.device)  # (B,) or ()
    lam_x = lam.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) if per_sample else lam.to(x.dtype)
    return MixResult(lam_x * x + (1 - lam_x) * x[perm], y, y[perm], lam)


def cutmix(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, training: bool = True, *,
           per_sample: bool = False, generator=None) -> MixResult:
    """Paste a random box of a partner image into each image (CutMix, Yun et al. 2019).

    Formula: λ ~ Beta(α, α); box of side ``⌊H·√(1−λ)⌋ × ⌊W·√(1−λ)⌋`` centred at a uniform
    pixel, clipped at the border; ``x̃ = x`` outside the box, ``x[π]`` inside; λ is then the
    exact kept area ``1 − box_area/(H·W)``.

    Args:
        x: ``(B, C, H, W)`` images.
        y: ``(B,)`` class indices or ``(B, C)`` soft targets.
        alpha: α > 0 of ``Beta(α, α)``.
        training: mix only when True (else λ = 1 and ``inputs is x``).
        per_sample: one box (and λ) per sample instead of one per batch.
        generator: torch generator for a reproducible draw.

    Returns:
        :class:`MixResult` ``(inputs, targets_a=y, targets_b=y[π], lam)`` with the area-corrected λ.

    Examples:
        >>> x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> out = cutmix(x, y, 1.0, generator=torch.Generator().manual_seed(0))
        >>> out.inputs.shape, 0.0 <= float(out.lam) <= 1.0
        (torch.Size([4, 3, 8, 8]), True)
    """
    check("cutmix", "alpha", alpha, POSITIVE)
    _check_batch("cutmix", x, y)
    if x.ndim != 4:
        raise ValueError(format_error("cutmix", "x", "a (B, C, H, W) image batch", f"shape {tuple(x.shape)}"))
    if not training or x.shape[0] == 0:
        return _identity(x, y)
    b, _, h, w = x.shape
    n = b if per_sample else 1
    perm = _random.randperm(b, generator, x.device)  # (B,)
    lam = sample_beta(alpha, (n,), generator, x.device)  # (n,)
    ratio = torch.sqrt(1 - lam)
    cut_h, cut_w = (h * ratio).long()[:, None], (w * ratio).long()[:, None]  # (n, 1)
    cy = _random.randint(h, (n, 1), generator, x.device)
    cx = _random.randint(w, (n, 1), generator, x.device)
    y0, y1 = (cy - cut_h // 2).clamp(0, h), (cy + cut_h // 2).clamp(0, h)  # (n, 1)
    x0, x1 = (cx - cut_w // 2).clamp(0, w), (cx + cut_w // 2).clamp(0, w)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= y0) & (rows < y1)  # (n, H)
    in_cols = (cols >= x0) & (cols < x1)  # (n, W)
    box = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (n, 1, H, W)
    lam = 1 - ((y1 - y0) * (x1 - x0)).squeeze(1).to(torch.float64) / (h * w)  # (n,) exact kept area
    mixed = torch.where(box, x[perm], x)
    return MixResult(mixed, y, y[perm], lam if per_sample else lam[0])
