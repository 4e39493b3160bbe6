"""One-pass weight regularizers of the stacked trainer, on the flat parameter buffer.

The stacked trainer applies L2 (value and gradient) and max-norm to a member range of
every weight block after each step. As torch ops that is ~15 small ops per block, whose
dispatch costs far more than their arithmetic at a study's sizes; here each is one numba
call over the flat buffers. Semantics are those of :func:`regulab.regularizers.l2_penalty`
(value ``l2·Σw²``, gradient ``2·l2·w``) and :func:`regulab.regularizers.max_norm_` (a unit's
incoming weights scaled by ``c/(‖w‖ + 1e-7)`` when ``‖w‖ > c``); the trainer tests compare
the two paths (``tests/test_study_trainers.py``).

Layout: weight block ``b`` of member ``m`` is ``flat[offs[b] + m·units[b]·fan[b] :][:units[b]·fan[b]]``,
row-major ``(units[b], fan[b])`` (a unit's incoming weights are one row).
"""
from __future__ import annotations

import numpy as np

from .._numba_cache import cached_njit
from ..regularizers.constraints import EPS

__all__ = ["l2_value_and_grad", "max_norm_rows"]


# The sums of squares (float64 accumulators) may be reassociated, and the loops run over
# slices: both are needed for LLVM to vectorise them (~6x faster than the scalar loops).
@cached_njit(fastmath={"reassoc"})
def _l2(flat, grad, offs, units, fan, lo, l2x2, l2, out):
    for k in range(l2.size):
        m = lo + k
        acc = 0.0
        c = l2x2[k]
        for b in range(offs.size):
            n = units[b] * fan[b]
            w, g = flat[offs[b] + m * n:][:n], grad[offs[b] + m * n:][:n]
            for j in range(n):
                x = w[j]
                acc += x * x
                g[j] += x * c
        out[k] = np.float32(acc) * l2[k]


@cached_njit(fastmath={"reassoc"})
def _max_norm(flat, offs, units, fan, lo, c, eps):
    for k in range(c.size):
        m = lo + k
        for b in range(offs.size):
            n = fan[b]
            base = offs[b] + m * units[b] * n
            for u in range(units[b]):
                w = flat[base + u * n:][:n]
                acc = 0.0
                for j in range(n):
                    acc += w[j] * w[j]
                norm = np.float32(np.sqrt(acc))
                if norm > c[k]:
                    f = c[k] / (norm + eps)
                    for j in range(n):
                        w[j] *= f


def l2_value_and_grad(flat: np.ndarray, grad: np.ndarray, blocks, lo: int, l2: np.ndarray) -> np.ndarray:
    """Add ``2·l2·w`` to ``grad`` for members ``lo : lo + len(l2)`` of the weight ``blocks`` (offsets,
    units, fan-ins); return their penalties ``l2·Σw²`` (float32, one per member)."""
    out = np.empty(l2.size, np.float32)
    _l2(flat, grad, *blocks, np.int64(lo), (l2 * np.float32(2)).astype(np.float32), l2, out)
    return out


def max_norm_rows(flat: np.ndarray, blocks, lo: int, c: np.ndarray) -> None:
    """Max-norm, in place, on the units of members ``lo : lo + len(c)`` of the weight ``blocks``."""
    _max_norm(flat, *blocks, np.int64(lo), c, np.float32(EPS))
