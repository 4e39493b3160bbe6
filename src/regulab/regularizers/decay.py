"""Coupled and decoupled weight decay, made explicit (Loshchilov & Hutter, ICLR 2019).

* **Coupled** (torch ``weight_decay=λ`` in SGD/Adam): ``grad ← grad + λ·w``, the gradient of
  a ``(λ/2)·Σw²`` penalty, i.e. :class:`~regulab.regularizers.L2` with ``l2 = λ/2``. Under
  Adam it is rescaled by the adaptive denominator and is *not* weight decay.
* **Decoupled** (AdamW): ``w ← w − lr·λ·w``, applied to the weights apart from the gradient
  step. For plain SGD both are the same update; under Adam they differ.

:class:`DecoupledWeightDecay` applies the decoupled rule just before ``optimizer.step()``
(as torch's AdamW does, so ``Adam + DecoupledWeightDecay`` equals ``AdamW`` bit for bit).
Coefficients may be ``(M,)`` tensors for weights stacked on a leading member dim.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from .._validate import NONNEG, register
from ..errors import format_error
from ._strength import check_strength, is_per_member, per_member_view

__all__ = ["coupled_decay_", "decoupled_decay_", "decay_factors", "DecoupledWeightDecay"]

register("coupled_decay_", "weight_decay", NONNEG)
register("decoupled_decay_", "lr", NONNEG)
register("decoupled_decay_", "weight_decay", NONNEG)
register("DecoupledWeightDecay", "weight_decay", NONNEG)


def _as_list(params) -> list[torch.Tensor]:
    return [params] if isinstance(params, torch.Tensor) else list(params)


@torch.no_grad()
def coupled_decay_(params, weight_decay) -> None:
    """Add ``weight_decay·w`` to each parameter's gradient in place (torch's coupled ``weight_decay``).

    Convention: ``grad ← grad + λ·w`` = gradient of ``(λ/2)·Σw²``. Parameters without a
    gradient are skipped.

    Args:
        params: a tensor or an iterable of tensors with ``.grad``.
        weight_decay: λ, a number >= 0, or an ``(M,)`` tensor for stacked ``(M, ...)`` parameters.

    Returns:
        None.

    Examples:
        >>> w = torch.ones(2, 2, requires_grad=True)
        >>> w.grad = torch.zeros(2, 2)
        >>> coupled_decay_([w], 0.1)
        >>> w.grad
        tensor([[0.1000, 0.1000],
                [0.1000, 0.1000]])
    """
    weight_decay = check_strength("coupled_decay_", "weight_decay", weight_decay, NONNEG)
    for p in _as_list(params):
        if p.grad is None:
            continue
        if is_per_member(weight_decay):
            p.grad.add_(p * per_member_view(weight_decay, p, "coupled_decay_", "weight_decay"))
        elif weight_decay != 0:
            p.grad.add_(p, alpha=weight_decay)


@torch.no_grad()
def decoupled_decay_(params, lr, weight_decay) -> None:
    """Shrink each parameter in place: ``w ← w − lr·λ·w`` (AdamW's decoupled decay).

    Convention: Loshchilov & Hutter 2019, as in torch ``AdamW`` (``w.mul_(1 − lr·λ)``);
    call it before ``optimizer.step()`` to reproduce AdamW exactly.

    Args:
        params: a tensor or an iterable of tensors.
        lr: the learning rate, a number >= 0 or an ``(M,)`` tensor.
        weight_decay: λ, a number >= 0 or an ``(M,)`` tensor for stacked ``(M, ...)`` parameters.

    Returns:
        None.

    Examples:
        >>> w = torch.ones(2, 1, 2)
        >>> decoupled_decay_(w, 0.1, torch.tensor([1.0, 0.0]))
        >>> w.flatten()
        tensor([0.9000, 0.9000, 1.0000, 1.0000])
    """
    lr = check_strength("decoupled_decay_", "lr", lr, NONNEG)
    weight_decay = check_strength("decoupled_decay_", "weight_decay", weight_decay, NONNEG)
    params = _as_list(params)
    for p, factor in zip(params, decay_factors(params, lr, weight_decay)):
        if factor is not None:
            p.mul_(factor)


def decay_factors(params: list[torch.Tensor], lr, weight_decay) -> list[torch.Tensor | float | None]:
    """The factor ``1 − lr·λ`` that :func:`decoupled_decay_` multiplies each parameter by (an
    ``(M, 1, ..., 1)`` tensor for per-member strengths; None for no decay), for validated
    strengths: a caller that decays the same tensors every step computes them once per lr.

    Examples:
        >>> decay_factors([torch.ones(2, 3)], 0.1, torch.tensor([1.0, 0.0]))[0].flatten()
        tensor([0.9000, 1.0000])
    """
    if not (is_per_member(lr) or is_per_member(weight_decay)):
        # same float expression as torch's AdamW
        return [1 - lr * weight_decay if lr * weight_decay != 0 else None for _ in params]
    out = []
    for p in params:
        lr_p = per_member_view(lr, p, "decoupled_decay_", "lr") if is_per_member(lr) else lr
        wd_p = per_member_view(weight_decay, p, "decoupled_decay_", "weight_decay") if is_per_member(weight_decay) else weight_decay
        out.append(1 - lr_p * wd_p)  # (M, 1, ..., 1) factor
    return out


class DecoupledWeightDecay:
    """Decoupled weight decay ``w ← w − lr·λ·w`` attached to an optimizer or kept for manual use.

    Convention: AdamW (Loshchilov & Hutter 2019). Given an optimizer, a step pre-hook decays
    every parameter that has a gradient (or only those in ``params``) with its group's
    current ``lr`` just before each ``optimizer.step()``, exactly as torch's AdamW, so
    LR schedulers are honoured. Given parameters instead, call :meth:`step` with the lr
    yourself before ``optimizer.step()``. Leave the optimizer's own ``weight_decay`` at 0.

    Args:
        optimizer_or_params: a ``torch.optim.Optimizer``, or an iterable of parameters.
        weight_decay: λ, a number >= 0, or an ``(M,)`` tensor for stacked ``(M, ...)`` parameters.
        params: with an optimizer, restrict the decay to these parameters (e.g. weights only).

    Returns:
        The object; ``remove()`` detaches the hook.

    Examples:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> wd = DecoupledWeightDecay(opt, weight_decay=0.5)
        >>> w.grad = torch.zeros(2)
        >>> opt.step()
        >>> w.data
        tensor([0.9500, 0.9500])
    """

    def __init__(self, optimizer_or_params, weight_decay=1e-2, *, params: Iterable[torch.Tensor] | None = None):
        self.weight_decay = check_strength("DecoupledWeightDecay", "weight_decay", weight_decay, NONNEG)
        self._handle = None
        if isinstance(optimizer_or_params, torch.optim.Optimizer):
            self.optimizer = optimizer_or_params
            self.params = None if params is None else _as_list(params)
            self._handle = self.optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.step())
        else:
            self.optimizer = None
            self.params = _as_list(optimizer_or_params)

    def step(self, lr=None) -> None:
        """Apply one decay now: with an optimizer, each group's ``lr``; otherwise the given ``lr``."""
        if self.optimizer is None:
            if lr is None:
                raise ValueError(format_error(
                    "DecoupledWeightDecay.step", "lr", "a number >= 0 when no optimizer is attached", lr))
            decoupled_decay_(self.params, lr, self.weight_decay)
            return
        chosen = None if self.params is None else {id(p) for p in self.params}
        for group in self.optimizer.param_groups:
            ps = [p for p in group["params"] if p.grad is not None and (chosen is None or id(p) in chosen)]
            decoupled_decay_(ps, group["lr"] if lr is None else lr, self.weight_decay)

    def remove(self) -> None:
        """Detach from the optimizer (no-op without one)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __repr__(self) -> str:
        return f"DecoupledWeightDecay(weight_decay={self.weight_decay})"
