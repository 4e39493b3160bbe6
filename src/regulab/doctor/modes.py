"""Checks on ``train()``/``eval()``: does the mode reach every submodule?"""
from __future__ import annotations

from torch import nn

from ..nn.base import is_dropout_module
from .findings import Finding

__all__ = ["stuck_modules", "check_modes", "is_batchnorm"]


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _overrides_mode(m: nn.Module) -> bool:
    t = type(m)
    return t.train is not nn.Module.train or t.eval is not nn.Module.eval


def _owner(name: str, mods: dict[str, nn.Module]) -> str | None:
    """Nearest ancestor-or-self whose class overrides ``train``/``eval``."""
    parts = name.split(".") if name else []
    for k in range(len(parts), -1, -1):
        cand = ".".join(parts[:k])
        if cand in mods and _overrides_mode(mods[cand]):
            return cand
    return None


def _matters(m: nn.Module) -> bool:
    # modules whose behaviour depends on self.training in torch/regulab
    return is_dropout_module(m) or is_batchnorm(m)


def stuck_modules(model: nn.Module, mode: bool) -> list[str]:
    """Names of submodules whose ``training`` differs from ``mode`` right now."""
    return [n for n, m in model.named_modules() if m.training != mode]


def _label(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(n or "<model>" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_modes(model: nn.Module, stuck_train: list[str], stuck_eval: list[str],
                random_in_eval: set[str]) -> list[Finding]:
    """Findings for modules still training after ``eval()`` (and not training after ``train()``).

    Args:
        stuck_train: modules with ``training=True`` after ``model.eval()`` (or after the eval passes).
        stuck_eval: modules with ``training=False`` after ``model.train()``.
        random_in_eval: modules found random in eval (to judge if a stuck plain module matters).
    """
    mods = dict(model.named_modules())
    out: list[Finding] = []
    by_owner: dict[str | None, list[str]] = {}
    for n in stuck_train:
        by_owner.setdefault(_owner(n, mods), []).append(n)
    for owner, names in by_owner.items():
        relevant = [n for n in names if _matters(mods[n]) or n in random_in_eval]
        bns = [n for n in names if is_batchnorm(mods[n])]
        drops = [n for n in names if is_dropout_module(mods[n])]
        what = []
        if drops:
            what.append(f"dropout stays on in {_label(drops)}")
        if bns:
            what.append(f"BatchNorm keeps using batch statistics (and updating running stats) in {_label(bns)}")
        effect = "; ".join(what) or f"{len(names)} submodule(s) stay in training mode: {_label(names)}"
        if owner is not None:
            cls = type(mods[owner]).__name__
            out.append(Finding(
                "error" if relevant else "warning", "train-not-propagated", owner,
                f"{cls}.train()/eval() is overridden and does not put its submodules in eval mode: after "
                f"model.eval() {effect}",
                f"in {cls}.train(self, mode=True) call `super().train(mode)` and `return self`, and apply any "
                f"special handling after it",
                {"stuck": names}))
            continue
        for n in bns:
            out.append(Finding(
                "error", "batchnorm-train-mode", n,
                f"{type(mods[n]).__name__} is in training mode after model.eval() (something sets it back "
                f"during forward): eval outputs depend on the batch and running statistics keep changing",
                "don't call .train() or set .training on submodules inside forward; to freeze BatchNorm, "
                "call bn.eval() after model.train() instead", {}))
        for n in drops:
            out.append(Finding(
                "error", "dropout-train-mode", n,
                f"{type(mods[n]).__name__} is in training mode after model.eval(): dropout stays on at inference",
                "don't call .train() or set .training on submodules inside forward; for MC dropout use "
                "regulab.mc_dropout(model) explicitly", {}))
    off = [n for n in stuck_eval if is_dropout_module(mods[n]) and getattr(mods[n], "p", 0) > 0]
    if off:
        owner = _owner(off[0], mods)
        out.append(Finding(
            "warning", "dropout-never-active", owner if owner is not None else off[0],
            f"after model.train() {_label(off)} still {'is' if len(off) == 1 else 'are'} in eval mode: "
            f"the dropout never regularizes training",
            "make train()/eval() overrides call super().train(mode) so the mode reaches every submodule",
            {"stuck": off}))
    return out
