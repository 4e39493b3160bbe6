"""Built-in models (mlp, cnn1d, cnn2d) as ordinary modules and stacked twins, and user factories.

:func:`build` returns a :class:`ModelDef`: ``make(p, input_p)`` builds the ordinary module
(torch default init under the current RNG state), ``stacked(template, M)`` its stacked twin
(None for user factories, which train one run at a time).

Examples:
    >>> md = build("mlp", {"widths": [100, 100]}, (40,), 10)
    >>> m = md.make(); type(m).__name__, sum(p.numel() for p in m.parameters())
    ('MLP', 15210)
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import SpecError
from .cnn import CNN, StackedCNN
from .mlp import MLP, StackedMLP
from .stacked import FlatParams, seeded_module

__all__ = ["MLP", "CNN", "StackedMLP", "StackedCNN", "FlatParams", "seeded_module", "build", "ModelDef",
           "load_factory"]


@dataclass
class ModelDef:
    make: Callable[..., nn.Module]          # make(p=0.0, input_p=0.0) -> nn.Module
    stacked: Callable | None                # stacked(template, M) -> stacked twin, or None


def build(kind: str, cfg: dict, input_shape: tuple, num_classes: int) -> ModelDef:
    """Model definition for ``kind`` with settings ``cfg`` (the spec's model table)."""
    in_features = 1
    for s in input_shape:
        in_features *= s
    act = cfg.get("activation", "relu")
    if kind == "mlp":
        def make(p=0.0, input_p=0.0):
            return MLP(in_features, cfg.get("widths", [100, 100]), num_classes, act,
                       cfg.get("batchnorm", False), cfg.get("residual", True), p, input_p)
        return ModelDef(make, StackedMLP)
    if kind in ("cnn1d", "cnn2d"):
        dims = 1 if kind == "cnn1d" else 2
        ok = len(input_shape) in (dims, dims + 1)
        if not ok:
            raise SpecError(f"spec.model.kind: must match the data's input shape, got {kind!r} for "
                            f"input {tuple(input_shape)}; use {'cnn2d' if len(input_shape) >= 3 else 'cnn1d'} or mlp")

        def make(p=0.0, input_p=0.0):
            return CNN(input_shape, num_classes, dims=dims, channels=cfg.get("channels", [25, 25, 25]),
                       kernel_size=cfg.get("kernel_size", 3), stride=cfg.get("stride", 2),
                       widths=cfg.get("widths", []), activation=act, p=p, input_p=input_p)
        return ModelDef(make, StackedCNN)
    factory = load_factory(kind)
    kwargs = dict(cfg.get("kwargs", {}))
    params = inspect.signature(factory).parameters

    def make(p=0.0, input_p=0.0):
        extra = {k: v for k, v in (("input_shape", tuple(input_shape)), ("num_classes", num_classes))
                 if k in params and k not in kwargs}
        m = factory(**kwargs, **extra)
        if not isinstance(m, nn.Module):
            raise SpecError(f"spec.model.kind: {kind} must return an nn.Module, got {type(m).__name__}")
        return m
    return ModelDef(make, None)


def load_factory(ref: str) -> Callable:
    """Resolve ``path/to/file.py:factory`` or ``package.module:factory``."""
    mod_ref, _, name = ref.rpartition(":")
    try:
        if mod_ref.endswith(".py") or "/" in mod_ref:
            path = Path(mod_ref).expanduser()
            if not path.is_file():
                raise SpecError(f"spec.model.kind: file must exist, got {mod_ref!r}")
            spec = importlib.util.spec_from_file_location(f"regulab_user_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_ref)
    except SpecError:
        raise
    except (Exception, SystemExit) as e:  # the user's module failed to import (or exited): one line
        raise SpecError(f"spec.model.kind: {mod_ref!r} must be importable, got {type(e).__name__}: {e}") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise SpecError(f"spec.model.kind: {mod_ref!r} must define a callable {name!r}, got "
                        f"{type(fn).__name__ if fn is not None else 'nothing'}")
    return fn
