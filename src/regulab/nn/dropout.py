"""``regulab.nn.Dropout``: drop-in for ``torch.nn.Dropout`` on the seeded kernel."""
from __future__ import annotations

from torch import Tensor

from .. import ops
from .base import DropoutBase

__all__ = ["Dropout"]


class Dropout(DropoutBase):
    """Inverted dropout (Srivastava et al. 2014), mask-free and seeded.

    ``y = x·m/(1−p)``, ``m ~ Bernoulli(1−p)`` in training; the input itself in eval.
    Same constructor, ``repr``, ``train()``/``eval()`` behaviour and (empty)
    ``state_dict`` as ``torch.nn.Dropout``.

    Args:
        p: drop probability in [0, 1]. Default: 0.5.
        inplace: write the result into the input. Default: False.

    Shape:
        Input (*), output (*), same shape.

    Examples:
        >>> import torch, regulab
        >>> m = regulab.nn.Dropout(p=0.2)
        >>> m
        Dropout(p=0.2, inplace=False)
        >>> x = torch.randn(4, 5)
        >>> m.eval()(x) is x
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        return ops.dropout(input, self.p, self.training, self.inplace)
