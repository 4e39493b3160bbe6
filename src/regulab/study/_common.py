"""Pieces both trainers share: seeds, data order, learning-rate schedule, early stopping
(the library's :class:`~regulab.regularizers.EarlyStoppingRule`, its state kept as JSON).

Randomness is *stateless*: the data order of a member at an epoch, and every random draw
of a training step, come from generators seeded by a hash of (seed, epoch, step, ...), so
a checkpoint needs no generator state and a resumed run draws exactly what it would have.

Examples:
    >>> order(0, 3, 5).tolist() == order(0, 3, 5).tolist()
    True
    >>> [round(lr_at(Optimizer(schedule="step", step_size=2, gamma=0.5), e, 10), 4) for e in range(5)]
    [0.01, 0.01, 0.005, 0.005, 0.0025]
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import platform

import torch

from ..regularizers import EarlyStoppingRule, EarlyStoppingState
from .spec import EarlyStopping, Optimizer

__all__ = ["mix", "gen", "order", "lr_at", "drive", "es_rule", "es_value", "es_state_to_json", "es_state_from_json",
           "versions", "BIG"]

BIG = 1e30  # "no max-norm" for a member (max_norm_ needs a positive number)


def mix(*parts) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and machines)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def gen(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(mix(*parts))


def order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The training-set permutation of a member with ``seed`` at ``epoch`` (own order per member)."""
    return torch.randperm(n, generator=gen("order", seed, epoch))


def lr_at(opt: Optimizer, epoch: int, epochs: int) -> float:
    """Learning rate during 0-based ``epoch`` (per-epoch schedules, like torch's schedulers)."""
    if opt.schedule == "cosine":
        return opt.lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if opt.schedule == "step":
        return opt.lr * opt.gamma ** (epoch // opt.step_size)
    return opt.lr


def drive(events, on_commit=None, on_epoch=None):
    """Run a trainer's ``events()`` generator to its end, handing each commit point's ``(rows,
    statuses)`` to ``on_commit`` and each epoch's ``(epoch, seconds)`` to ``on_epoch`` (when
    given); returns the generator's result, the final rows."""
    while True:
        try:
            kind, *args = next(events)
        except StopIteration as stop:
            return stop.value
        handler = on_commit if kind == "commit" else on_epoch
        if handler is not None:
            handler(*args)


def es_rule(cfg: dict | None) -> EarlyStoppingRule | None:
    """The library's early-stopping rule for an arm's ``early_stopping`` table; None when off."""
    return None if cfg is None else EarlyStopping(**cfg).rule()


def es_value(cfg: dict, val_loss: float, val_acc: float) -> float:
    """The epoch's value of the monitored metric."""
    return val_acc if cfg["monitor"] == "val_accuracy" else val_loss


def improves(selection: str, best: dict, val_loss: float, val_acc: float) -> bool:
    """Whether an epoch beats the best one so far (``best``'s ``val_acc``/``val_loss``) under
    the study's ``selection``: higher validation accuracy, ties broken by lower validation
    loss; or lower validation loss."""
    if selection == "val_accuracy":
        return val_acc > best["val_acc"] or (val_acc == best["val_acc"] and val_loss < best["val_loss"])
    return val_loss < best["val_loss"]


def es_state_to_json(state: EarlyStoppingState) -> dict:
    """A one-model :class:`EarlyStoppingState` as JSON scalars (exact: floats round-trip through JSON).

    Examples:
        >>> import json
        >>> st, _ = EarlyStoppingRule("min").update(EarlyStoppingState.initial(), 0, 0.1)
        >>> d = es_state_to_json(st); d
        {'best': 0.1, 'has_best': True, 'best_epoch': 0, 'wait': 0, 'stopped_epoch': 0, 'stop': False}
        >>> es_state_to_json(es_state_from_json(json.loads(json.dumps(d)))) == d
        True
    """
    return {f.name: getattr(state, f.name).item() for f in dataclasses.fields(state)}


def es_state_from_json(d: dict) -> EarlyStoppingState:
    ref = EarlyStoppingState.initial()
    return EarlyStoppingState(**{f.name: torch.tensor(d[f.name], dtype=getattr(ref, f.name).dtype)
                                 for f in dataclasses.fields(ref)})


def versions() -> dict:
    import numpy

    from .. import __version__

    return {"regulab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
