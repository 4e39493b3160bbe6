"""Batched, seeded image augmentation: random crop with padding, flip, translation, cutout.

Convention: ``(B, C, H, W)`` tensors already in memory, one independent draw per image,
shared across channels; ``training=False`` returns the input object itself; ``generator=``
makes every op reproducible; no Python loop over samples (index arithmetic + ``gather``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validate import NONNEG_INT, PROB, Interval, OneOf, check, register
from ..errors import format_error
from . import _random

__all__ = ["random_crop", "horizontal_flip", "random_translate", "cutout"]

PAD_MODE = OneOf(("constant", "reflect", "replicate", "circular"))
FRACTION = Interval(0.0, 1.0, "left")
register("random_crop", "padding", NONNEG_INT)
register("random_crop", "padding_mode", PAD_MODE)
register("horizontal_flip", "p", PROB)
register("random_translate", "max_shift", FRACTION)
register("cutout", "size", NONNEG_INT)


def _check_image(where: str, x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(format_error(where, "x", "a (B, C, H, W) image batch", f"shape {tuple(x.shape)}"))


def _crop(padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crop an ``h×w`` window at per-image offsets ``top``, ``left`` (each ``(B,)``) from ``padded``."""
    b, c, hp, wp = padded.shape
    rows = top[:, None] + torch.arange(h, device=padded.device)  # (B, h)
    cols = left[:, None] + torch.arange(w, device=padded.device)  # (B, w)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, wp))  # (B, C, h, Wp)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, h, w)


def random_crop(x: torch.Tensor, padding: int = 4, training: bool = True, *, padding_mode: str = "constant",
                generator=None) -> torch.Tensor:
    """Pad each image by ``padding`` on every side and crop back a random ``H×W`` window.

    Convention: torchvision ``RandomCrop(size=(H, W), padding)`` (the CIFAR recipe,
    padding 4): offsets ``(i, j) ~ U{0..2p}²`` per image.

    Args:
        x: ``(B, C, H, W)``.
        padding: p, an integer >= 0.
        training: augment only when True.
        padding_mode: ``"constant"`` (zeros), ``"reflect"``, ``"replicate"`` or ``"circular"``.
        generator: torch generator for a reproducible draw.

    Returns:
        The cropped batch, same shape (``x`` itself when not training or p = 0).

    Examples:
        >>> x = torch.ones(2, 1, 4, 4)
        >>> y = random_crop(x, 1, generator=torch.Generator().manual_seed(0))
        >>> y.shape, bool((y.sum((1, 2, 3)) >= 9).all())
        (torch.Size([2, 1, 4, 4]), True)
    """
    check("random_crop", "padding", padding, NONNEG_INT)
    check("random_crop", "padding_mode", padding_mode, PAD_MODE)
    _check_image("random_crop", x)
    if not training or padding == 0 or x.numel() == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=padding_mode)  # (B, C, H+2p, W+2p)
    offsets = _random.randint(2 * padding + 1, (2, b), generator, x.device)  # (2, B)
    return _crop(padded, offsets[0], offsets[1], h, w)


def horizontal_flip(x: torch.Tensor, p: float = 0.5, training: bool = True, *, generator=None) -> torch.Tensor:
    """Mirror each image left–right with probability ``p``.

    Formula: ``y_b = flip_W(x_b)`` if ``u_b < p``, else ``x_b``, ``u_b ~ U(0, 1)``.

    Args:
        x: ``(B, C, H, W)``.
        p: flip probability in [0, 1].
        training: augment only when True.
        generator: torch generator for a reproducible draw.

    Returns:
        The batch (``x`` itself when not training or p = 0).

    Examples:
        >>> x = torch.arange(3.0).reshape(1, 1, 1, 3)
        >>> horizontal_flip(x, 1.0).flatten()
        tensor([2., 1., 0.])
    """
    check("horizontal_flip", "p", p, PROB)
    _check_image("horizontal_flip", x)
    if not training or p == 0 or x.numel() == 0:
        return x
    flip = _random.uniform((x.shape[0], 1, 1, 1), generator, x.device) < p  # (B, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def random_translate(x: torch.Tensor, max_shift: float = 0.1, training: bool = True, *, generator=None):
    """Shift each image by a random whole number of pixels, filling the uncovered border with zeros.

    Convention: Keras ``RandomTranslation(height_factor=f, width_factor=f, fill_mode="constant")``
    with integer shifts: ``dy ~ U{−⌊f·H⌋..⌊f·H⌋}``, ``dx ~ U{−⌊f·W⌋..⌊f·W⌋}``;
    ``y[h, w] = x[h − dy, w − dx]`` (0 outside).

    Args:
        x: ``(B, C, H, W)``.
        max_shift: f, the largest shift as a fraction of the height/width, in [0, 1).
        training: augment only when True.
        generator: torch generator for a reproducible draw.

    Returns:
        The shifted batch (``x`` itself when not training or no shift is possible).

    Examples:
        >>> y = random_translate(torch.ones(3, 1, 10, 10), 0.2, generator=torch.Generator().manual_seed(0))
        >>> bool((y.sum((1, 2, 3)) >= 64).all())
        True
    """
    check("random_translate", "max_shift", max_shift, FRACTION)
    _check_image("random_translate", x)
    b, _, h, w = x.shape
    sy, sx = int(max_shift * h), int(max_shift * w)
    if not training or (sy == 0 and sx == 0) or x.numel() == 0:
        return x
    padded = F.pad(x, (sx, sx, sy, sy))  # (B, C, H+2sy, W+2sx), zeros
    top = _random.randint(2 * sy + 1, (b,), generator, x.device)  # top = sy − dy
    left = _random.randint(2 * sx + 1, (b,), generator, x.device)
    return _crop(padded, top, left, h, w)


def cutout(x: torch.Tensor, size: int = 8, training: bool = True, *, value: float = 0.0, generator=None):
    """Set one ``size×size`` square per image to ``value`` (Cutout, DeVries & Taylor 2017).

    Convention: the square's centre is uniform over all pixels and the square is clipped at
    the border (so it may be partly outside), as in the paper's code.

    Args:
        x: ``(B, C, H, W)``.
        size: side of the square in pixels (an integer >= 0).
        training: augment only when True.
        value: fill value.
        generator: torch generator for a reproducible draw.

    Returns:
        The batch with holes (``x`` itself when not training or size = 0).

    Examples:
        >>> y = cutout(torch.ones(2, 3, 8, 8), 4, generator=torch.Generator().manual_seed(0))
        >>> bool(((64 - y[:, 0].sum((1, 2))) <= 16).all())
        True
    """
    check("cutout", "size", size, NONNEG_INT)
    _check_image("cutout", x)
    if not training or size == 0 or x.numel() == 0:
        return x
    b, _, h, w = x.shape
    cy = _random.randint(h, (b, 1), generator, x.device)  # (B, 1)
    cx = _random.randint(w, (b, 1), generator, x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= cy - size // 2) & (rows < cy - size // 2 + size)  # (B, H)
    in_cols = (cols >= cx - size // 2) & (cols < cx - size // 2 + size)  # (B, W)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return x.masked_fill(hole, value)
