"""Dropout rate schedules: change ``p`` of every dropout module over training.

A pure rate function :func:`scheduled_rate` (``t`` in [0, total] → p) and a thin
stateful driver :class:`DropoutSchedule` that sets ``p`` on a model's dropout
modules (:func:`regulab.nn.is_dropout_module`; modules with a learnt rate, such as
``ConcreteDropout``, are skipped) each time ``step()`` is called — once per step
or once per epoch, as ``by`` says.

Kinds, with ``s = min(t, total)/total``:

* ``"constant"``: ``p_start``.
* ``"linear"``: ``p_start + (p_end − p_start)·s``; with ``p_start < p_end`` it is the
  linear ramp-up of curriculum dropout (Morerio et al. 2017 use an exponential
  ramp, ``"exp"``), with ``p_start > p_end`` a linear anneal.
* ``"cosine"``: ``p_end + (p_start − p_end)·(1 + cos(π·s))/2``.
* ``"exp"``: Morerio et al. 2017 curriculum dropout,
  ``p_end + (p_start − p_end)·exp(−γ·t)`` with ``γ = 10/total`` (1 − e^-10 of the way at ``total``).
"""
from __future__ import annotations

import math

from torch import nn

from ._validate import NONNEG_INT, POS_INT, PROB, OneOf, check, register
from .nn.base import is_dropout_module

__all__ = ["scheduled_rate", "DropoutSchedule", "KINDS"]

KINDS = ("constant", "linear", "cosine", "exp")
for _where in ("scheduled_rate", "DropoutSchedule"):
    register(_where, "kind", OneOf(KINDS))
    register(_where, "p_start", PROB)
    register(_where, "p_end", PROB)
    register(_where, "total", POS_INT)
register("scheduled_rate", "t", NONNEG_INT)
register("DropoutSchedule", "by", OneOf(("step", "epoch")))


def scheduled_rate(kind: str, t: int, total: int, p_start: float, p_end: float) -> float:
    """The rate at step (or epoch) ``t`` of a schedule of length ``total``; pure.

    Examples:
        >>> from regulab.schedules import scheduled_rate
        >>> [scheduled_rate("linear", t, 4, 0.0, 0.4) for t in range(6)]
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]
        >>> scheduled_rate("cosine", 2, 4, 0.5, 0.1)
        0.3
    """
    kind = check("scheduled_rate", "kind", kind, OneOf(KINDS))
    t = check("scheduled_rate", "t", t, NONNEG_INT)
    total = check("scheduled_rate", "total", total, POS_INT)
    a = float(check("scheduled_rate", "p_start", p_start, PROB))
    b = float(check("scheduled_rate", "p_end", p_end, PROB))
    s = min(t, total) / total
    if kind == "constant":
        p = a
    elif kind == "linear":
        p = a + (b - a) * s
    elif kind == "cosine":
        p = b + (a - b) * (1 + math.cos(math.pi * s)) / 2
    else:
        p = b + (a - b) * math.exp(-10.0 * min(t, total) / total)
    return round(min(1.0, max(0.0, p)), 12)


class DropoutSchedule:
    """Drive the ``p`` of every dropout module of ``model`` along a schedule.

    Args:
        model: the model whose dropout modules are scheduled.
        kind: "constant", "linear", "cosine" or "exp" (see the module docs).
        p_start: rate at t = 0.
        p_end: rate at t >= total.
        total: length of the schedule in steps (or epochs).
        by: "step" or "epoch": what one ``step()`` call means (for the record).
        relative: multiply each module's initial ``p`` by the scheduled value instead of
            setting it (keeps per-layer ratios, e.g. drop-path rates over depth).

    Examples:
        >>> import torch, regulab
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3), regulab.nn.Dropout(0.5))
        >>> sched = regulab.schedules.DropoutSchedule(net, "linear", 0.0, 0.4, total=4)
        >>> net[1].p
        0.0
        >>> for _ in range(2):
        ...     sched.step()
        >>> net[1].p, sched.t
        (0.2, 2)
    """

    def __init__(self, model: nn.Module, kind: str = "linear", p_start: float = 0.0, p_end: float = 0.5,
                 total: int = 1000, by: str = "step", relative: bool = False) -> None:
        self.kind = check("DropoutSchedule", "kind", kind, OneOf(KINDS))
        self.p_start = float(check("DropoutSchedule", "p_start", p_start, PROB))
        self.p_end = float(check("DropoutSchedule", "p_end", p_end, PROB))
        self.total = check("DropoutSchedule", "total", total, POS_INT)
        self.by = check("DropoutSchedule", "by", by, OneOf(("step", "epoch")))
        self.relative = relative
        self.modules = [m for m in model.modules() if is_dropout_module(m) and not getattr(m, "learned_p", False)]
        self.base_p = [float(m.p) for m in self.modules]
        self.t = 0
        self._apply()

    def rate(self) -> float:
        """The scheduled value at the current ``t``."""
        return scheduled_rate(self.kind, self.t, self.total, self.p_start, self.p_end)

    def _apply(self) -> None:
        r = self.rate()
        for m, p0 in zip(self.modules, self.base_p):
            m.p = round(p0 * r, 12) if self.relative else r

    def step(self) -> None:
        """Advance one step (or epoch) and set the new rates."""
        self.t += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self._apply()
