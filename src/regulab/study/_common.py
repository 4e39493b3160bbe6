"""Pieces both trainers share: seeds, data order, learning-rate schedule, early stopping.

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

import hashlib
import math
import platform

import torch

from .spec import Optimizer

__all__ = ["mix", "gen", "order", "lr_at", "EarlyStopper", "versions", "BIG"]

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


class EarlyStopper:
    """Keras ``EarlyStopping`` decision rule for one run (monitor, mode, min_delta, patience,
    baseline, start_from_epoch). ``update`` returns True when training should stop.

    Examples:
        >>> es = EarlyStopper({"monitor": "val_loss", "patience": 1})
        >>> [es.update(e, v) for e, v in enumerate([1.0, 0.9, 0.95])]
        [False, False, True]
    """

    def __init__(self, cfg: dict, state: dict | None = None) -> None:
        self.cfg = cfg
        mode = cfg.get("mode", "auto")
        if mode == "auto":
            mode = "max" if "acc" in cfg.get("monitor", "val_loss") else "min"
        self.sign = 1.0 if mode == "min" else -1.0
        st = state or {}
        self.wait = st.get("wait", 0)
        self.best = st.get("best", math.inf)
        self.stopped_epoch = st.get("stopped_epoch", 0)

    def state(self) -> dict:
        return {"wait": self.wait, "best": self.best, "stopped_epoch": self.stopped_epoch}

    def _better(self, value: float, ref: float) -> bool:
        return value + self.cfg.get("min_delta", 0.0) < ref  # both signed: smaller is better

    def update(self, epoch: int, value: float) -> bool:
        if epoch < self.cfg.get("start_from_epoch", 0) or not math.isfinite(value):
            return False
        self.wait += 1
        v = self.sign * value
        baseline = self.cfg.get("baseline")
        if self._better(v, self.best):
            self.best = v
            if baseline is None or self._better(v, self.sign * baseline):
                self.wait = 0
            return False
        if self.wait >= self.cfg.get("patience", 0) and epoch > 0:
            self.stopped_epoch = epoch
            return True
        return False


def versions() -> dict:
    import numpy

    from .. import __version__

    return {"regulab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": platform.machine()}
