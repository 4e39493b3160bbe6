"""Fuzzing the dropout kernels against their torch references (hypothesis, derandomized).

Random shapes (0-4 dims, empty ones included), strides (transposes, slices with steps,
expanded/broadcast views, non-contiguous outputs of ``permute``), dtypes (float32/float64
take the numba kernels, float16/bfloat16 the reference path) and rates ``p`` (the special
cases 0 and 1, values a hair away from them, and values on and off the 2^-32 threshold grid).
For every example the op must equal its reference bit for bit with the seed it drew, and
must keep the exact invariants (every output is 0 or x/(1−p)).

Sizes are modest (``max_examples`` below) and ``derandomize=True`` so CI is deterministic.
Run with ``--hypothesis-show-statistics`` to see how many examples each test ran.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import regulab
from regulab.ops import _rng
from regulab.ops.alpha import alpha_affine_ref
from regulab.ops.dropout import masked_scale_ref
from regulab.ops.gaussian import gaussian_apply_ref
from regulab.ops.shared import keep_bits

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# p: edges, near-edges, the threshold grid and arbitrary values in [0, 1]
probs = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, 2.0**-32, 1 - 2.0**-32, 1e-12, 1 - 1e-12, 0.999999, 1e-6]),
    st.floats(0.0, 1.0, allow_nan=False),
    st.integers(0, 2**32).map(lambda k: k / 2.0**32),
)


@st.composite
def tensors(draw, dtypes=FLOATS):
    """A tensor with a random shape, dtype and memory layout (view of a larger buffer)."""
    dtype = draw(st.sampled_from(dtypes))
    ndim = draw(st.integers(0, 4))
    shape = draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    layout = draw(st.sampled_from(["contiguous", "transpose", "step", "expand", "permute", "offset"]))
    if layout == "step" and ndim:
        big = [s * 2 + 1 for s in shape]
        x = torch.randn(big, generator=g, dtype=torch.float64).to(dtype)
        x = x[tuple(slice(1, None, 2) for _ in shape)]
    elif layout == "expand" and ndim:
        base = [1 if draw(st.booleans()) else s for s in shape]
        x = torch.randn(base, generator=g, dtype=torch.float64).to(dtype).expand(*shape)
    elif layout == "offset":
        n = math.prod(shape)
        x = torch.randn(n + 3, generator=g, dtype=torch.float64).to(dtype)[3:].view(shape)
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        if layout == "transpose" and ndim >= 2:
            x = x.transpose(0, -1)
        elif layout == "permute" and ndim >= 3:
            x = x.permute(*reversed(range(ndim)))
    return x


def _seed_for(torch_seed: int) -> int:
    """The seed ``dropout`` draws after ``torch.manual_seed(torch_seed)`` (one draw per call)."""
    torch.manual_seed(torch_seed)
    return int(_rng.draw_seed())


@FUZZ
@given(x=tensors(), p=probs, torch_seed=st.integers(0, 2**31 - 1))
def test_dropout_equals_reference(x, p, torch_seed):
    before = x.clone()
    torch.manual_seed(torch_seed)
    y = regulab.ops.dropout(x, p)
    assert torch.equal(x, before)  # input untouched
    assert y.shape == x.shape and y.dtype == x.dtype
    if x.numel() == 0 or p == 0.0:
        assert y is x
        return
    if p == 1.0:
        assert torch.equal(y, x * 0)
        return
    ref = masked_scale_ref(x, _seed_for(torch_seed), p)
    assert torch.equal(y, ref)
    # exact invariant: every element is 0 or x times the op's scale
    scale = torch.ones((), dtype=x.dtype).div_(1 - p)
    kept = y != 0
    assert torch.equal(y[kept], (x * scale)[kept])


@FUZZ
@given(x=tensors(dtypes=[torch.float32, torch.float64]), p=probs, torch_seed=st.integers(0, 2**31 - 1))
@example(x=torch.arange(12.0).view(3, 4), p=0.5, torch_seed=1)
def test_inplace_dropout_equals_reference(x, p, torch_seed):
    # in-place needs its own storage (expanded views cannot be written): a strided view
    # (every other element of every dim) into a larger buffer that must stay untouched around it
    buf = torch.full([2 * s + 1 for s in x.shape], 7.0, dtype=x.dtype)
    view = buf[tuple(slice(1, None, 2) for _ in x.shape)]
    view.copy_(x)
    x, orig, outside = view, x.clone(), buf.clone()
    torch.manual_seed(torch_seed)
    y = regulab.ops.dropout(x, p, inplace=True)
    assert y is x
    mask = torch.ones_like(buf, dtype=torch.bool)
    mask[tuple(slice(1, None, 2) for _ in x.shape)] = False
    assert torch.equal(buf[mask], outside[mask])
    if orig.numel() == 0 or p == 0.0:
        assert torch.equal(x, orig)
    elif p == 1.0:
        assert torch.equal(x, orig * 0)
    else:
        assert torch.equal(x, masked_scale_ref(orig, _seed_for(torch_seed), p))


@FUZZ
@given(m=st.integers(1, 5), rest=st.lists(st.integers(1, 7), min_size=0, max_size=3),
       ps=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]), torch_seed=st.integers(0, 2**31))
def test_per_member_rates_equal_reference(m, rest, ps, dtype, torch_seed):
    x = torch.randn(m, *rest, dtype=dtype)
    p = torch.tensor(ps.draw(st.lists(probs, min_size=m, max_size=m)), dtype=torch.float64)
    torch.manual_seed(torch_seed)
    y = regulab.ops.dropout(x, p)
    assert torch.equal(y, masked_scale_ref(x, _seed_for(torch_seed), 0.0, p))


@FUZZ
@given(x=tensors(), p=probs.filter(lambda p: p < 1.0), torch_seed=st.integers(0, 2**31 - 1))
def test_alpha_dropout_equals_reference(x, p, torch_seed):
    torch.manual_seed(torch_seed)
    y = regulab.ops.alpha_dropout(x, p)
    if x.numel() == 0 or p == 0.0:
        assert y is x
        return
    assert torch.equal(y, alpha_affine_ref(x, _seed_for(torch_seed), p))


@FUZZ
@given(x=tensors(), p=st.floats(0.0, 0.99, allow_nan=False), sigma=st.floats(0.0, 10.0, allow_nan=False),
       torch_seed=st.integers(0, 2**31 - 1))
def test_gaussian_ops_equal_reference(x, p, sigma, torch_seed):
    torch.manual_seed(torch_seed)
    y = regulab.ops.gaussian_dropout(x, p)
    if x.numel() == 0 or p == 0.0:
        assert y is x
    else:
        assert torch.equal(y, gaussian_apply_ref(x, _seed_for(torch_seed), math.sqrt(p / (1 - p)), False))
    torch.manual_seed(torch_seed)
    z = regulab.ops.gaussian_noise(x, sigma)
    if x.numel() == 0 or sigma == 0.0:
        assert z is x
    else:
        assert torch.equal(z, gaussian_apply_ref(x, _seed_for(torch_seed), sigma, True))


@FUZZ
@given(seed=st.integers(-(2**63), 2**63 - 1), p=probs, n=st.integers(0, 70_000))
def test_shared_mask_bits_equal_reference(seed, p, n):
    """The numba keep-mask of the shared-mask family equals the torch bits for any seed and size."""
    t = min(_rng.keep_threshold(p), 2**32 - 1)
    assert torch.equal(keep_bits(seed, p, n, "cpu"), _rng.bits_ref(seed, 0, n) >= t)


@pytest.mark.parametrize("bad", [float("nan"), -1e-300, 1 + 1e-15, float("inf"), "0.5", None, True])
def test_bad_p_never_reaches_a_kernel(bad):
    with pytest.raises(ValueError, match=r"^dropout: p must be a number in \[0, 1\], got "):
        regulab.ops.dropout(torch.ones(3), bad)
