"""The C++ dropout op (:file:`native/dropout.cpp`): built once per machine, then loaded.

Eager training-mode dropout of a CPU float32/float64 tensor runs as one C++ call: seed draw,
kernel (the same bits as the numba kernel and the torch reference) and an autograd node whose
backward never enters Python. Everything else, and any machine where the op cannot be built
(no C++ compiler), takes the numba path, with the same values.

The op is compiled with ``torch.utils.cpp_extension`` on first use (about a minute; ``make``
builds it during set-up, ``regulab build`` builds it by hand) into torch's
extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), one build
per source, torch version and instruction set. ``REGULAB_NATIVE=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

from .._numba_cache import folder_lock

__all__ = ["SOURCE", "enabled", "load", "build_name"]

SOURCE = Path(__file__).parent / "native" / "dropout.cpp"
_lock = threading.Lock()
_loaded: dict[str, ModuleType | None] = {}


def enabled() -> bool:
    """False when the environment sets ``REGULAB_NATIVE=0``."""
    return os.environ.get("REGULAB_NATIVE", "1").strip() != "0"


def _flags() -> tuple[str, list[str]]:
    """(instruction-set tag, compiler flags).

    OpenMP: torch's ``at::parallel_for`` is OpenMP code compiled into the extension (it then
    runs on torch's thread pool, at torch's thread count). AVX2 or AVX-512 only where torch
    itself runs them (its choice also weighs a CPU's clock under 512-bit code), and the tag is
    part of the build's name, so a cache shared by several machines never hands one of them
    code it cannot run. AVX-512 took the kernel on in-cache tensors (a training step's
    activations) 1.2-1.45x faster than AVX2 on an AVX-512 machine, and the same at 2^22.
    """
    cap = torch.backends.cpu.get_cpu_capability()
    base = ["-O3", "-fopenmp"]
    if cap.startswith("AVX512"):  # AVX512 and its variants (AVX512_VNNI, ...)
        return "avx512", base + ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                                 "-mprefer-vector-width=512"]
    if cap.startswith("AVX"):
        return "avx2", base + ["-mavx2", "-mfma"]
    return "generic", base


def build_name() -> str:
    """The extension's name: one per source text, torch version and compiler flags."""
    tag, flags = _flags()
    digest = hashlib.sha256(SOURCE.read_bytes() + f"{torch.__version__} {flags}".encode()).hexdigest()[:12]
    return f"regulab_native_{tag}_{digest}"


def load() -> ModuleType | None:
    """The built op's module, building it on the first call; None when disabled or unbuildable
    (with one warning naming why)."""
    if "module" in _loaded:
        return _loaded["module"]
    with _lock:
        if "module" not in _loaded:
            _loaded["module"] = _build() if enabled() else None
    return _loaded["module"]


def _is_built(name: str) -> bool:
    """Whether torch's extension cache already holds a build of ``name`` (then loading takes ms)."""
    from torch.utils import cpp_extension

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    return any(root.glob(f"{name}/{name}*.so")) or any(root.glob(f"*/{name}/{name}*.so"))


@contextlib.contextmanager
def _ninja_on_path():
    """The ``ninja`` package's binary first on PATH while torch builds (torch runs ``ninja`` from
    PATH, which holds a virtual environment's ``bin`` only when it is activated)."""
    try:
        import ninja
    except ImportError:  # then a system ninja, if any
        yield
        return
    before = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join(p for p in (ninja.BIN_DIR, before) if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


@contextlib.contextmanager
def _sole_builder(name: str):
    """One regulab process at a time builds or loads ``name``, under a ``flock`` that the system
    releases when its holder dies. The holder deletes the lock file torch's builder leaves
    behind when it is killed mid-build (a Ctrl-C during the first call's build): torch would
    wait on it forever. No live builder can own that file then, as it would hold the ``flock``."""
    from torch.utils import cpp_extension

    try:
        folder = cpp_extension._get_build_directory(name, verbose=False)  # what load() uses; creates it
    except Exception:  # a torch laid out otherwise: its own locking only
        yield
        return
    with folder_lock(folder, "regulab-build.lock") as held:
        if held:
            Path(folder, "lock").unlink(missing_ok=True)
        yield


def _build() -> ModuleType | None:
    try:
        from torch.utils import cpp_extension

        _, flags = _flags()
        name = build_name()
        if not _is_built(name):  # say why the first call takes a while
            print("regulab: building the C++ dropout op for this machine (once, about a minute; "
                  "REGULAB_NATIVE=0 skips it)", file=sys.stderr, flush=True)
        with _ninja_on_path(), _sole_builder(name):
            return cpp_extension.load(name, [str(SOURCE)], extra_cflags=flags,
                                      extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as e:  # no compiler, no headers, a failed build: the numba path serves
        warnings.warn(f"regulab: the C++ dropout op could not be built ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1] if str(e).strip() else 'no message'}); dropout "
                      f"runs on the numba kernel (same values). Set REGULAB_NATIVE=0 to skip the build.",
                      RuntimeWarning, stacklevel=3)
        return None

