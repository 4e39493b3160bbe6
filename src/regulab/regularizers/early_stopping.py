"""Early stopping with Keras parity, as a pure rule over a small (vectorisable) state.

Convention (Keras 3 ``callbacks.EarlyStopping``): after each epoch at or past
``start_from_epoch``, ``wait += 1``; the value *improves* when there is no best yet or
``value − min_delta > best`` (mode max) / ``value + min_delta < best`` (mode min); on
improvement ``best``/``best_epoch`` update and ``wait`` resets to 0 only if the value also
beats ``baseline`` (when given); otherwise training stops once ``wait >= patience`` and
``epoch > 0``. Stopping sets a flag; nothing raises. With ``restore_best_weights`` the
weights of the best epoch are restored at the end of training, whatever stopped it.

:class:`EarlyStoppingRule` is the pure decision logic: ``rule.update(state, epoch, value)``
returns a new :class:`EarlyStoppingState`. Every field is a tensor of shape ``()`` or
``(M,)``, so a stacked engine keeps one state for M members and snapshots the members in
the returned ``improved`` mask. :class:`EarlyStopping` is the one-model callback.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._validate import NONNEG, NONNEG_INT, Interval, OneOf, check, register
from ..errors import did_you_mean, format_error

__all__ = ["EarlyStoppingState", "EarlyStoppingRule", "EarlyStopping"]

MODE = OneOf(("auto", "min", "max"))
_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "iou")
for _where in ("EarlyStoppingRule", "EarlyStopping"):
    register(_where, "min_delta", NONNEG)
    register(_where, "patience", NONNEG_INT)
    register(_where, "start_from_epoch", NONNEG_INT)
register("EarlyStoppingRule", "mode", OneOf(("min", "max")))
register("EarlyStopping", "mode", MODE)


@dataclass(frozen=True)
class EarlyStoppingState:
    """State of early stopping for one model (fields of shape ``()``) or M members (``(M,)``).

    ``best`` is meaningful where ``has_best``; ``stop`` is the stop flag; ``stopped_epoch``
    is 0 until a stop (Keras).
    """

    best: torch.Tensor
    has_best: torch.Tensor
    best_epoch: torch.Tensor
    wait: torch.Tensor
    stopped_epoch: torch.Tensor
    stop: torch.Tensor

    @classmethod
    def initial(cls, members: int | None = None, device: torch.device | str | None = None) -> EarlyStoppingState:
        """The state before the first epoch: shape ``()``, or ``(members,)``, on ``device`` (default CPU)."""
        shape = () if members is None else (check("EarlyStoppingState", "members", members, Interval(1, math.inf, "left", True)),)
        zeros = torch.zeros(shape, dtype=torch.int64, device=device)
        return cls(torch.full(shape, math.nan, dtype=torch.float64, device=device),
                   torch.zeros(shape, dtype=torch.bool, device=device), zeros, zeros, zeros,
                   torch.zeros(shape, dtype=torch.bool, device=device))


@dataclass(frozen=True)
class EarlyStoppingRule:
    """The pure Keras early-stopping decision: ``update(state, epoch, value) -> (state, improved)``.

    Args:
        mode: ``"min"`` or ``"max"`` (the direction of improvement).
        min_delta: smallest change that counts as an improvement (>= 0).
        patience: epochs without improvement before stopping (>= 0).
        baseline: value that must be beaten for the patience counter to reset, or None.
        start_from_epoch: epochs to ignore before monitoring starts (>= 0).

    Returns:
        ``update`` returns the new state and the boolean ``improved`` mask.

    Examples:
        >>> rule = EarlyStoppingRule("min", patience=1)
        >>> state = EarlyStoppingState.initial(members=2)
        >>> for epoch, v in enumerate([[3.0, 3.0], [2.0, 4.0], [1.0, 5.0]]):
        ...     state, improved = rule.update(state, epoch, torch.tensor(v))
        >>> state.stop.tolist(), state.stopped_epoch.tolist(), state.best_epoch.tolist()
        ([False, True], [0, 1], [2, 0])
    """

    mode: str = "min"
    min_delta: float = 0.0
    patience: int = 0
    baseline: float | None = None
    start_from_epoch: int = 0

    def __post_init__(self) -> None:
        where = "EarlyStoppingRule"
        check(where, "mode", self.mode, OneOf(("min", "max")))
        check(where, "min_delta", self.min_delta, NONNEG)
        check(where, "patience", self.patience, NONNEG_INT)
        check(where, "start_from_epoch", self.start_from_epoch, NONNEG_INT)
        if self.baseline is not None:
            check(where, "baseline", self.baseline, Interval(), "or None")

    def better(self, value: torch.Tensor, reference) -> torch.Tensor:
        """Keras ``_is_improvement`` against a known reference: ``value ∓ min_delta`` beats ``reference``."""
        if self.mode == "max":
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def update(self, state: EarlyStoppingState, epoch: int, value) -> tuple[EarlyStoppingState, torch.Tensor]:
        """One epoch end. Members already stopped, and epochs before ``start_from_epoch``, are left unchanged."""
        value = torch.as_tensor(value, dtype=torch.float64, device=state.best.device).expand(state.best.shape)  # () or (M,)
        active = ~state.stop
        if epoch < self.start_from_epoch:
            return state, torch.zeros_like(active)
        wait = state.wait + active.long()
        improved = active & (~state.has_best | self.better(value, state.best))
        beats_baseline = improved if self.baseline is None else improved & self.better(value, self.baseline)
        wait = torch.where(beats_baseline, 0, wait)
        stop_now = active & ~improved & (wait >= self.patience) & (epoch > 0)
        new = EarlyStoppingState(
            best=torch.where(improved, value, state.best),
            has_best=state.has_best | improved,
            best_epoch=torch.where(improved, epoch, state.best_epoch),
            wait=wait,
            stopped_epoch=torch.where(stop_now, epoch, state.stopped_epoch),
            stop=state.stop | stop_now,
        )
        return new, improved


class EarlyStopping:
    """Stop training when a monitored metric stops improving (Keras ``EarlyStopping`` parity).

    Convention: see the module doc (Keras 3 rule). ``mode="auto"`` means ``"max"`` when the
    monitor name (without ``val_``) contains one of ``acc, auc, precision, recall, f1, iou``,
    else ``"min"``. The callback sets ``stop_training_`` and never raises to stop. It records
    ``best_epoch_``, ``best_value_`` (None before the first monitored epoch),
    ``stopped_epoch_`` and ``wait_``. For M stacked members use :class:`EarlyStoppingRule`
    with ``EarlyStoppingState.initial(M)`` (one vectorised state) instead.

    Args:
        monitor: the key of the metric in the ``logs`` dict passed to :meth:`on_epoch_end`.
        min_delta: smallest change that counts as an improvement (>= 0).
        patience: epochs without improvement before stopping (>= 0).
        mode: ``"auto"``, ``"min"`` or ``"max"``.
        baseline: value the metric must beat for the patience counter to reset, or None.
        restore_best_weights: restore the best epoch's ``state_dict`` in :meth:`on_train_end`.
        start_from_epoch: epochs to ignore before monitoring (>= 0).

    Returns:
        :meth:`on_epoch_end` returns ``stop_training_``.

    Examples:
        >>> es = EarlyStopping(monitor="val_loss", patience=2)
        >>> for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.85, 0.7]):
        ...     if es.on_epoch_end(epoch, {"val_loss": loss}):
        ...         break
        >>> es.stopped_epoch_, es.best_epoch_, es.best_value_
        (3, 1, 0.8)
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 baseline: float | None = None, restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        where = "EarlyStopping"
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(format_error(where, "monitor", "a non-empty metric name", monitor))
        check(where, "mode", mode, MODE)
        for name, value, constraint in (("min_delta", min_delta, NONNEG), ("patience", patience, NONNEG_INT),
                                        ("start_from_epoch", start_from_epoch, NONNEG_INT)):
            check(where, name, value, constraint)
        if baseline is not None:
            check(where, "baseline", baseline, Interval(), "or None")
        self.monitor = monitor
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        if mode == "auto":
            metric = monitor.removeprefix("val_").lower()
            mode = "max" if any(w in metric for w in _MAX_WORDS) else "min"
        self.rule = EarlyStoppingRule(mode, min_delta, patience, baseline, start_from_epoch)
        self.on_train_begin()

    def on_train_begin(self, model: nn.Module | None = None) -> None:
        """Reset the state (a callback may be reused across fits)."""
        self.state_ = EarlyStoppingState.initial()
        self.best_weights_: dict[str, torch.Tensor] | None = None
        self.model = model

    def on_epoch_end(self, epoch: int, logs, model: nn.Module | None = None) -> bool:
        """Feed the epoch's metrics (a dict holding ``monitor``, or the number itself); return ``stop_training_``."""
        model = model if model is not None else self.model
        self.model = model
        value = self._monitor_value(logs)
        self.state_, improved = self.rule.update(self.state_, epoch, value)
        if bool(improved) and self.restore_best_weights and model is not None:
            self.best_weights_ = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.stop_training_

    def on_train_end(self, model: nn.Module | None = None) -> None:
        """Restore the best weights when ``restore_best_weights`` (whether or not training was stopped early)."""
        model = model if model is not None else self.model
        if self.restore_best_weights and self.best_weights_ is not None and model is not None:
            model.load_state_dict(self.best_weights_)

    def _monitor_value(self, logs) -> float:
        if isinstance(logs, dict):
            if self.monitor not in logs:
                fix = did_you_mean(self.monitor, logs) or f"logged metrics are {sorted(logs)}"
                raise ValueError(format_error("EarlyStopping", "monitor", "a key of the logs", self.monitor, fix))
            logs = logs[self.monitor]
        return float(logs)

    @property
    def stop_training_(self) -> bool:
        return bool(self.state_.stop)

    @property
    def best_epoch_(self) -> int:
        return int(self.state_.best_epoch)

    @property
    def best_value_(self) -> float | None:
        return float(self.state_.best) if bool(self.state_.has_best) else None

    @property
    def stopped_epoch_(self) -> int:
        return int(self.state_.stopped_epoch)

    @property
    def wait_(self) -> int:
        return int(self.state_.wait)

    def __repr__(self) -> str:
        r = self.rule
        return (f"EarlyStopping(monitor={self.monitor!r}, min_delta={r.min_delta}, patience={r.patience}, "
                f"mode={self.mode!r}, baseline={r.baseline}, restore_best_weights={self.restore_best_weights}, "
                f"start_from_epoch={r.start_from_epoch})")
