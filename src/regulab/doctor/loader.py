"""Load a user's model factory from ``path/to/file.py:factory`` or ``package.module:factory``.

User code is imported only from the place named: a file path is loaded with
:func:`importlib.util.spec_from_file_location` (no directory is added to
``sys.path``); a dotted module name is imported from the current ``sys.path``.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from torch import nn

from ..errors import did_you_mean, first_line
from .diagnose import DoctorError

__all__ = ["load_factory", "build_model", "parse_shape"]

_FORM = "'path/to/file.py:factory' or 'package.module:factory'"


def _split(target: str) -> tuple[str, str]:
    src, sep, name = target.rpartition(":")
    if not sep or not src or not name.isidentifier():
        raise DoctorError(f"doctor: TARGET must be {_FORM}, got {target!r}")
    return src, name


def _load_file(src: str, target: str):
    path = Path(src)
    if not path.is_file():
        raise DoctorError(f"doctor: TARGET must name an existing .py file, got {target!r} (no file {src!r})")
    key = "_regulab_doctor_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise DoctorError(f"doctor: TARGET must name a Python file, got {target!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses/pickle look classes up here; no sys.path change
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # user code that raises or exits
        sys.modules.pop(key, None)
        raise DoctorError(f"doctor: TARGET file must import cleanly, got {type(e).__name__} "
                          f"importing {src!r}: {first_line(e)}") from None
    return module


def _load_module(src: str, target: str):
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", src):
        raise DoctorError(f"doctor: TARGET must be {_FORM}, got {target!r}")
    try:
        return importlib.import_module(src)
    except (Exception, SystemExit) as e:  # user code that raises or exits
        raise DoctorError(f"doctor: TARGET module must import cleanly, got {type(e).__name__} "
                          f"importing {src!r}: {first_line(e)}") from None


def load_factory(target: str):
    """Return the callable named by ``target``.

    Examples:
        >>> load_factory("collections:OrderedDict").__name__
        'OrderedDict'
        >>> load_factory("no_colon")
        Traceback (most recent call last):
        ...
        regulab.doctor.diagnose.DoctorError: doctor: TARGET must be 'path/to/file.py:factory' or 'package.module:factory', got 'no_colon'
    """
    src, name = _split(target)
    is_file = src.endswith(".py") or "/" in src or "\\" in src
    module = _load_file(src, target) if is_file else _load_module(src, target)
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        hint = did_you_mean(name, names)
        raise DoctorError(f"doctor: factory must be a callable defined in {src!r}, got {name!r}"
                          + (f"; {hint}" if hint else ""))
    return fn


def build_model(target: str) -> nn.Module:
    """Call the factory with no arguments; it must return an ``nn.Module``."""
    fn = load_factory(target)
    try:
        model = fn()
    except (Exception, SystemExit) as e:  # user code that raises or exits
        raise DoctorError(f"doctor: factory {target!r} must build a model without arguments, got "
                          f"{type(e).__name__}: {first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise DoctorError(f"doctor: factory {target!r} must return a torch.nn.Module, got {type(model).__name__}")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"8,3,32,32"``, ``"8x3x32x32"`` or ``"8 3 32 32"`` into a shape.

    Examples:
        >>> parse_shape("8x40")
        (8, 40)
    """
    body = text.strip().strip("()[]").strip()
    ok = re.fullmatch(r"\d+(\s*[,x×]\s*\d+|\s+\d+)*\s*,?", body) is not None
    shape = tuple(int(p) for p in re.findall(r"\d+", body)) if ok else ()
    if not shape or any(s <= 0 for s in shape):
        raise DoctorError(f"doctor: --input-shape must be positive integers like 8,3,32,32 "
                          f"(batch first), got {text!r}")
    return shape
