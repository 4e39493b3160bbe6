"""Common base of every regulab dropout-family module.

Tools that need to find "dropout-like" modules (MC dropout, rate schedules,
``regulab doctor``) test ``isinstance(m, DropoutBase)`` or
:func:`is_dropout_module`, which also recognises torch.nn's own classes.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropoutBase", "is_dropout_module", "TORCH_DROPOUT_TYPES"]

TORCH_DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


class DropoutBase(nn.Module):
    """Base class: holds ``p`` (the drop probability) and ``inplace``.

    Subclasses implement ``forward`` as one call into :mod:`regulab.ops`.
    ``p`` is a plain attribute (not a buffer) so nothing enters ``state_dict``,
    exactly as in ``torch.nn.Dropout``.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        from .._validate import check_p

        self.p = check_p(type(self).__name__, p)
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


def is_dropout_module(m: nn.Module) -> bool:
    """True for regulab's dropout-family modules and torch.nn's ``Dropout*``/``AlphaDropout``."""
    return isinstance(m, (DropoutBase, *TORCH_DROPOUT_TYPES))


del torch
