"""Weight constraints MaxNorm, UnitNorm and NonNeg, applied after each optimizer step.

Convention (Srivastava et al. 2014 §5.1; Keras ``constraints``): each *unit*'s incoming
weight vector is rescaled to norm ``<= c``. The unit is dim 0 of the weight; its
incoming weights are all other dims: Linear ``(out, in)`` → norm over dim 1, Conv
``(out, in, *k)`` → norm over dims 1.. . With ``stacked=True`` the weight carries a
leading member dim, ``(M, out, in, ...)``: units are dim 1, the norm is over dims 2..,
and ``max_value`` may be an ``(M,)`` tensor.

Constraints are projections, not penalties: call them after ``optimizer.step()``, e.g.
``MaxNorm(3.0).attach(optimizer)`` (a step post-hook), or ``.apply_(model)`` once.
"""
from __future__ import annotations

import torch
from torch import nn

from .._validate import POSITIVE, register
from ..errors import format_error
from ._strength import check_strength, is_per_member, per_member_view
from .penalties import select_parameters

__all__ = ["max_norm_", "unit_norm_", "non_neg_", "Constraint", "MaxNorm", "UnitNorm", "NonNeg"]

EPS = 1e-7  # Keras' backend epsilon, guards a zero norm
register("max_norm_", "max_value", POSITIVE)
register("MaxNorm", "max_value", POSITIVE)


def _unit_norms(weight: torch.Tensor, stacked: bool, where: str) -> torch.Tensor:
    """L2 norm of each unit's incoming weights, kept broadcastable: ``(out, 1, ...)`` or ``(M, out, 1, ...)``."""
    first = 2 if stacked else 1
    if weight.ndim < first + 1:
        need = "(M, out, in, ...) with stacked=True" if stacked else "(out, in, ...)"
        raise ValueError(format_error(where, "weight", f"at least {first + 1}-D {need}", f"shape {tuple(weight.shape)}"))
    return torch.linalg.vector_norm(weight, dim=tuple(range(first, weight.ndim)), keepdim=True)


@torch.no_grad()
def max_norm_(weight: torch.Tensor, max_value=2.0, *, stacked: bool = False) -> torch.Tensor:
    """Rescale, in place, each unit's incoming weights whose L2 norm exceeds ``max_value``.

    Convention: ``w_u ← w_u · c/(‖w_u‖ + 1e-7)`` when ``‖w_u‖ > c``, else unchanged (torch
    ``renorm``; the paper uses c = 3–4). Norm over all dims but the unit dim (see module doc).

    Args:
        weight: ``(out, in, ...)``, or ``(M, out, in, ...)`` with ``stacked=True``.
        max_value: c, a number > 0, or an ``(M,)`` tensor with ``stacked=True``.
        stacked: whether dim 0 is the member dim.

    Returns:
        ``weight`` itself, modified in place.

    Examples:
        >>> w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> max_norm_(w, 1.0)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    c = check_strength("max_norm_", "max_value", max_value, POSITIVE)
    norms = _unit_norms(weight, stacked, "max_norm_")  # (out, 1, ...) or (M, out, 1, ...)
    if is_per_member(c):
        if not stacked:
            raise ValueError(format_error("max_norm_", "stacked", "True when max_value is an (M,) tensor", stacked))
        c = per_member_view(c, norms, "max_norm_", "max_value")  # (M, 1, 1, ...)
    return weight.mul_(torch.where(norms > c, c / (norms + EPS), 1.0))


@torch.no_grad()
def unit_norm_(weight: torch.Tensor, *, stacked: bool = False) -> torch.Tensor:
    """Rescale, in place, each unit's incoming weights to unit L2 norm (Keras ``UnitNorm``).

    Convention: ``w_u ← w_u / (‖w_u‖ + 1e-7)``.

    Args:
        weight: ``(out, in, ...)``, or ``(M, out, in, ...)`` with ``stacked=True``.
        stacked: whether dim 0 is the member dim.

    Returns:
        ``weight`` itself, modified in place.

    Examples:
        >>> unit_norm_(torch.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    return weight.div_(_unit_norms(weight, stacked, "unit_norm_") + EPS)


@torch.no_grad()
def non_neg_(weight: torch.Tensor) -> torch.Tensor:
    """Clamp, in place, every weight to ``>= 0`` (Keras ``NonNeg``): ``w ← max(w, 0)``.

    Args:
        weight: any tensor.

    Returns:
        ``weight`` itself, modified in place.

    Examples:
        >>> non_neg_(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    return weight.clamp_(min=0)


class Constraint:
    """Base of the constraint objects: ``c(weight)`` projects one tensor in place."""

    stacked = False

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _targets(self, target, select) -> list[torch.Tensor]:
        if isinstance(target, nn.Module):
            return [p for _, p in select_parameters(target, select)]
        if isinstance(target, torch.Tensor):
            return [target]
        return list(target)

    def apply_(self, target, select="weights") -> None:
        """Project now: ``target`` is a module (its :func:`select_parameters`) or tensors."""
        for w in self._targets(target, select):
            self(w)

    def attach(self, optimizer: torch.optim.Optimizer, params=None):
        """Apply after every ``optimizer.step()`` (step post-hook); returns the removable handle.

        ``params`` is a module (its weights), tensors, or None: then every parameter of the
        optimizer with at least 2 dims (3 when ``stacked``), i.e. weights, not biases.
        """
        if params is None:
            min_dim = 3 if self.stacked else 2
            targets = None
        else:
            targets = self._targets(params, "weights")

        def hook(opt, args, kwargs):
            ps = targets
            if ps is None:
                ps = [p for g in opt.param_groups for p in g["params"] if p.ndim >= min_dim]
            for w in ps:
                self(w)

        return optimizer.register_step_post_hook(hook)


class MaxNorm(Constraint):
    """Max-norm constraint: each unit's incoming weight vector is kept at L2 norm ``<= max_value``.

    Convention: Srivastava et al. 2014 §5.1 (c = 3–4; 2 for MNIST), Keras ``MaxNorm``
    with the torch ``renorm`` rule: ``w_u ← w_u · c/(‖w_u‖+1e-7)`` only when ``‖w_u‖ > c``.

    Args:
        max_value: c, a number > 0, or an ``(M,)`` tensor with ``stacked=True``.
        stacked: weights carry a leading member dim ``(M, out, in, ...)``.

    Returns:
        Calling it projects a weight in place and returns it.

    Examples:
        >>> lin = nn.Linear(4, 3)
        >>> opt = torch.optim.SGD(lin.parameters(), lr=10.0)
        >>> handle = MaxNorm(1.0).attach(opt)
        >>> lin(torch.ones(2, 4)).sum().backward(); opt.step()
        >>> bool((lin.weight.norm(dim=1) <= 1.0 + 1e-6).all())
        True
    """

    def __init__(self, max_value=2.0, *, stacked: bool = False) -> None:
        self.max_value = check_strength("MaxNorm", "max_value", max_value, POSITIVE)
        if is_per_member(self.max_value) and not stacked:
            raise ValueError(format_error("MaxNorm", "stacked", "True when max_value is an (M,) tensor", stacked))
        self.stacked = stacked

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return max_norm_(weight, self.max_value, stacked=self.stacked)

    def __repr__(self) -> str:
        return f"MaxNorm(max_value={self.max_value}, stacked={self.stacked})"


class UnitNorm(Constraint):
    """Unit-norm constraint: each unit's incoming weight vector is rescaled to L2 norm 1 (Keras ``UnitNorm``).

    Convention: ``w_u ← w_u / (‖w_u‖ + 1e-7)``, norm over all dims but the unit dim.

    Args:
        stacked: weights carry a leading member dim ``(M, out, in, ...)``.

    Returns:
        Calling it projects a weight in place and returns it.

    Examples:
        >>> conv = nn.Conv1d(2, 3, kernel_size=5)
        >>> UnitNorm().apply_(conv)
        >>> torch.allclose(conv.weight.flatten(1).norm(dim=1), torch.ones(3))
        True
    """

    def __init__(self, *, stacked: bool = False) -> None:
        self.stacked = stacked

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return unit_norm_(weight, stacked=self.stacked)

    def __repr__(self) -> str:
        return f"UnitNorm(stacked={self.stacked})"


class NonNeg(Constraint):
    """Non-negativity constraint: ``w ← max(w, 0)`` after each step (Keras ``NonNeg``).

    Returns:
        Calling it projects a weight in place and returns it.

    Examples:
        >>> lin = nn.Linear(3, 2)
        >>> NonNeg().apply_(lin)
        >>> bool((lin.weight >= 0).all())
        True
    """

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return non_neg_(weight)

    def __repr__(self) -> str:
        return "NonNeg()"
