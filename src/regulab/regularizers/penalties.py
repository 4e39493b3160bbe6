"""Weight penalties L1, L2 and L1+L2 (Keras convention) and the parameter selection they use.

Keras convention (``keras.regularizers``): ``l1·Σ|w| + l2·Σw²``, no ½ factor, so the
gradient of ``L2(l2)`` is ``2·l2·w``: torch's coupled ``weight_decay=λ`` equals
``L2(l2=λ/2)``. By default the penalties apply to weight matrices and conv kernels
only, never to biases or normalisation parameters (timm's ``param_groups_weight_decay``
rule, extended to stacked ``(M, out)`` biases); ``select=`` changes that.

Strengths may be a number or an ``(M,)`` tensor; with an ``(M,)`` strength every
weight must be stacked ``(M, ...)`` and the penalty is per member, shape ``(M,)``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._validate import NONNEG, OneOf, check, register
from ._strength import check_strength, is_per_member, per_member_view

__all__ = [
    "l1_penalty",
    "l2_penalty",
    "l1l2_penalty",
    "L1",
    "L2",
    "L1L2",
    "select_parameters",
    "param_groups_weight_decay",
    "NORM_TYPES",
]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
SELECT = OneOf(("weights", "all"))
_UNUSED = object()  # the strength a subclass does not have (L1 has no l2)

for _where, _param in (("l1_penalty", "strength"), ("l2_penalty", "strength"), ("l1l2_penalty", "l1"),
                       ("l1l2_penalty", "l2"), ("L1", "l1"), ("L2", "l2"), ("L1L2", "l1"), ("L1L2", "l2")):
    register(_where, _param, NONNEG)
for _where in ("L1", "L2", "L1L2", "select_parameters", "param_groups_weight_decay"):
    register(_where, "select", SELECT)
register("param_groups_weight_decay", "weight_decay", NONNEG)


def _is_weight(module: nn.Module, name: str, param: nn.Parameter) -> bool:
    # (M, out) stacked biases are 2-D, hence the name test besides the ndim test.
    return param.ndim >= 2 and not name.endswith("bias") and not isinstance(module, NORM_TYPES)


def _check_select(where: str, select: object) -> object:
    if callable(select):
        return select
    return check(where, "select", select, SELECT, "or pass a callable (module, name, param) -> bool")


def select_parameters(model: nn.Module, select="weights") -> list[tuple[str, nn.Parameter]]:
    """Return the ``(qualified_name, parameter)`` pairs a penalty, decay or constraint applies to.

    Convention: ``"weights"`` (default) keeps parameters with ``ndim >= 2`` whose name
    does not end in ``bias`` and whose module is not a normalisation layer
    (:data:`NORM_TYPES`): Linear/Conv weights, stacked ``(M, out, in)`` weights,
    embeddings. ``"all"`` keeps every parameter; a callable ``(module, name, param) -> bool``
    decides itself. Shared parameters are listed once.

    Args:
        model: the module to scan.
        select: ``"weights"``, ``"all"`` or a callable.

    Returns:
        A list of ``(name, parameter)``.

    Examples:
        >>> m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        >>> [n for n, _ in select_parameters(m)]
        ['0.weight', '2.weight']
    """
    select = _check_select("select_parameters", select)
    keep = _is_weight if select == "weights" else (lambda m, n, p: True) if select == "all" else select
    out, seen = [], set()
    for mod_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not keep(module, name, param):
                continue
            seen.add(id(param))
            out.append((f"{mod_name}.{name}" if mod_name else name, param))
    return out


def _sum_per_member(weights, strength, fn: Callable[[torch.Tensor], torch.Tensor], where: str):
    """``strength · Σ fn(w)`` over all weights; per member when ``strength`` is ``(M,)``."""
    if isinstance(weights, torch.Tensor):
        weights = [weights]
    total = None
    for w in weights:
        if is_per_member(strength):
            term = fn(w).reshape(w.shape[0], -1).sum(1)  # (M,)
            term = term * per_member_view(strength, term, where, "strength")
        else:
            term = fn(w).sum() * strength
        total = term if total is None else total + term
    if total is None:  # no weights: a differentiable-shaped zero
        return torch.zeros(strength.shape) if is_per_member(strength) else torch.zeros(())
    return total


def l1_penalty(weights, strength) -> torch.Tensor:
    """L1 penalty ``strength · Σ|w|`` (Keras ``L1``, Tibshirani's lasso).

    Args:
        weights: a tensor or an iterable of tensors.
        strength: a number >= 0, or an ``(M,)`` tensor when every weight is stacked ``(M, ...)``.

    Returns:
        A scalar, or an ``(M,)`` tensor of per-member penalties.

    Examples:
        >>> l1_penalty(torch.tensor([[1.0, -2.0]]), 0.5)
        tensor(1.5000)
        >>> l1_penalty(torch.tensor([[[1.0, -2.0]], [[3.0, 0.0]]]), torch.tensor([1.0, 0.1]))
        tensor([3.0000, 0.3000])
    """
    strength = check_strength("l1_penalty", "strength", strength, NONNEG)
    return _sum_per_member(weights, strength, torch.abs, "l1_penalty")


def l2_penalty(weights, strength) -> torch.Tensor:
    """L2 penalty ``strength · Σw²`` (Keras ``L2``: no ½ factor; gradient ``2·strength·w``).

    Args:
        weights: a tensor or an iterable of tensors.
        strength: a number >= 0, or an ``(M,)`` tensor when every weight is stacked ``(M, ...)``.

    Returns:
        A scalar, or an ``(M,)`` tensor of per-member penalties.

    Examples:
        >>> l2_penalty(torch.tensor([[1.0, -2.0]]), 0.5)
        tensor(2.5000)
        >>> l2_penalty(torch.ones(2, 3, 4), torch.tensor([1.0, 0.0]))
        tensor([12.,  0.])
    """
    strength = check_strength("l2_penalty", "strength", strength, NONNEG)
    return _sum_per_member(weights, strength, torch.square, "l2_penalty")


def l1l2_penalty(weights, l1=0.0, l2=0.0) -> torch.Tensor:
    """Elastic-net penalty ``l1·Σ|w| + l2·Σw²`` (Keras ``L1L2``; Zou & Hastie 2005).

    Args:
        weights: a tensor or an iterable of tensors.
        l1: a number >= 0 or an ``(M,)`` tensor.
        l2: a number >= 0 or an ``(M,)`` tensor.

    Returns:
        A scalar, or an ``(M,)`` tensor when either strength is per member.

    Examples:
        >>> l1l2_penalty(torch.tensor([[1.0, -2.0]]), l1=1.0, l2=1.0)
        tensor(8.)
    """
    l1 = check_strength("l1l2_penalty", "l1", l1, NONNEG)
    l2 = check_strength("l1l2_penalty", "l2", l2, NONNEG)
    weights = [weights] if isinstance(weights, torch.Tensor) else list(weights)
    return _sum_per_member(weights, l1, torch.abs, "l1l2_penalty") + _sum_per_member(
        weights, l2, torch.square, "l1l2_penalty"
    )


class _Penalty:
    """Shared body of :class:`L1`, :class:`L2`, :class:`L1L2`: call on tensors or on a model."""

    def __init__(self, l1, l2, select) -> None:
        where = type(self).__name__
        self.l1 = 0.0 if l1 is _UNUSED else check_strength(where, "l1", l1, NONNEG)
        self.l2 = 0.0 if l2 is _UNUSED else check_strength(where, "l2", l2, NONNEG)
        self.select = _check_select(where, select)

    def __call__(self, weights) -> torch.Tensor:
        """The penalty of a tensor or an iterable of tensors (Keras ``regularizer(x)``)."""
        weights = [weights] if isinstance(weights, torch.Tensor) else list(weights)
        where = type(self).__name__
        terms = [
            _sum_per_member(weights, s, fn, where)
            for s, fn in ((self.l1, torch.abs), (self.l2, torch.square))
            if _nonzero(s)
        ]
        if terms:
            return terms[0] if len(terms) == 1 else terms[0] + terms[1]
        shape = self.l1.shape if is_per_member(self.l1) else self.l2.shape if is_per_member(self.l2) else ()
        device = weights[0].device if weights else None
        return torch.zeros(shape, device=device)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The differentiable penalty of ``model``'s selected parameters (scalar, or ``(M,)`` per member)."""
        return self([p for _, p in select_parameters(model, self.select)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._args()}, select={self.select!r})"


def _nonzero(s) -> bool:
    return is_per_member(s) or s != 0


class L1(_Penalty):
    """L1 weight penalty ``l1·Σ|w|`` (Keras ``regularizers.L1``).

    Args:
        l1: strength, a number >= 0 or an ``(M,)`` tensor for stacked weights.
        select: which parameters :meth:`penalty` covers (see :func:`select_parameters`).

    Returns:
        Calling it on tensors, or ``penalty(model)``, returns a scalar (``(M,)`` per member).

    Examples:
        >>> m = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = m.weight.copy_(torch.tensor([[1.0, -3.0]]))
        >>> round(L1(0.1).penalty(m).item(), 6)
        0.4
    """

    def __init__(self, l1=0.01, *, select="weights") -> None:
        super().__init__(l1, _UNUSED, select)

    def _args(self) -> str:
        return f"l1={self.l1}"


class L2(_Penalty):
    """L2 weight penalty ``l2·Σw²`` (Keras ``regularizers.L2``; equals torch ``weight_decay=2·l2`` under SGD).

    Args:
        l2: strength, a number >= 0 or an ``(M,)`` tensor for stacked weights.
        select: which parameters :meth:`penalty` covers (see :func:`select_parameters`).

    Returns:
        Calling it on tensors, or ``penalty(model)``, returns a scalar (``(M,)`` per member).

    Examples:
        >>> m = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = m.weight.copy_(torch.tensor([[1.0, -3.0]]))
        >>> round(L2(0.1).penalty(m).item(), 6)
        1.0
    """

    def __init__(self, l2=0.01, *, select="weights") -> None:
        super().__init__(_UNUSED, l2, select)

    def _args(self) -> str:
        return f"l2={self.l2}"


class L1L2(_Penalty):
    """Elastic-net penalty ``l1·Σ|w| + l2·Σw²`` (Keras ``regularizers.L1L2``).

    Args:
        l1: L1 strength, a number >= 0 or an ``(M,)`` tensor.
        l2: L2 strength, a number >= 0 or an ``(M,)`` tensor.
        select: which parameters :meth:`penalty` covers (see :func:`select_parameters`).

    Returns:
        Calling it on tensors, or ``penalty(model)``, returns a scalar (``(M,)`` per member).

    Examples:
        >>> L1L2(l1=1.0, l2=1.0)(torch.tensor([[1.0, -2.0]]))
        tensor(8.)
    """

    def __init__(self, l1=0.0, l2=0.0, *, select="weights") -> None:
        super().__init__(l1, l2, select)

    def _args(self) -> str:
        return f"l1={self.l1}, l2={self.l2}"


def param_groups_weight_decay(model: nn.Module, weight_decay=1e-5, no_weight_decay_list=(), *, select="weights"):
    """Optimizer parameter groups that keep biases and norm parameters out of weight decay (timm).

    Convention: timm ``param_groups_weight_decay``: 1-D parameters, ``*.bias`` and names in
    ``no_weight_decay_list`` get ``weight_decay=0``; the rest get ``weight_decay``. Here the
    "rest" is :func:`select_parameters` (``select="weights"``), which also skips stacked
    ``(M, out)`` biases. Frozen parameters are left out, as in timm.

    Args:
        model: the module.
        weight_decay: coefficient for the decayed group (a number >= 0).
        no_weight_decay_list: qualified names to exclude as well.
        select: the decayed selection (see :func:`select_parameters`).

    Returns:
        ``[{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]``.

    Examples:
        >>> m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        >>> groups = param_groups_weight_decay(m, 0.05)
        >>> [len(g["params"]) for g in groups], groups[1]["weight_decay"]
        ([3, 1], 0.05)
    """
    check("param_groups_weight_decay", "weight_decay", weight_decay, NONNEG)
    select = _check_select("param_groups_weight_decay", select)
    decayed = {id(p) for n, p in select_parameters(model, select) if n not in set(no_weight_decay_list)}
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if id(param) in decayed else no_decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
