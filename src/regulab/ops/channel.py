"""Channel-wise dropout ``dropout1d/2d/3d`` with torch's rank rules, on the shared-mask op.

Tompson et al. 2015, "Efficient Object Localization Using Convolutional Networks"
(SpatialDropout). One mask value per (sample, channel), broadcast over the
spatial dims: ``y[n, c] = x[n, c]·m[n, c]/(1−p)``. The accepted ranks, the
unbatched forms and the warnings are those of ``torch.nn.functional``.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._validate import PROB, check_p, register
from ..errors import format_error
from .shared import apply_shared

__all__ = ["dropout1d", "dropout2d", "dropout3d", "feature_shape"]

for _w in ("dropout1d", "dropout2d", "dropout3d"):
    register(_w, "p", PROB)


def feature_shape(where: str, shape: torch.Size) -> list[int]:
    """Mask shape (s0, s1, 1, ...) of torch's feature dropout; it needs at least 2 dims."""
    if len(shape) < 2:
        raise ValueError(format_error(where, "input", "at least 2-D for feature dropout", f"a {len(shape)}-D tensor"))
    return [shape[0], shape[1]] + [1] * (len(shape) - 2)


def _unbatched(where: str, x: Tensor) -> list[int]:
    """Mask shape for an input without batch dim: torch unsqueezes dim 0, so it is (s0, 1, ...)."""
    return feature_shape(where, torch.Size([1, *x.shape]))[1:]


def _warn_rank(where: str, d: int, spatial: int) -> None:
    """torch's deprecation warning, word for word, for a ``d``-D input to ``dropout{spatial}d``.

    It points at the caller of ``where`` (stacklevel 3: this helper, ``where``, its caller).
    """
    warnings.warn(
        f"{where}: Received a {d}-D input to {where}, which is deprecated "
        "and will result in an error in a future release. To retain the behavior "
        f"and silence this warning, please use dropout instead. Note that {where} "
        f"exists to provide channel-wise dropout on inputs with {spatial} spatial dimensions, "
        f"a channel dimension, and an optional batch dimension (i.e. {spatial + 1}D or {spatial + 2}D inputs).",
        stacklevel=3)


def dropout1d(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
              generator: torch.Generator | None = None) -> Tensor:
    """Zero whole channels of (N, C, L) or (C, L) inputs; a drop-in for ``F.dropout1d``.

    Formula: ``y[n, c, :] = x[n, c, :]·m[n, c]/(1−p)``, ``m ~ Bernoulli(1−p)``.

    Args:
        x: (N, C, L) or unbatched (C, L).
        p: drop probability of a channel in [0, 1].
        training: apply dropout (True) or return ``x``.
        inplace: write the result into ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (N, C, L) or (C, L), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.dropout1d(torch.ones(4, 8, 5), 0.5)
        >>> bool((y == y[..., :1]).all())
        True
    """
    p = check_p("dropout1d", p)
    if x.dim() not in (2, 3):
        raise ValueError(format_error("dropout1d", "input", "2-D (C, L) or 3-D (N, C, L)", f"a {x.dim()}-D tensor"))
    shape = feature_shape("dropout1d", x.shape) if x.dim() == 3 else _unbatched("dropout1d", x)
    return x if not training else apply_shared(x, p, shape, inplace, "scale", generator)


def dropout2d(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
              generator: torch.Generator | None = None) -> Tensor:
    """Zero whole channels of (N, C, H, W) inputs; a drop-in for ``F.dropout2d``.

    Formula: ``y[n, c] = x[n, c]·m[n, c]/(1−p)``. As in torch, a 3-D input is read as
    (N, C, L) with a warning (not as unbatched (C, H, W)), and other ranks than 3 and 4
    warn that they are deprecated.

    Args:
        x: (N, C, H, W); (N, C, L) with a warning.
        p: drop probability of a channel in [0, 1].
        training: apply dropout (True) or return ``x``.
        inplace: write the result into ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (N, C, H, W), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.dropout2d(torch.ones(2, 3, 4, 4), 0.5)
        >>> bool((y == y[..., :1, :1]).all())
        True
    """
    p = check_p("dropout2d", p)
    d = x.dim()
    if d not in (3, 4):
        _warn_rank("dropout2d", d, 2)
    if d == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
            "1D dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
            "is the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2)
    shape = feature_shape("dropout2d", x.shape)
    return x if not training else apply_shared(x, p, shape, inplace, "scale", generator)


def dropout3d(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
              generator: torch.Generator | None = None) -> Tensor:
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) inputs; a drop-in for ``F.dropout3d``.

    Formula: ``y[n, c] = x[n, c]·m[n, c]/(1−p)``. As in torch, ranks other than 4 and 5
    warn that they are deprecated, and every rank but 5 is treated as unbatched.

    Args:
        x: (N, C, D, H, W) or unbatched (C, D, H, W).
        p: drop probability of a channel in [0, 1].
        training: apply dropout (True) or return ``x``.
        inplace: write the result into ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (N, C, D, H, W) or (C, D, H, W), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.dropout3d(torch.ones(3, 2, 2, 2), 0.5)  # unbatched (C, D, H, W)
        >>> bool((y == y[:, :1, :1, :1]).all())
        True
    """
    p = check_p("dropout3d", p)
    d = x.dim()
    if d not in (4, 5):
        _warn_rank("dropout3d", d, 3)
    shape = feature_shape("dropout3d", x.shape) if d == 5 else _unbatched("dropout3d", x)
    return x if not training else apply_shared(x, p, shape, inplace, "scale", generator)
