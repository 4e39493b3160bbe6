"""DropBlock: drop contiguous square regions of feature maps.

Ghiasi et al. 2018, "DropBlock: A regularization method for convolutional
networks". Block centres are drawn with rate
``γ = p/b²·(H·W)/((H−b+1)(W−b+1))`` at positions where a whole b×b block fits,
grown to blocks by max-pooling, and the output is renormalised by
``numel/kept`` (timm). The seeds use the counter-based bits (centre ``i`` is
drawn iff ``bits(seed, i) < round(γ·2^32)``), and the op is a custom op whose
backward redraws the block mask from the seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validate import POS_INT, PROB, check, check_p, register
from ..errors import format_error
from ._rng import draw_seed
from ._functorch import register_autograd_and_twin
from .shared import keep_bits

__all__ = ["drop_block2d", "block_mask", "dropblock_gamma"]

register("drop_block2d", "p", PROB)
register("drop_block2d", "block_size", POS_INT)


def dropblock_gamma(p: float, block: int, h: int, w: int) -> float:
    """Seed rate ``γ = p/b²·(H·W)/((H−b+1)(W−b+1))`` with ``b = min(block, H, W)``, capped at 1."""
    b = min(block, h, w)
    return min(1.0, p / b**2 * (h * w) / ((h - b + 1) * (w - b + 1)))


def block_mask(shape: torch.Size, seed: int, p: float, block: int, dtype, device) -> Tensor:
    """The renormalised keep mask ``keep·numel/kept`` of shape (N, C, H, W)."""
    n, c, h, w = shape
    b = min(block, h, w)
    gamma = dropblock_gamma(p, block, h, w)
    seeds = ~keep_bits(seed, gamma, n * c * h * w, device).view(n, c, h, w)  # drawn iff bits < γ·2^32
    valid = torch.zeros(h, w, dtype=torch.bool, device=device)
    valid[b // 2: h - (b - 1) // 2, b // 2: w - (b - 1) // 2] = True  # centres whose block fits
    seeds = (seeds & valid).to(dtype)
    dropped = F.max_pool2d(seeds, kernel_size=b, stride=1, padding=b // 2)[..., :h, :w]  # (N, C, H, W)
    keep = 1 - dropped
    kept = keep.sum(dtype=torch.float32).clamp_min(1.0)
    return keep * (keep.numel() / kept).to(dtype)


@torch.library.custom_op("regulab::drop_block", mutates_args=())
def drop_block_op(x: Tensor, seed: Tensor, p: float, block: int) -> Tensor:
    """``x·mask`` with the seeded, renormalised block mask."""
    return x * block_mask(x.shape, int(seed), p, block, x.dtype, x.device)


@drop_block_op.register_fake
def _(x, seed, p, block):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])  # the 0-dim seed only
    ctx.p, ctx.block = inputs[2], inputs[3]


def _backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    return _drop_block_twin.call(grad, seed, ctx.p, ctx.block), None, None, None


_drop_block_twin = register_autograd_and_twin(drop_block_op, _setup_context, _backward)


def drop_block2d(x: Tensor, p: float = 0.1, block_size: int = 7, training: bool = True, *,
                 generator: torch.Generator | None = None) -> Tensor:
    """Drop b×b blocks of each feature map and renormalise (DropBlock, Ghiasi et al. 2018).

    Formula: centres ``~ Bernoulli(γ)`` inside the valid region, ``γ = p/b²·(H·W)/((H−b+1)(W−b+1))``;
    ``mask = 1 − maxpool_b(centres)``; ``y = x·mask·numel/Σmask``. ``y`` is ``x`` itself in
    eval, for ``p == 0`` or empty ``x``. The dropped fraction is about ``p`` (a little
    less where blocks overlap).

    Args:
        x: (N, C, H, W).
        p: target fraction of dropped units in [0, 1].
        block_size: side b of the square blocks (clipped to min(H, W)).
        training: apply (True) or return ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (N, C, H, W), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.drop_block2d(torch.ones(2, 4, 16, 16), p=0.2, block_size=3)
        >>> 0.1 < float((y == 0).float().mean()) < 0.3
        True
    """
    p = check_p("drop_block2d", p)
    block_size = check("drop_block2d", "block_size", block_size, POS_INT)
    if x.dim() != 4:
        raise ValueError(format_error("drop_block2d", "input", "4-D (N, C, H, W)", f"a {x.dim()}-D tensor"))
    if not training or x.numel() == 0 or p == 0.0:
        return x
    return _drop_block_twin.call(x, draw_seed(generator), p, int(block_size))
