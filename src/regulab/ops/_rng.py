"""Counter-based random bits: the value for element ``i`` is a hash of (seed, i).

No generator state advances per element, so a mask never needs to be stored:
backward (or any later consumer) regenerates it from the 64-bit seed.

The hash works on 32-bit words so that the numba kernels vectorise it:

* the 64-bit seed is mixed once per call (splitmix64) into two keys ``k0, k1``;
* counters come in runs of ``RUN = 64``: element ``i`` (a 64-bit counter) is
  lane ``l = i mod 64`` of run ``r = i >> 6``;
* each run gets a key, a two-round hash of its index:
  ``key(r) = mix32(mix32(lo(r) ^ k0) + (k1 ^ hi(r)·GOLDEN))`` with
  ``lo(r) = r mod 2^32``, ``hi(r) = r >> 32``;
* ``bits(i) = mix32(key(r) + l·GOLDEN)``: one more round per element, on the
  run's key stepped by the golden-ratio constant.

``mix32`` is the bijective "lowbias32" integer hash (two multiply-xorshift
steps). Runs cost the kernels one round per element instead of two: a run's
key is computed once (scalar), and its 64 words are one vectorised round on
``key + l·GOLDEN``. Neighbouring runs have unrelated keys (the two-round hash
of consecutive indices), so words of different runs, seeds and streams are as
independent as before; within a run the inputs of one round differ by
multiples of GOLDEN, which ``mix32`` spreads over all output bits (tests check
lags inside and across runs).

This module is the *reference*: plain torch int64 arithmetic (exact, no
overflow: 32x32-bit products are split into 16-bit halves), usable on any
device. ``_kernels.py`` computes the same bits in numba; tests check them
bit for bit.
"""
from __future__ import annotations

import threading

import torch

__all__ = ["MASK32", "RUN", "RUN_SHIFT", "mix_seed", "bits_ref", "keep_threshold", "draw_seed", "draw_seed_int"]

MASK32 = 0xFFFFFFFF
M1 = 0x7FEB352D
M2 = 0x846CA68B
GOLDEN = 0x9E3779B9
RUN_SHIFT = 6
RUN = 1 << RUN_SHIFT  # counters per run


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def mix_seed(seed: int, stream: int = 0) -> tuple[int, int]:
    """Turn a 64-bit seed (and an optional stream id) into the two 32-bit keys.

    ``stream`` lets one seed drive several independent draws (e.g. the two
    uniforms of a Box-Muller pair) without correlation.

    Examples:
        >>> mix_seed(0) != mix_seed(1)
        True
    """
    z = _splitmix64((seed & 0xFFFFFFFFFFFFFFFF) ^ _splitmix64(stream))
    return z & MASK32, z >> 32


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """(a * c) mod 2^32 for int64 ``a`` in [0, 2^32) without signed overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (a * lo + (((a * hi) & 0xFFFF) << 16)) & MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, M1)
    x = x ^ (x >> 15)
    x = _mul32(x, M2)
    return x ^ (x >> 16)


def bits_ref(seed: int, start: int, count: int, *, stream: int = 0, device=None) -> torch.Tensor:
    """Random 32-bit words for counters ``start .. start+count-1`` as int64 in [0, 2^32).

    Examples:
        >>> b = bits_ref(42, 0, 4)
        >>> b.dtype, b.shape, bool((b >= 0).all() and (b < 2**32).all())
        (torch.int64, torch.Size([4]), True)
        >>> torch.equal(bits_ref(42, 2, 2), b[2:])
        True
    """
    k0, k1 = mix_seed(seed, stream)
    i = torch.arange(start, start + count, dtype=torch.int64, device=device)
    r = i >> RUN_SHIFT
    key = _mix32((_mix32((r & MASK32) ^ k0) + (_mul32(r >> 32, GOLDEN) ^ k1)) & MASK32)
    return _mix32((key + _mul32(i & (RUN - 1), GOLDEN)) & MASK32)


def keep_threshold(p: float) -> int:
    """An element is dropped when its 32-bit word is ``< keep_threshold(p)``.

    P(drop) = round(p·2^32)/2^32, exact to 2^-33.

    Examples:
        >>> keep_threshold(0.5)
        2147483648
        >>> keep_threshold(0.0), keep_threshold(1.0)
        (0, 4294967296)
    """
    return min(int(round(float(p) * 2.0**32)), 1 << 32)


_LOW, _HIGH = -(2**63), 2**63 - 1  # the seed range (all int64 but the largest)


def draw_seed(generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a 64-bit seed (an int64 0-dim tensor) from ``generator`` or torch's default CPU generator.

    One draw per call advances the generator, so consecutive calls, layers and
    steps get independent masks, and ``torch.manual_seed`` makes them reproducible.
    It is a tensor op (not ``.item()``) so ``torch.compile`` traces it.
    """
    return torch.randint(_LOW, _HIGH, (), dtype=torch.int64, generator=generator)


class _SeedSlot(threading.local):
    """A thread's one-element int64 tensor for :func:`draw_seed_int`, and a memoryview of its memory."""

    def __init__(self) -> None:
        with torch.inference_mode(False):  # a normal tensor even if first drawn under inference_mode
            t = torch.empty(1, dtype=torch.int64, device="cpu")  # whatever the default device
        self.pair = t, memoryview(t.numpy())  # indexing a memoryview gives a Python int directly


_slot = _SeedSlot()


def draw_seed_int(generator: torch.Generator | None = None) -> int:
    """The value :func:`draw_seed` would return, as a Python int (eager mode only).

    The same single draw (``randint`` is ``empty().random_(low, high)``), into a per-thread
    buffer read through a memoryview: no new tensor, no ``.item()`` dispatch and no numpy
    scalar, which a training step would pay for every dropout layer.

    Examples:
        >>> _ = torch.manual_seed(3); a = int(draw_seed())
        >>> _ = torch.manual_seed(3); a == draw_seed_int()
        True
    """
    t, view = _slot.pair
    t.random_(_LOW, _HIGH, generator=generator)
    return view[0]
