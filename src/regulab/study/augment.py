"""Per-member augmentation for stacked batches: each arm's ``augment`` list, by name.

``auto`` picks the standard pair for the data: ``crop`` + ``flip`` for images, ``shift`` +
``scale`` for 1-D signals; :func:`check_ops` refuses ops of the wrong kind before a study starts.

Names map to the seeded, vectorised ops of :mod:`regulab.regularizers` with defaults sized
to the input: 1-D signals (``shift``: up to L/10 samples, ``scale``: 0.8–1.2, ``noise``:
σ = 0.05, ``time_mask``: up to L/10 samples) and images (``crop``: padding H/8, ``flip``,
``translate``: 10 %, ``cutout``: H/4 square).

Examples:
    >>> import torch
    >>> x = torch.randn(3, 4, 40)                       # (M, B, L)
    >>> y = apply_augment(x, [[], ["shift"], []], torch.Generator().manual_seed(0))
    >>> torch.equal(y[0], x[0]), torch.equal(y[1], x[1])
    (True, False)
"""
from __future__ import annotations

import torch

from ..regularizers.augment import additive_noise, random_scale, random_shift, time_mask
from ..regularizers.augment_image import cutout, horizontal_flip, random_crop, random_translate

__all__ = ["apply_augment", "op", "check_ops"]


def check_ops(arm: str, ops: list[str], input_shape: tuple, data_name: str) -> None:
    """Raise a SpecError when an arm asks for signal ops on images or image ops on signals."""
    from ..errors import SpecError
    from .spec import IMAGE_OPS, SIGNAL_OPS

    image = len(input_shape) == 3
    allowed = ("auto", *(IMAGE_OPS if image else SIGNAL_OPS))
    for i, name in enumerate(ops):
        if name not in allowed:
            kind = "image" if image else "1-D signal"
            raise SpecError(f"spec.arms.{arm}.augment.{i}: must be one of {', '.join(allowed)} for {kind} "
                            f"inputs ({data_name} has input shape {tuple(input_shape)}), got {name!r}")


def op(name: str, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``name`` to a batch ``x`` of shape (N, *input_shape)."""
    if name == "auto":  # images (N, C, H, W): crop + flip; signals: shift + scale
        for sub in (("crop", "flip") if x.ndim == 4 else ("shift", "scale")):
            x = op(sub, x, g)
        return x
    L = x.shape[-1]
    if name == "shift":
        return random_shift(x, max(L // 10, 1), generator=g)
    if name == "scale":
        return random_scale(x, 0.8, 1.2, generator=g)
    if name == "noise":
        return additive_noise(x, 0.05, generator=g)
    if name == "time_mask":
        return time_mask(x, max(L // 10, 1), generator=g)
    img = x if x.ndim == 4 else x.unsqueeze(1)  # (N, C, H, W)
    if name == "crop":
        out = random_crop(img, max(L // 8, 1), generator=g)
    elif name == "flip":
        out = horizontal_flip(img, generator=g)
    elif name == "translate":
        out = random_translate(img, 0.1, generator=g)
    else:
        out = cutout(img, max(L // 4, 1), generator=g)
    return out.view_as(x)


def apply_augment(x: torch.Tensor, augs: list[list[str]], g: torch.Generator) -> torch.Tensor:
    """Augment member m's minibatch ``x[m]`` with the ops ``augs[m]`` (members with the same
    list are augmented in one vectorised call). ``x`` is (M, B, *input_shape)."""
    if not any(augs):
        return x
    x = x.clone()
    M, B = x.shape[:2]
    by_ops: dict[tuple, list[int]] = {}
    for m, a in enumerate(augs):
        if a:
            by_ops.setdefault(tuple(a), []).append(m)
    for ops, members in by_ops.items():
        idx = torch.tensor(members)
        xs = x.index_select(0, idx).reshape(len(members) * B, *x.shape[2:])  # (k*B, *in)
        for name in ops:
            xs = op(name, xs, g)
        x.index_copy_(0, idx, xs.view(len(members), B, *x.shape[2:]))
    return x
