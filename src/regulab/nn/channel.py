"""Channel-wise and alpha dropout modules: drop-ins for torch.nn's ``Dropout1d/2d/3d``,
``AlphaDropout`` and ``FeatureAlphaDropout``; each ``forward`` is one call into :mod:`regulab.ops`."""
from __future__ import annotations

from torch import Tensor

from .. import ops
from .._validate import PROB, register
from .base import DropoutBase

__all__ = ["Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"]

for _name in __all__:
    register(_name, "p", PROB)


class Dropout1d(DropoutBase):
    """Zero whole channels (Tompson et al. 2015): ``y[n, c] = x[n, c]·m[n, c]/(1−p)``.

    Args:
        p: probability of zeroing a channel. Default: 0.5.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (N, C, L) or (C, L), output the same.

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.Dropout1d(0.5)
        >>> m
        Dropout1d(p=0.5, inplace=False)
        >>> y = m(torch.ones(4, 8, 5)); bool((y == y[..., :1]).all())
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return ops.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(DropoutBase):
    """Zero whole channels of (N, C, H, W) maps (SpatialDropout, Tompson et al. 2015).

    ``y[n, c] = x[n, c]·m[n, c]/(1−p)``; 3-D inputs are read as (N, C, L) with torch's warning.

    Args:
        p: probability of zeroing a channel. Default: 0.5.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (N, C, H, W), output the same.

    Examples:
        >>> import torch, regulab
        >>> y = regulab.nn.Dropout2d(0.5)(torch.ones(2, 3, 4, 4))
        >>> bool((y == y[..., :1, :1]).all())
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return ops.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(DropoutBase):
    """Zero whole channels of (N, C, D, H, W) volumes: ``y[n, c] = x[n, c]·m[n, c]/(1−p)``.

    Args:
        p: probability of zeroing a channel. Default: 0.5.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (N, C, D, H, W) or (C, D, H, W), output the same.

    Examples:
        >>> import torch, regulab
        >>> y = regulab.nn.Dropout3d(0.5)(torch.ones(2, 3, 2, 2, 2))
        >>> bool((y == y[..., :1, :1, :1]).all())
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return ops.dropout3d(input, self.p, self.training, self.inplace)


class AlphaDropout(DropoutBase):
    """Alpha dropout for SELU networks (Klambauer et al. 2017), seeded one-pass kernel.

    ``y = a·x + b`` where kept, ``−a·α′ + b`` where dropped, with
    ``a = ((α′²p + 1)(1 − p))^(−1/2)``, ``b = a·α′·p``, ``α′ = 1.7580993408473766``:
    mean 0 / variance 1 inputs keep mean 0 / variance 1.

    Args:
        p: drop probability. Default: 0.5.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (*), output (*).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.nn.AlphaDropout(0.2)(torch.randn(100_000))
        >>> abs(float(y.mean())) < 0.02 and abs(float(y.var()) - 1) < 0.02
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return ops.alpha_dropout(input, self.p, self.training, self.inplace)


class FeatureAlphaDropout(DropoutBase):
    """Alpha dropout of whole channels: one mask value per (N, C) (torch's ``FeatureAlphaDropout``).

    Formula: as :class:`AlphaDropout` with the mask of shape (N, C, 1, ...).

    Args:
        p: drop probability of a channel. Default: 0.5.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (N, C, *), output the same.

    Examples:
        >>> import torch, regulab
        >>> y = regulab.nn.FeatureAlphaDropout(0.5)(torch.zeros(2, 3, 4))
        >>> bool((y == y[..., :1]).all())
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return ops.feature_alpha_dropout(input, self.p, self.training, self.inplace)
