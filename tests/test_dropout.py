"""Exact invariants, statistics and integration of regulab.ops.dropout / regulab.nn.Dropout."""
import contextlib
import importlib
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

import regulab
from regulab.ops import _kernels, _rng
from regulab.ops.dropout import masked_scale_ref

FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _scale(p, dtype):
    return torch.ones((), dtype=dtype).div_(1 - p)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_every_element_is_zero_or_scaled(dtype, p, eager_path):
    x = torch.randn(1000, 7).to(dtype)
    y = regulab.ops.dropout(x, p)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    assert torch.equal(y[kept], x[kept] * _scale(p, dtype))
    assert torch.allclose(y[kept].double(), x[kept].double() / (1 - p), rtol=1e-2 if dtype in FLOATS[2:] else 1e-6)
    assert 0 < kept.sum() < x.numel()


def test_kept_values_match_torch_bit_for_bit(eager_path):
    x = torch.randn(10000)
    y, t = regulab.ops.dropout(x, 0.3), F.dropout(x, 0.3)
    both = (y != 0) & (t != 0)
    assert both.any() and torch.equal(y[both], t[both])


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_eval_returns_the_input_object(p):
    x = torch.randn(5)
    assert regulab.ops.dropout(x, p, training=False) is x
    m = regulab.nn.Dropout(p).eval()
    assert m(x) is x


def test_p0_returns_input_object_and_empty_is_unchanged():
    x = torch.randn(4, 4)
    assert regulab.ops.dropout(x, 0.0) is x
    e = torch.empty(0, 3)
    assert regulab.ops.dropout(e, 0.5) is e


def test_p1_gives_x_times_zero_like_torch():
    x = torch.tensor([1.0, -2.0, float("nan"), float("inf")])
    y, t = regulab.ops.dropout(x, 1.0), F.dropout(x, 1.0)
    assert torch.equal(torch.signbit(y), torch.signbit(t))
    assert torch.equal(y.isnan(), t.isnan()) and (y[:2] == 0).all()
    xi = x.clone()
    assert regulab.ops.dropout(xi, 1.0, inplace=True) is xi and xi[0] == 0


def test_nan_and_inf_propagate_like_torch_when_dropped(eager_path):
    x = torch.full((4096,), float("inf"))
    y = regulab.ops.dropout(x, 0.5)
    assert y.isnan().any() and y.isinf().any()  # dropped inf·0 = nan, kept stays inf


@pytest.mark.parametrize("make", [
    lambda: torch.randn(64, 48).t(),
    lambda: torch.randn(10, 20, 30)[:, ::2, 1:],
    lambda: torch.randn(7).expand(5, 7),
    lambda: torch.randn(()),
])
def test_any_shape_and_stride_matches_reference(make, eager_path):
    x = make()
    torch.manual_seed(3)
    y = regulab.ops.dropout(x, 0.4)
    torch.manual_seed(3)
    seed = int(_rng.draw_seed())
    assert torch.equal(y, masked_scale_ref(x, seed, 0.4))
    assert y.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 31, 2**15 - 1, 2**15 + 17, 3 * 2**15 + 5, _kernels.PARALLEL_MIN + 12345])
def test_kernel_equals_reference_bit_for_bit(dtype, n):
    x = torch.randn(n, dtype=dtype)
    seed = 987654321987
    assert _kernels.supported(x)
    assert torch.equal(regulab.ops.dropout.__globals__["masked_scale"](x, torch.tensor(seed), 0.37),
                       masked_scale_ref(x, seed, 0.37))


def test_seed_keys_in_numba_equal_mix_seed():
    """The dropout entry mixes its int64 seed inside numba: the same keys as the Python mix_seed."""
    from numba import njit

    keys = njit(lambda s: _kernels.seed_keys(s))
    seeds = [0, 1, -1, 42, 2**62 + 12345, -(2**63), 2**63 - 1, *np.random.default_rng(5).integers(-(2**63), 2**63 - 1, 200).tolist()]
    for s in seeds:
        assert tuple(int(v) for v in keys(s)) == _rng.mix_seed(s), s


@pytest.mark.parametrize("n", [_kernels.BLOCK + 11, _kernels.PARALLEL_MIN + 7])  # serial and parallel
@pytest.mark.parametrize("base", [2**31 - 1000, 2**32 - 40000, 2**33 + 7, 2**40 - 5])
def test_64_bit_counters_kernel_equals_reference(base, n):
    """Counters beyond 2^31 and across 2^32 boundaries (what a > 2^31-element tensor uses)."""
    x = torch.randn(n)
    out = torch.empty_like(x)
    seed = 42
    thresh = np.array([_rng.keep_threshold(0.5)], dtype=np.uint32)
    _kernels.masked_scale(x, out, seed, thresh, np.array([2.0], dtype=np.float32), base=base)
    keep = _rng.bits_ref(seed, base, n) >= int(thresh[0])
    assert torch.equal(out, x * torch.where(keep, 2.0, 0.0))


@pytest.mark.parametrize("row", [5000, _kernels.PARALLEL_MIN // 8 + 3])
def test_per_member_rates_kernel_equals_reference(row):
    x = torch.randn(4, 3, row)
    p = torch.tensor([0.0, 0.25, 0.9, 1.0])
    torch.manual_seed(7)
    y = regulab.ops.dropout(x, p)
    torch.manual_seed(7)
    seed = int(_rng.draw_seed())
    assert torch.equal(y, masked_scale_ref(x, seed, 0.0, p))
    assert torch.equal(y[0], x[0]) and (y[3] == 0).all()
    frac = (y[1:3] != 0).float().mean(dim=(1, 2))
    assert abs(frac[0] - 0.75) < 0.02 and abs(frac[1] - 0.1) < 0.02


def test_per_member_rates_bad_shape_or_range():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"dropout: p must be .*per-member"):
        regulab.ops.dropout(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\] for every member"):
        regulab.ops.dropout(x, torch.tensor([0.1, 0.2, 1.5, 0.0]))
    with pytest.raises(ValueError, match=r"for every member"):
        regulab.ops.dropout(x, torch.tensor([0.1, float("nan"), 0.2, 0.3]))


@pytest.mark.parametrize("n", [5000, _kernels.PARALLEL_MIN + 99])  # serial and parallel kernels
@pytest.mark.parametrize("member", [False, True])
def test_inplace_kernel_equals_out_of_place_bit_for_bit(n, member, eager_path):
    x = torch.randn(3, n)
    p = torch.tensor([0.2, 0.5, 0.7]) if member else 0.4
    g = torch.Generator()
    g.manual_seed(21)
    y = regulab.ops.dropout(x, p, generator=g)
    g.manual_seed(21)
    xi = x.clone()
    assert regulab.ops.dropout(xi, p, inplace=True, generator=g) is xi
    assert torch.equal(xi, y)


def test_changing_per_member_rates_changes_the_masks():
    x = torch.ones(2, 20000)
    p = torch.tensor([0.1, 0.1])
    assert (regulab.ops.dropout(x, p) == 0).float().mean() < 0.15
    p[1] = 0.9  # e.g. a rate schedule writing into the same tensor
    y = regulab.ops.dropout(x, p)
    assert (y[1] == 0).float().mean() > 0.85


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan"), "0.5", None, True])
def test_bad_p_is_a_house_style_error(bad):
    with pytest.raises(ValueError, match=r"^dropout: p must be a number in \[0, 1\], got "):
        regulab.ops.dropout(torch.randn(3), bad)
    with pytest.raises(ValueError, match=r"^Dropout: p must be a number in \[0, 1\], got "):
        regulab.nn.Dropout(bad)


def test_reproducible_under_manual_seed_and_generator(eager_path):
    x = torch.randn(1000)
    torch.manual_seed(11)
    a = regulab.ops.dropout(x, 0.5)
    torch.manual_seed(11)
    b = regulab.ops.dropout(x, 0.5)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    state = torch.get_rng_state()
    c, d = regulab.ops.dropout(x, 0.5, generator=g1), regulab.ops.dropout(x, 0.5, generator=g2)
    assert torch.equal(c, d)
    assert torch.equal(state, torch.get_rng_state())  # an explicit generator leaves the global one alone


def test_consecutive_calls_and_layers_get_different_masks(eager_path):
    x = torch.ones(10000)
    m1, m2 = regulab.nn.Dropout(0.5), regulab.nn.Dropout(0.5)
    masks = [m1(x) != 0, m1(x) != 0, m2(x) != 0]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


# --- statistics (seeded; tolerances stated) ---------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_within_5_binomial_sigmas(p, eager_path):
    n = 10**6
    kept = int((regulab.ops.dropout(torch.ones(n), p) != 0).sum())
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 5 * sigma


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_mean_is_preserved(p, eager_path):
    x = torch.full((10**6,), 3.0, dtype=torch.float64)
    y = regulab.ops.dropout(x, p)
    se = 3.0 * math.sqrt(p / (1 - p)) / math.sqrt(x.numel())  # sd of y is 3·sqrt(p/(1-p))
    assert abs(float(y.mean()) - 3.0) < 5 * se


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def test_no_correlation_between_calls_neighbours_and_adjacent_seeds(eager_path):
    n = 10**6
    bound = 5 / math.sqrt(n)  # |r| of independent samples is ~N(0, 1/n)
    x = torch.ones(n)
    a, b = regulab.ops.dropout(x, 0.5) != 0, regulab.ops.dropout(x, 0.5) != 0
    assert abs(_corr(a, b)) < bound
    assert abs(_corr(a[:-1], a[1:])) < bound  # neighbouring elements
    assert abs(_corr(a[:-2**15], a[2**15:])) < bound  # same offset in the next block
    s0 = _rng.bits_ref(1000, 0, n) >= 2**31
    s1 = _rng.bits_ref(1001, 0, n) >= 2**31
    assert abs(_corr(s0, s1)) < bound  # seeds s and s+1


def test_words_independent_inside_and_across_runs():
    """The words of a run are one hash round on ``key + l·GOLDEN`` (see ``_rng``): pairs of words
    at lags inside a run (1, 2, 31, 63) and across its boundary (64, 65, 4096) must look
    independent: uniforms uncorrelated (|r| < 5/sqrt(n)) and the joint histogram of the two
    words' top 4 bits (256 cells) passing a chi-square test against the uniform at p > 1e-4.
    The histogram takes disjoint pairs (i, i + lag) for i with (i // lag) even, so its cells are
    multinomial and the chi-square statistic is calibrated."""
    n = 1 << 22
    w = _rng.bits_ref(7, 0, n).numpy()
    u = (w >> 8).astype(np.float64) / 2**24
    top = (w >> 28).astype(np.int64)
    for lag in (1, 2, 31, 63, 64, 65, 4096):
        m = n - lag
        assert abs(np.corrcoef(u[:-lag], u[lag:])[0, 1]) < 5 / math.sqrt(m), lag
        first = np.flatnonzero((np.arange(m) // lag) % 2 == 0)
        cells = np.bincount(top[first] * 16 + top[first + lag], minlength=256)
        assert scipy.stats.chisquare(cells).pvalue > 1e-4, lag
    # one lane pair at a time (lane 0 with lanes 1 and 63 of the same run): 65536 runs each
    runs = w.reshape(-1, _rng.RUN) >> 28
    for lane in (1, 63):
        cells = np.bincount(runs[:, 0].astype(np.int64) * 16 + runs[:, lane], minlength=256)
        assert scipy.stats.chisquare(cells).pvalue > 1e-4, lane


# --- autograd -------------------------------------------------------------------------------

def test_gradcheck_float64(eager_path):
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    g = torch.Generator()

    def f(t):
        g.manual_seed(0)  # the same mask on every evaluation
        return regulab.ops.dropout(t, 0.4, generator=g)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_backward_applies_the_same_mask(eager_path):
    x = torch.randn(5000, requires_grad=True)
    y = regulab.ops.dropout(x, 0.5)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (y != 0).float() * 2.0)


def test_nothing_but_the_seed_is_saved_for_backward(eager_path):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = torch.randn(1 << 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = regulab.ops.dropout(x * 1.0, 0.5)  # x*1.0 saves nothing either (scalar mul)
    y.sum().backward()
    assert saved == []  # eager: the seed is a Python int on the autograd node
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = torch.ops.regulab.masked_scale(x * 1.0, torch.tensor(3), 0.5, None)  # what torch.compile calls
    y.sum().backward()
    assert [(tuple(t.shape), t.dtype) for t in saved] == [((), torch.int64)]  # 8 bytes for the whole tensor


def test_eager_function_and_custom_op_agree_forward_and_backward(eager_path):
    x = torch.randn(300, 7, requires_grad=True)
    g = torch.Generator()
    g.manual_seed(9)
    a = regulab.ops.dropout(x, 0.3, generator=g)
    (a * torch.arange(7.0)).sum().backward()
    ga, x.grad = x.grad, None
    g.manual_seed(9)
    b = torch.ops.regulab.masked_scale(x, _rng.draw_seed(g), 0.3, None)
    (b * torch.arange(7.0)).sum().backward()
    assert torch.equal(a, b) and torch.equal(ga, x.grad)


def test_no_grad_inference_mode_and_requires_grad_variants(eager_path):
    x = torch.randn(100)
    with torch.no_grad():
        assert not regulab.ops.dropout(x.requires_grad_(), 0.5).requires_grad
    with torch.inference_mode():
        xi = torch.randn(100)
        y = regulab.ops.dropout(xi, 0.5)
        assert ((y == 0) | (y == xi * 2)).all()
        regulab.ops.dropout(xi, 0.5, inplace=True)


@pytest.mark.parametrize("mode", ["plain", "no_grad", "inference_mode"])
def test_without_a_gradient_the_same_mask_and_no_graph(mode, eager_path):
    # nothing to differentiate: the kernel runs without an autograd node; same draw, same mask
    x = torch.randn(3000)
    torch.manual_seed(4)
    want = regulab.ops.dropout(x.clone().requires_grad_(), 0.5)
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode, contextlib.nullcontext)
    torch.manual_seed(4)
    with ctx():
        got = regulab.ops.dropout(x.clone().requires_grad_(mode != "plain"), 0.5)
    assert got.grad_fn is None and not got.requires_grad
    assert torch.equal(got, want.detach()) and want.grad_fn is not None


def test_inplace_writes_into_input_with_and_without_autograd():
    x = torch.randn(1000)
    x0 = x.clone()
    y = regulab.ops.dropout(x, 0.5, inplace=True)
    assert y is x and ((x == 0) | (x == x0 * 2)).all() and (x == 0).any()
    nc = torch.randn(20, 30).t()
    nc0 = nc.clone()
    regulab.ops.dropout(nc, 0.5, inplace=True)
    assert ((nc == 0) | (nc == nc0 * 2)).all()
    leaf = torch.randn(1000, requires_grad=True)
    h = leaf * 1.0
    out = regulab.ops.dropout(h, 0.5, inplace=True)
    assert out is h
    out.sum().backward()
    assert torch.equal(leaf.grad, (h != 0).float() * 2)


@pytest.mark.parametrize("mode", ["no_grad", "plain"])
def test_inplace_on_a_saved_tensor_makes_backward_raise_like_torch(mode):
    """The kernel writes x through its address: the version counter must still move, or a graph that
    saved x would compute its gradient from the dropped-out values."""
    for f in (F.dropout, regulab.ops.dropout):
        w = torch.randn(6, requires_grad=True)
        x = torch.arange(1.0, 7.0)
        z = (w * x).sum()  # mul saves x
        with torch.no_grad() if mode == "no_grad" else contextlib.nullcontext():
            f(x, 0.5, inplace=True)
        assert x._version == 1, f
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.backward()


def test_inplace_on_an_inference_tensor_only_inside_inference_mode():
    with torch.inference_mode():
        t, x = torch.randn(100), torch.randn(100)
    with pytest.raises(RuntimeError, match="inference"):
        F.dropout(t, 0.5, inplace=True)  # (torch writes t first, then raises)
    with pytest.raises(RuntimeError, match=r"dropout: in place on an inference tensor outside torch.inference_mode"):
        regulab.ops.dropout(x, 0.5, inplace=True)
    assert (x != 0).all()  # refused before writing
    with torch.inference_mode():
        assert regulab.ops.dropout(x, 0.5, inplace=True) is x
    assert (x == 0).any()


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_nested_tensor(eager_path, layout):
    def make():
        return torch.nested.nested_tensor([torch.ones(30, 2), torch.ones(50, 2)], layout=layout, requires_grad=True)

    nt = make()
    torch.manual_seed(1)
    y = regulab.ops.dropout(nt, 0.5)
    assert y.is_nested and type(y) is type(nt) and [t.shape for t in y.unbind()] == [(30, 2), (50, 2)]
    vals = torch.cat([t.reshape(-1) for t in y.unbind()])
    assert set(vals.tolist()) == {0.0, 2.0}
    sum(t.sum() for t in y.unbind()).backward()
    assert torch.equal(torch.cat([t.reshape(-1) for t in nt.grad.unbind()]), vals)  # the same mask
    inplace = make().detach()
    torch.manual_seed(1)
    assert regulab.ops.dropout(inplace, 0.5, inplace=True) is inplace
    assert torch.equal(torch.cat([t.reshape(-1) for t in inplace.unbind()]), vals)


def test_sparse_gradient_of_an_embedding(eager_path):
    w = torch.randn(10, 4, requires_grad=True)
    idx = torch.tensor([1, 2, 2])
    torch.manual_seed(5)
    F.embedding(idx, regulab.ops.dropout(w, 0.5), sparse=True).sum().backward()
    sparse = w.grad
    w.grad = None
    torch.manual_seed(5)
    F.embedding(idx, regulab.ops.dropout(w, 0.5)).sum().backward()
    assert sparse.layout == torch.sparse_coo  # as torch's dropout gives
    assert torch.equal(sparse.to_dense(), w.grad)


def test_batched_gradients_equal_one_by_one(eager_path):
    x = torch.randn(6, 5, requires_grad=True)
    y = regulab.ops.dropout(x, 0.4)
    cotangents = torch.randn(4, 6, 5)
    batched = torch.autograd.grad(y, x, cotangents, is_grads_batched=True, retain_graph=True)[0]
    single = torch.stack([torch.autograd.grad(y, x, g, retain_graph=True)[0] for g in cotangents])
    assert torch.equal(batched, single)
    g2 = torch.autograd.grad(y, x, cotangents[0], create_graph=True)[0]  # the fallback's graph too
    assert torch.equal(g2, single[0])


@pytest.mark.filterwarnings("ignore:`torch.jit.trace.* is deprecated:DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_in_training_replays_the_draws(eager_path):
    m = nn.Sequential(nn.Linear(8, 64), regulab.nn.Dropout(0.5)).train()
    x = torch.randn(16, 8)
    traced = torch.jit.trace(m, x, check_trace=False)
    torch.manual_seed(2)
    a = traced(x)
    torch.manual_seed(2)
    assert torch.equal(a, m(x))
    assert not torch.equal(a, traced(x))  # a new draw each call, not a recorded mask or an empty buffer


@pytest.mark.parametrize("make", [
    lambda: torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last),
    lambda: torch.randn(2, 3, 4, 8, 8).to(memory_format=torch.channels_last_3d),
    lambda: torch.randn(40, 30).t(),
    lambda: torch.randn(6, 8)[:, ::2],  # not dense: row-major, as torch
], ids=["channels_last", "channels_last_3d", "transposed", "strided"])
@pytest.mark.parametrize("grad", [False, True])
def test_output_laid_out_as_torchs(make, grad, eager_path):
    x = make().requires_grad_(grad)
    torch.manual_seed(7)
    y = regulab.ops.dropout(x, 0.5)
    assert y.stride() == F.dropout(x, 0.5).stride()
    torch.manual_seed(7)
    assert torch.equal(y, regulab.ops.dropout(x.contiguous(), 0.5))  # the same counters: logical order
    if grad:
        y.backward(torch.ones_like(y))
        assert torch.equal(x.grad, (y != 0) * 2.0)


def test_threads_are_capped_by_torch(monkeypatch):
    import threading

    import numba

    dropout_module = importlib.import_module("regulab.ops.dropout")

    monkeypatch.setattr(dropout_module, "_native_dropout", dropout_module._no_native)  # the numba path

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        regulab.ops.dropout(torch.randn(_kernels.PARALLEL_MIN), 0.5)  # parallel path
        assert numba.get_num_threads() == 1
        # numba's count is per calling thread: a dropout call from another thread is capped too
        seen = []

        def worker():
            regulab.ops.dropout(torch.randn(_kernels.PARALLEL_MIN), 0.5)
            seen.append(numba.get_num_threads())

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen == [1]
    finally:
        torch.set_num_threads(before)


# --- drop-in parity and integration -------------------------------------------------------

def test_repr_state_dict_and_train_eval_parity_with_torch():
    for p, inplace in [(0.5, False), (0.2, True)]:
        ours, theirs = regulab.nn.Dropout(p, inplace), nn.Dropout(p, inplace)
        assert repr(ours) == repr(theirs)
        assert ours.state_dict() == {} == theirs.state_dict()


def _mlp(drop):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), drop(0.3), nn.Linear(20, 20), nn.ReLU(), drop(0.5), nn.Linear(20, 3))


def test_replacing_every_dropout_gives_identical_eval_outputs():
    theirs, ours = _mlp(nn.Dropout), _mlp(nn.Dropout)
    for i, m in enumerate(ours):
        if isinstance(m, nn.Dropout):
            ours[i] = regulab.nn.Dropout(m.p)
    x = torch.randn(8, 10)
    assert torch.equal(theirs.eval()(x), ours.eval()(x))
    ours.load_state_dict(theirs.state_dict())  # same keys: nothing new in the state_dict


def test_cuda_or_other_devices_use_the_reference(monkeypatch):
    # The reference path is what non-CPU devices and half dtypes take: same bits as the kernel.
    dropout_module = importlib.import_module("regulab.ops.dropout")

    monkeypatch.setattr(dropout_module, "_native_dropout", dropout_module._no_native)  # the numba path
    x = torch.randn(3000)
    torch.manual_seed(1)
    a = regulab.ops.dropout(x, 0.5)
    monkeypatch.setattr(_kernels, "supported", lambda t: False)
    torch.manual_seed(1)
    b = regulab.ops.dropout(x, 0.5)
    assert torch.equal(a, b)


def test_eager_seed_draw_is_draw_seed_in_any_thread_and_mode():
    """draw_seed_int: the value draw_seed draws (default and explicit generators), also from a
    thread whose first draw happens under inference_mode (its buffer must stay a normal tensor)."""
    import threading

    from regulab.ops._rng import draw_seed, draw_seed_int

    def seq(draw, gen=None):
        out = []
        with torch.inference_mode():
            out.append(int(draw(gen)))
        out += [int(draw(gen)) for _ in range(3)]
        return out

    torch.manual_seed(11)
    want = seq(draw_seed)
    want_g = seq(draw_seed, torch.Generator().manual_seed(4))
    got, errors = {}, []

    def worker():
        try:
            torch.manual_seed(11)  # the default generator is process-wide: same sequence
            got["default"] = seq(draw_seed_int)
            got["gen"] = seq(draw_seed_int, torch.Generator().manual_seed(4))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert not errors, errors
    assert got == {"default": want, "gen": want_g}


def test_numbas_first_launch_keeps_torchs_thread_count():
    """numba's first parallel kernel launches its OpenMP threads and resets OpenMP's count to all
    cores, which torch can share: torch at 1 thread (a Ray task, ``--threads 1``) must stay there,
    through regulab's first dropout and a stacked model's fused passes."""
    import os
    import subprocess
    import sys

    code = ("import torch, numba, regulab\n"
            "torch.set_num_threads(1)\n"
            "regulab.ops.dropout(torch.randn(1 << 20), 0.5)\n"
            "assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1, torch.get_num_threads()\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NUMBA_NUM_THREADS": "2", "REGULAB_NATIVE": "0"})  # numba's dropout
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
