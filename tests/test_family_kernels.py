"""The family's numba kernels against their torch references, bit for bit (same bits, same float32 steps)."""
import math

import numpy as np
import pytest
import torch

from regulab.ops import _kernels_family as K
from regulab.ops._kernels import BLOCK, PARALLEL_MIN, masked_scale
from regulab.ops._rng import bits_ref, keep_threshold, mix_seed
from regulab.ops.alpha import alpha_affine_op, alpha_affine_ref, alpha_constants
from regulab.ops.concrete import uniform_like, uniform_ref
from regulab.ops.gaussian import gaussian_apply, gaussian_apply_ref, normal_ref

SIZES = [1, 1000, BLOCK + 3, PARALLEL_MIN + 5]  # short chunk, serial, parallel


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("linear", [False, True])
def test_alpha_kernel_equals_reference(n, dtype, linear):
    x = torch.randn(n, dtype=dtype)
    for p in (0.1, 0.5):
        assert torch.equal(alpha_affine_op(x, torch.tensor(2**40 + 3), p, linear), alpha_affine_ref(x, 2**40 + 3, p, linear))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_in_place_equal_out_of_place(n, dtype):
    """``out`` given as ``x`` itself (the in-place ops): the same values as a separate output."""
    x = torch.from_numpy(np.random.default_rng(n).standard_normal(n)).to(dtype)
    a, bk, bd = alpha_constants(0.3, dtype, False)
    want, y = torch.empty_like(x), x.clone()
    K.alpha_affine(x, want, 7, 9, keep_threshold(0.3), a, bk, bd)
    K.alpha_affine(y, y, 7, 9, keep_threshold(0.3), a, bk, bd)
    assert torch.equal(y, want)
    sigma = np.array([0.5], np.float32)
    for additive in (False, True):
        want, y = torch.empty_like(x), x.clone()
        K.normal_apply(x, want, 7, 9, sigma, additive)
        K.normal_apply(y, y, 7, 9, sigma, additive)
        assert torch.equal(y, want)


@pytest.mark.parametrize("bad", ["strided", "dtype", "size", "half"])
def test_kernel_entry_points_refuse_operands_their_addresses_cannot_serve(bad):
    """The entry points hand numba raw addresses: anything but two contiguous CPU float32/float64
    tensors of one dtype and size is refused before a kernel runs (no stray read or write)."""
    x, out = torch.randn(64, 8), torch.empty(64, 8)
    if bad == "strided":
        x = x.t()
    elif bad == "dtype":
        out = out.double()
    elif bad == "size":
        out = torch.empty(63, 8)
    else:
        x, out = x.half(), out.half()
    calls = [lambda: K.alpha_affine(x, out, 1, 2, 3, 1.0, 0.0, 0.0),
             lambda: K.normal_apply(x, out, 1, 2, np.ones(1, np.float32), False),
             lambda: K.scale_rows(x, out, 1, 2, 3, 1.0, 8),
             lambda: masked_scale(x, out, 1, np.zeros(1, np.uint32), np.ones(1, np.float32))]
    for call in calls:
        with pytest.raises(ValueError, match="kernel operands"):
            call()


@pytest.mark.parametrize("n", [1000, PARALLEL_MIN + 5])
def test_masked_scale_new_equals_the_general_entry_and_refuses_what_it_cannot_serve(n):
    """The training step's one-frame entry: the same bits as masked_scale into a given output;
    a strided or half input, or a scale of another dtype (its addresses would be misread), is refused."""
    from regulab.ops._kernels import masked_scale_new

    x, thresh, scale = torch.randn(n), np.array([keep_threshold(0.3)], np.uint32), np.array([1 / 0.7], np.float32)
    want = torch.empty_like(x)
    masked_scale(x, want, -77, thresh, scale)
    assert torch.equal(masked_scale_new(x, -77, thresh, scale), want)
    for bad in (lambda: masked_scale_new(torch.randn(40, 30).t(), 1, thresh, scale),
                lambda: masked_scale_new(x.half(), 1, thresh, scale),
                lambda: masked_scale_new(x, 1, thresh, scale.astype(np.float64))):
        with pytest.raises(ValueError, match="kernel operands"):
            bad()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("additive", [False, True])
def test_gaussian_kernel_equals_reference(n, dtype, additive):
    x = torch.randn(n, dtype=dtype)
    assert torch.equal(gaussian_apply(x, torch.tensor(-5), 0.7, additive), gaussian_apply_ref(x, -5, 0.7, additive))


def test_gaussian_kernel_on_non_contiguous_input():
    x = torch.randn(40, 30).t()
    assert torch.equal(gaussian_apply(x, torch.tensor(9), 1.0, False), gaussian_apply_ref(x, 9, 1.0, False))


@pytest.mark.parametrize("start", [2**32 - BLOCK, 2**32, 5 * 2**32 + 7 * BLOCK])
def test_kernels_past_32_bit_counters(start):
    # the chunk functions take the global counter of their first element: reach 2^32 without 16 GB tensors
    seed, k = 77, mix_seed(77)
    k0, k1 = np.uint32(k[0]), np.uint32(k[1])
    z = np.zeros(BLOCK, np.float32)
    out = np.empty_like(z)
    K._normal_chunk(z, out, start, k0, k1, np.ones(1, np.float32), BLOCK, 0, True)  # one σ, one row
    assert torch.equal(torch.from_numpy(out), normal_ref(seed, start, BLOCK))
    x = torch.randn(BLOCK)
    t = keep_threshold(0.3)
    a, bk, bd = alpha_constants(0.3, torch.float32)
    K._alpha_block(x.numpy(), out, start, k0, k1, np.uint32(t), np.float32(a), np.float32(bk), np.float32(bd))
    keep = bits_ref(seed, start, BLOCK) >= t
    want = x * torch.where(keep, a, 0.0) + torch.where(keep, bk, bd)
    assert torch.equal(torch.from_numpy(out), want)


@pytest.mark.parametrize("n", [5, PARALLEL_MIN + 1])
def test_keep_mask_and_uniform_equal_reference(n):
    k0, k1 = mix_seed(123)
    t = keep_threshold(0.25)
    assert torch.equal(torch.from_numpy(K.keep_mask(n, k0, k1, t)), bits_ref(123, 0, n) >= t)
    u = uniform_like(torch.empty(n), torch.tensor(123))
    assert torch.equal(u, uniform_ref(123, n))
    assert float(u.min()) > 0 and float(u.max()) < 1


def test_box_muller_accuracy_against_float64():
    # the float32 log/sin/cos polynomials: |z - z_float64| < 2e-6 (stated tolerance)
    seed, n = 5, 2 * BLOCK
    b = bits_ref(seed, 0, n).view(2, 2, K.HALF).double()  # (chunk, half, j)
    u1, u2 = torch.floor(b[:, 0] / 256) / 2**24, torch.floor(b[:, 1] / 256) / 2**24
    r, th = torch.sqrt(-2 * torch.log1p(-u1)), 2 * math.pi * (u2 - 0.125)
    exact = torch.stack([r * torch.cos(th), r * torch.sin(th)], dim=1).reshape(-1)
    assert float((normal_ref(seed, 0, n).double() - exact).abs().max()) < 2e-6


def test_fma_reference_rounds_once():
    """The reference's emulation of the kernel's float32 fma (a·b + c rounded once) against exact
    rational arithmetic, on random triples and on a case where float64 rounding then float32
    rounding (double rounding) would be wrong."""
    from fractions import Fraction

    from regulab.ops.gaussian import _fma_ref

    def exact_f32(a, b, c):  # round-to-nearest-even of the exact a·b + c, by comparing neighbours
        e = Fraction(a) * Fraction(b) + Fraction(c)
        f = np.float32(float(e))
        cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
        return float(min(cands, key=lambda v: (abs(Fraction(float(v)) - e), int(np.float32(v).view(np.int32)) & 1)))

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(3000, generator=g), torch.randn(3000, generator=g)
    c = torch.randn(3000, generator=g) * torch.logspace(-8, 2, 3000)
    got = _fma_ref(a, b, c).tolist()
    assert got == [exact_f32(*t) for t in zip(a.tolist(), b.tolist(), c.tolist())]
    # a·b = 2^-24 − 2^-70 and c = 1 + 2^-23: exactly just below a float32 midpoint; float64 rounds it
    # onto the midpoint and float32 then ties to even, one ulp too high
    a, b, c = 2.0**-12 * (1 + 2.0**-23), 2.0**-12 * (1 - 2.0**-23), 1 + 2.0**-23
    naive = torch.tensor(a, dtype=torch.float64) * b + c
    assert float(naive.float()) == 1 + 2.0**-22 != exact_f32(a, b, c) == 1 + 2.0**-23
    assert float(_fma_ref(torch.tensor(a), torch.tensor(b), torch.tensor(c))) == 1 + 2.0**-23


def test_normals_statistics():
    z = gaussian_apply(torch.zeros(1 << 20), torch.tensor(11), 1.0, True).double()
    # seeded; standard errors: mean 1e-3, var 1.4e-3, kurtosis ~5e-3
    assert abs(float(z.mean())) < 5e-3
    assert abs(float(z.var()) - 1) < 7e-3
    assert abs(float((z**4).mean()) - 3) < 0.05
    assert float(z.abs().max()) <= math.sqrt(-2 * math.log(2**-24)) + 1e-5  # 24-bit uniforms: |z| <= 5.77
    c, s = z.view(-1, 2, K.HALF)[:, 0], z.view(-1, 2, K.HALF)[:, 1]
    assert abs(float(torch.corrcoef(torch.stack([c.reshape(-1), s.reshape(-1)]))[0, 1])) < 5e-3  # pairs uncorrelated


@pytest.mark.parametrize("fn", [
    lambda t: __import__("regulab").ops.dropout2d(t, 0.4),
    lambda t: __import__("regulab").ops.drop_path(t, 0.4, True),
    lambda t: __import__("regulab").ops.feature_alpha_dropout(t, 0.4),
    lambda t: __import__("regulab").ops.alpha_dropout(t, 0.4),
    lambda t: __import__("regulab").ops.gaussian_dropout(t, 0.4),
    lambda t: __import__("regulab").ops.gaussian_noise(t, 0.4),
])
def test_eager_fast_path_equals_the_custom_op(fn):
    # without autograd the op body runs directly (no dispatch); with autograd through the custom op
    x = torch.randn(8, 6, 5, 5)
    torch.manual_seed(1)
    plain = fn(x)
    torch.manual_seed(1)
    graph = fn(x.clone().requires_grad_())
    assert torch.equal(plain, graph.detach()) and graph.grad_fn is not None


@pytest.mark.parametrize("shape", [(3, 1000), (5, BLOCK + 7), (4, PARALLEL_MIN // 4 + 3), (2, 3 * BLOCK)])
@pytest.mark.parametrize("additive", [False, True])
def test_gaussian_kernel_per_member_sigma_equals_reference(shape, additive):
    # one σ per member row: rows shorter than a tile, rows crossing chunks, serial and parallel sizes
    x = torch.randn(shape)
    sigma = torch.linspace(0.0, 1.5, shape[0])
    got = gaussian_apply(x, torch.tensor(21), 0.0, additive, sigma)
    assert torch.equal(got, gaussian_apply_ref(x, 21, sigma, additive))
    # a member with σ = 0 is left as it is; the others match the scalar op with their σ
    assert torch.equal(got[0], x[0])
    assert torch.equal(got[-1], gaussian_apply_ref(x, 21, float(sigma[-1]), additive)[-1])


def test_gaussian_kernel_is_deterministic_and_serial_equals_parallel():
    # same seed → same bits; a parallel-size call equals its serial chunk-by-chunk pieces
    x = torch.randn(PARALLEL_MIN + 3 * BLOCK + 5)
    a = gaussian_apply(x, torch.tensor(3), 0.5, False)
    assert torch.equal(a, gaussian_apply(x, torch.tensor(3), 0.5, False))
    k0, k1 = (np.uint32(v) for v in mix_seed(3))
    out = torch.empty_like(x)
    K._KERNELS["normal"][1](x.data_ptr(), out.data_ptr(), x.numel(), np.float32(0), k0, k1, np.full(1, 0.5, np.float32),
                            False)
    assert torch.equal(out, a)


def test_normals_ks_and_tails():
    from scipy import stats
    z = gaussian_apply(torch.zeros(1 << 22), torch.tensor(2024), 1.0, True).double()
    # KS against N(0, 1) on 10^6 draws (seeded; p-value of a correct generator is uniform)
    assert stats.kstest(z[:10**6].numpy(), "norm").pvalue > 1e-3
    # tails: counts of |z| > t against n·P(|Z| > t) within 5 Poisson standard deviations (+1)
    for t in (2.0, 3.0, 4.0, 4.5, 5.0):
        want = z.numel() * math.erfc(t / math.sqrt(2))
        got = int((z.abs() > t).sum())
        assert abs(got - want) < 5 * math.sqrt(want) + 1, (t, got, want)


def test_radius_tail_accuracy():
    # the smallest v = 1 − u on the 2^-24 grid decide the tails (|z| up to 5.77): relative error < 1e-6
    from regulab.ops.gaussian import _radius_ref
    k = torch.arange(1, 1 << 16, dtype=torch.int64)
    b = ((1 << 24) - k) << 8  # u = 1 − k·2^-24, so v = k·2^-24
    exact = torch.sqrt(-2 * torch.log(k.double() / 2**24))
    assert float(((_radius_ref(b).double() - exact) / exact).abs().max()) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,inner", [(1, 37), (5, 1000), (300, 64), (3, BLOCK + 9)])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 3])  # element offsets: the streamed body starts mid-row
def test_row_kernel_equals_mask_then_multiply(dtype, rows, inner, stream, offset):
    """scale_rows (plain and streaming stores, serial and parallel) == keep_value mask times x, bit for bit."""
    from regulab.ops._kernels_family import keep_value
    npd = np.float32 if dtype == torch.float32 else np.float64
    k0, k1 = mix_seed(4242)
    t, s = keep_threshold(0.4), npd(1) / npd(0.6)
    base = torch.randn(rows * inner + offset, dtype=dtype)
    base[offset] = float("nan")
    x = base[offset:]
    mask = torch.from_numpy(keep_value(rows, k0, k1, t, s))
    want = (x.view(rows, inner) * mask.view(rows, 1)).view(-1)
    for kernel in K._KERNELS["rows"]:
        out = torch.empty(rows * inner + offset, dtype=dtype)[offset:]
        kernel(x.data_ptr(), out.data_ptr(), x.numel(), np.uint32(k0), np.uint32(k1), np.uint32(t), s, np.int64(inner),
               stream)
        torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)
    y = x.clone()  # in place
    K._KERNELS["rows"][0](y.data_ptr(), y.data_ptr(), y.numel(), np.uint32(k0), np.uint32(k1), np.uint32(t), s,
                          np.int64(inner), stream)
    torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)
    out = torch.empty(rows * inner + offset, dtype=dtype)[offset:]  # the entry point, on the tensors' addresses
    K.scale_rows(x, out, k0, k1, t, s, inner)
    torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)


def test_channel_dropout_takes_the_row_kernel_and_matches_the_mask_path():
    """dropout2d / drop_path on contiguous inputs (row kernel) give torch.mul's mask-path output."""
    from regulab.ops.shared import _apply, small_factors
    for shape, cells in [((4, 6, 5, 7), [4, 6, 1, 1]), ((8, 3, 40), [8, 1, 1])]:
        x = torch.randn(shape)
        a, _ = small_factors(7, 0.3, cells, torch.float32, "cpu", "scale")
        torch.testing.assert_close(_apply(x, None, 7, 0.3, cells, "scale"), x * a, rtol=0, atol=0)


def test_add_member_noise_in_place_draws_what_gaussian_noise_draws():
    from regulab.ops.gaussian import add_member_noise_, gaussian_noise
    x = torch.randn(3, 50, 40)
    sigma = np.array([0.3, 0.0, 1.5], np.float32)
    want = gaussian_noise(x, torch.from_numpy(sigma), generator=torch.Generator().manual_seed(5))
    y = x.clone()
    assert add_member_noise_(y, sigma, generator=torch.Generator().manual_seed(5)) is y
    torch.testing.assert_close(y, want, rtol=0, atol=0)


def test_add_member_noise_off_the_kernel_path_draws_the_same():
    from regulab.ops.gaussian import add_member_noise_, gaussian_noise
    base = torch.randn(3, 40, 50)
    sigma = np.array([0.3, 0.0, 1.5], np.float32)
    for x in (base.transpose(1, 2), base.to(torch.float16)):  # non-contiguous; a dtype numba does not take
        want = gaussian_noise(x, torch.from_numpy(sigma), generator=torch.Generator().manual_seed(5))
        y = x.clone()
        assert add_member_noise_(y, sigma, generator=torch.Generator().manual_seed(5)) is y
        torch.testing.assert_close(y, want, rtol=0, atol=0)
