"""Drop-path (stochastic depth): drop a residual branch for whole samples.

Huang et al. 2016, "Deep Networks with Stochastic Depth"; Larsson et al. 2017
(FractalNet). timm's ``drop_path`` convention: one mask value per sample, shape
(B, 1, ..., 1); kept samples are divided by 1−p when ``scale_by_keep``. Uses
the shared-mask op, so backward keeps only the seed.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._validate import NONNEG_INT, PROB, check, check_p, register
from .shared import apply_shared

__all__ = ["drop_path", "drop_path_rates"]

register("drop_path", "p", PROB)
register("drop_path_rates", "p_max", PROB)
register("drop_path_rates", "depth", NONNEG_INT)


def drop_path(x: Tensor, p: float = 0.0, training: bool = False, scale_by_keep: bool = True, *,
              generator: torch.Generator | None = None) -> Tensor:
    """Zero the whole of ``x[b]`` for a random subset of samples ``b`` (stochastic depth).

    Formula: ``y[b] = x[b]·m[b]/(1−p)`` (``x[b]·m[b]`` without ``scale_by_keep``),
    ``m ~ Bernoulli(1−p)``; apply it to a residual branch: ``x + drop_path(f(x))``.
    Same defaults as timm (``training=False``).

    Args:
        x: (B, *) with the samples on dim 0.
        p: probability of dropping a sample's path in [0, 1].
        training: apply (True) or return ``x``.
        scale_by_keep: divide kept samples by 1−p.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (B, *), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval or for ``p == 0``).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.drop_path(torch.ones(6, 3, 2), 0.5, training=True)
        >>> bool((y == y[:, :1, :1]).all())  # one value per sample
        True
    """
    p = check_p("drop_path", p)
    if not training or x.dim() == 0:
        return x
    shape = [x.shape[0]] + [1] * (x.dim() - 1)  # (B, 1, ..., 1)
    return apply_shared(x, p, shape, False, "scale" if scale_by_keep else "keep", generator)


def drop_path_rates(p_max: float, depth: int) -> list[float]:
    """Per-block drop-path rates rising linearly with depth: ``linspace(0, p_max, depth)``.

    Huang et al. 2016's linear decay rule (timm's ``dpr``): block ``l`` of ``L`` gets
    ``p_l = p_max·l/(L−1)``.

    Args:
        p_max: rate of the last block, in [0, 1].
        depth: number of blocks (>= 0).

    Returns:
        ``depth`` floats from 0 to ``p_max``.

    Examples:
        >>> from regulab.ops import drop_path_rates
        >>> drop_path_rates(0.2, 5)
        [0.0, 0.05, 0.1, 0.15, 0.2]
    """
    p_max = float(check("drop_path_rates", "p_max", p_max, PROB))
    depth = check("drop_path_rates", "depth", depth, NONNEG_INT)
    return [round(float(v), 12) for v in torch.linspace(0, p_max, depth, dtype=torch.float64)]
