"""Strengths that are a number or one value per member of a stacked study.

Every regularizer in this package takes its strength (``l2``, ``weight_decay``,
``max_value``, ``epsilon``, ``sigma``...) either as a Python number, applied to
the whole tensor, or as a 1-D tensor of shape ``(M,)``, applied member by member
to tensors stacked on a leading member dim (weights ``(M, out, in)``, activations
``(M, B, ...)``). The helpers here validate both forms with the house wording
and broadcast a per-member strength against a stacked tensor.
"""
from __future__ import annotations

import torch

from .._validate import Interval, all_within, check
from ..errors import format_error

__all__ = ["check_strength", "is_per_member", "per_member_view"]

def check_strength(where: str, param: str, value: object, constraint: Interval):
    """Validate a number or an ``(M,)`` tensor against ``constraint``; return it unchanged.

    A 0-d tensor is returned as a Python float. A 1-D tensor must be floating
    point, non-empty, and every element must satisfy ``constraint``.

    Examples:
        >>> from regulab._validate import NONNEG
        >>> check_strength("L2", "l2", 0.1, NONNEG)
        0.1
        >>> check_strength("L2", "l2", torch.tensor([0.0, 0.5]), NONNEG)
        tensor([0.0000, 0.5000])
        >>> check_strength("L2", "l2", torch.tensor([-1.0]), NONNEG)
        Traceback (most recent call last):
        ...
        ValueError: L2: l2 must be a number >= 0 (or a 1-D tensor of them), got tensor([-1.])
    """
    if not isinstance(value, torch.Tensor):
        return check(where, param, value, constraint)
    if value.ndim == 0:
        return check(where, param, value.item(), constraint)
    ok = (
        value.ndim == 1
        and value.numel() > 0
        and value.is_floating_point()
        and all_within(value, constraint)
    )
    if not ok:
        shown = value if value.numel() <= 8 else f"tensor of shape {tuple(value.shape)}"
        raise ValueError(format_error(where, param, f"{constraint} (or a 1-D tensor of them)", shown))
    return value


def is_per_member(strength: object) -> bool:
    """True when ``strength`` is an ``(M,)`` tensor (one value per member)."""
    return isinstance(strength, torch.Tensor) and strength.ndim == 1


def per_member_view(strength: torch.Tensor, x: torch.Tensor, where: str, param: str) -> torch.Tensor:
    """Reshape an ``(M,)`` strength to ``(M, 1, ..., 1)`` so it broadcasts over ``x`` of shape ``(M, ...)``.

    Examples:
        >>> per_member_view(torch.tensor([1.0, 2.0]), torch.zeros(2, 3, 4), "L2", "l2").shape
        torch.Size([2, 1, 1])
    """
    m = strength.shape[0]
    if x.ndim == 0 or x.shape[0] != m:
        raise ValueError(
            format_error(
                where,
                "input",
                f"stacked on a leading member dim of size {m} to match {param} of shape ({m},)",
                f"shape {tuple(x.shape)}",
            )
        )
    return strength.to(device=x.device, dtype=x.dtype).reshape(m, *([1] * (x.ndim - 1)))
