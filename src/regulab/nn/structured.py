"""Dropout with structure: shared masks (``SharedDropout``, ``LockedDropout``, ``DropPath``,
``EmbeddingDropout``) and contiguous blocks (``DropBlock2d``); forwards are one call into :mod:`regulab.ops`."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .._validate import POS_INT, PROB, check, register
from .base import DropoutBase

__all__ = ["SharedDropout", "LockedDropout", "DropPath", "EmbeddingDropout", "DropBlock2d"]

register("DropBlock2d", "block_size", POS_INT)
for _name in __all__:
    register(_name, "p", PROB)


class SharedDropout(DropoutBase):
    """Dropout with a mask shared where ``noise_shape`` is 1 (Keras ``Dropout(noise_shape=...)``).

    ``y = x·m/(1−p)``, ``m ~ Bernoulli(1−p)`` of shape ``noise_shape`` broadcast over ``x``.

    Args:
        p: drop probability. Default: 0.5.
        noise_shape: one entry per input dim: 1 (shared), None or the input's size.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (*), output (*).

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.SharedDropout(0.5, noise_shape=(None, 1, None))
        >>> y = m(torch.ones(2, 5, 3)); bool((y == y[:, :1]).all())
        True
    """

    def __init__(self, p: float = 0.5, noise_shape: Sequence[int | None] | None = None, inplace: bool = False) -> None:
        super().__init__(p, inplace)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)

    def forward(self, input: Tensor) -> Tensor:
        return ops.shared_dropout(input, self.p, self.noise_shape, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, noise_shape={self.noise_shape}, inplace={self.inplace}"


class LockedDropout(DropoutBase):
    """Locked (variational) dropout for sequences: one mask per sequence and feature, shared over time.

    Gal & Ghahramani 2016; AWD-LSTM (Merity et al. 2018). ``y[t] = x[t]·m/(1−p)`` for every ``t``.

    Args:
        p: drop probability. Default: 0.5.
        batch_first: inputs are (B, T, *) instead of (T, B, *). Default: False.

    Shape:
        Input (T, B, H) or (B, T, H) with ``batch_first``, output the same.

    Examples:
        >>> import torch, regulab
        >>> y = regulab.nn.LockedDropout(0.5)(torch.ones(7, 2, 3))
        >>> bool((y == y[:1]).all())
        True
    """

    def __init__(self, p: float = 0.5, batch_first: bool = False) -> None:
        super().__init__(p)
        self.batch_first = batch_first

    def forward(self, input: Tensor) -> Tensor:
        return ops.locked_dropout(input, self.p, self.training, self.batch_first)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}"


class DropPath(DropoutBase):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample (timm's ``DropPath``).

    ``y[b] = x[b]·m[b]/(1−p)`` (no division without ``scale_by_keep``); use as
    ``x + drop_path(block(x))``, with per-block rates from :func:`regulab.ops.drop_path_rates`.

    Args:
        p: probability of dropping a sample's path. Default: 0.0.
        scale_by_keep: divide kept samples by 1−p. Default: True.

    Shape:
        Input (B, *), output the same.

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.DropPath(0.5)
        >>> m
        DropPath(p=0.5, scale_by_keep=True)
        >>> y = m(torch.ones(6, 4)); bool((y == y[:, :1]).all())
        True
    """

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__(p)
        self.scale_by_keep = scale_by_keep

    def forward(self, input: Tensor) -> Tensor:
        return ops.drop_path(input, self.p, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"p={self.p}, scale_by_keep={self.scale_by_keep}"


class EmbeddingDropout(DropoutBase):
    """An embedding whose rows (words) are dropped as a whole in training (AWD-LSTM ``embedded_dropout``).

    Merity et al. 2018. ``W' = W·m/(1−p)``, ``m ~ Bernoulli(1−p)`` of shape (V, 1), then
    ``F.embedding(input, W')`` with the wrapped embedding's options. The only state is the
    wrapped embedding's weight (key ``embedding.weight``).

    Args:
        embedding: the ``nn.Embedding`` to wrap.
        p: drop probability of a word. Default: 0.1.

    Shape:
        Input (*) indices, output (*, D).

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.EmbeddingDropout(torch.nn.Embedding(10, 4), p=0.5)
        >>> y = m(torch.tensor([[1, 1, 2]]))
        >>> torch.equal(y[0, 0], y[0, 1])  # a dropped word is dropped everywhere
        True
    """

    def __init__(self, embedding: nn.Embedding, p: float = 0.1) -> None:
        super().__init__(p)
        self.embedding = embedding

    def forward(self, input: Tensor) -> Tensor:
        e = self.embedding
        weight = ops.embedding_dropout(e.weight, self.p, self.training)
        return F.embedding(input, weight, e.padding_idx, e.max_norm, e.norm_type, e.scale_grad_by_freq, e.sparse)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropBlock2d(DropoutBase):
    """DropBlock (Ghiasi et al. 2018): drop contiguous b×b blocks of each feature map.

    Seeds at rate ``γ = p/b²·(H·W)/((H−b+1)(W−b+1))``, grown to blocks by max-pooling,
    output renormalised by ``numel/kept``. The dropped fraction is about ``p``.

    Args:
        p: target fraction of dropped units. Default: 0.1.
        block_size: side of the square blocks. Default: 7.

    Shape:
        Input (N, C, H, W), output the same.

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.DropBlock2d(0.2, block_size=3)
        >>> m
        DropBlock2d(p=0.2, block_size=3)
        >>> y = m(torch.ones(2, 4, 16, 16)); 0.1 < float((y == 0).float().mean()) < 0.3
        True
    """

    def __init__(self, p: float = 0.1, block_size: int = 7) -> None:
        super().__init__(p)
        self.block_size = check("DropBlock2d", "block_size", block_size, POS_INT)

    def forward(self, input: Tensor) -> Tensor:
        return ops.drop_block2d(input, self.p, self.block_size, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"
