"""One parametrised suite over every dropout-family layer (regulab.nn.registry.LAYERS)."""
import inspect
import re

import pytest
import torch
from torch import nn

import regulab
from regulab._validate import CONSTRAINTS, PROB
from regulab.nn.registry import LAYERS

NAMES = list(LAYERS)
TWINS = [n for n in NAMES if LAYERS[n].torch_twin is not None]


def _rate_constraint(spec):
    return CONSTRAINTS.get((spec.cls.__name__, spec.rate), PROB)


def _small(x):
    """Cut an input down for gradcheck (the Jacobian is numel x numel)."""
    x = x[:1]
    if x.numel() > 200 and x.dim() > 1:
        x = x[:, :2]
    return x


@pytest.mark.parametrize("name", NAMES)
def test_eval_semantics(name):
    spec = LAYERS[name]
    m, x = spec.build().eval(), spec.make_input()
    y = m(x)
    if spec.eval_identity:
        assert y is x
    else:
        assert torch.equal(y, m(x))  # deterministic in eval


@pytest.mark.parametrize("name", NAMES)
def test_training_is_random_and_seeded(name):
    spec = LAYERS[name]
    m, x = spec.build().train(), spec.make_input()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(0)
    b = m(x)
    assert torch.equal(a, b)  # torch.manual_seed makes the draw reproducible
    assert not torch.equal(a, m(x))  # a fresh draw on every call
    assert a.shape == m.eval()(x).shape


@pytest.mark.parametrize("name", NAMES)
def test_zero_rate_is_identity(name):
    spec = LAYERS[name]
    if not _rate_constraint(spec).contains(0.0):
        pytest.skip(f"{spec.rate} = 0 is outside its range")
    m, x = spec.build(**{spec.rate: 0.0}), spec.make_input()
    y = m.train()(x)
    if spec.eval_identity:
        assert y is x
    assert torch.equal(y, m.eval()(x))


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].preserves_mean])
def test_expectation_preserved(name):
    # seeded: per element, |mean of T passes - eval output| < 6 standard errors for >= 99.9%
    spec = LAYERS[name]
    m, x = spec.build(), spec.make_input()
    ref = m.eval()(x).detach()
    m.train()
    with torch.no_grad():
        ys = torch.stack([m(x) for _ in range(400)])
    se = ys.std(0) / 20 + 1e-6
    z = (ys.mean(0) - ref).abs() / se
    assert (z < 6).float().mean() > 0.999, name


FLOAT_INPUTS = [n for n in NAMES if LAYERS[n].make_input().is_floating_point()]


@pytest.mark.parametrize("name", FLOAT_INPUTS)
def test_a_negative_view_is_read_as_its_values(name):
    """Under torch's negative bit a tensor's memory holds −x (``.imag`` of a conjugate is one);
    the kernels read memory, so every layer must give what it gives the plain tensor, and the
    same gradient."""
    spec = LAYERS[name]
    m, x = spec.build().train(), spec.make_input().detach()
    x0 = x.clone().requires_grad_()
    torch.manual_seed(0)
    a = m(x0)
    w = torch.randn_like(a)
    a.backward(w)
    leaf = x.neg().requires_grad_()
    xn = torch._neg_view(leaf)  # values x, memory -x
    assert xn.is_neg() and torch.equal(xn, x)
    torch.manual_seed(0)
    b = m(xn)
    b.backward(w)
    assert torch.equal(a, b) and torch.equal(x0.grad, -leaf.grad)
    torch.manual_seed(0)
    c = m(torch._neg_view(x.neg()))  # nothing to differentiate: the eager path, no dispatcher in between
    assert torch.equal(c, a.detach())


@pytest.mark.parametrize("op", ["dropout", "alpha_dropout", "dropout2d", "feature_alpha_dropout"])
@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (2, 8, 64, 64)])  # small (torch ops) and kernel-sized
def test_in_place_on_a_negative_view_writes_its_values(op, shape):
    f = getattr(regulab.ops, op)
    x = torch.randn(shape)
    want = x.clone()
    torch.manual_seed(0)
    f(want, 0.3, inplace=True)
    xn = torch._neg_view(x.neg())
    torch.manual_seed(0)
    assert f(xn, 0.3, inplace=True) is xn
    assert torch.equal(xn, want)


@pytest.mark.parametrize("name", NAMES)
def test_bad_rate_is_refused_in_house_style(name):
    spec = LAYERS[name]
    for bad in _rate_constraint(spec).bad_values():
        with pytest.raises(ValueError, match=rf"^{spec.cls.__name__}: {spec.rate} must be "):
            spec.build(**{spec.rate: bad})


@pytest.mark.parametrize("name", NAMES)
def test_repr_and_state_dict(name):
    spec = LAYERS[name]
    m = spec.build()
    r = repr(m)
    assert r.startswith(spec.cls.__name__ + "(")
    rate = "sigma" if spec.rate == "sigma" else "p"
    assert re.search(rf"\b{rate}=", r), r
    if spec.torch_twin is not None and spec.torch_twin.__name__ == spec.cls.__name__:
        assert r == repr(spec.torch_twin(**spec.kwargs()))
    assert sorted(m.state_dict()) == sorted(spec.state_keys)
    assert all(isinstance(t, nn.Parameter) for t in m.parameters())


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].float_input])
def test_gradients_match_finite_differences(name):
    spec = LAYERS[name]
    m = spec.build().double().train()
    x = _small(spec.make_input()).double().requires_grad_()

    def seeded(t):  # the same draw on every call: a deterministic function of t
        torch.manual_seed(7)
        return m(t)

    assert torch.autograd.gradcheck(seeded, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].saves_only_seed and LAYERS[n].float_input])
def test_backward_keeps_no_mask(name):
    spec = LAYERS[name]
    m = spec.build().train()
    x = spec.make_input().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = m(x.view_as(x))
    assert all(t.numel() <= 1 for t in saved), [tuple(t.shape) for t in saved]  # the seed at most
    y.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph(name):
    # aot_eager: Dynamo must capture one graph (no breaks) and AOT autograd must trace the backward
    spec = LAYERS[name]
    torch._dynamo.reset()
    m, x = spec.build().train(), spec.make_input()
    if spec.float_input:
        x.requires_grad_()
    y = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    assert y.shape == m.eval()(x).shape
    if spec.float_input:
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", TWINS)
def test_parity_with_torch_twin(name):
    spec = LAYERS[name]
    kw = spec.kwargs()
    ours, twin = spec.build(), spec.torch_twin(**kw)
    if list(twin.state_dict()):
        twin.load_state_dict(ours.state_dict())
    x = spec.make_input()
    assert torch.equal(ours.eval()(x), twin.eval()(x))
    if not spec.eval_identity:
        return
    # training: the same values (exactly) and the same drop fraction (binomial, 5 standard errors)
    ones = torch.ones(64 * x.shape[0], *x.shape[1:])
    ours.train(), twin.train()
    a, b = ours(ones), twin(ones)
    assert torch.equal(torch.unique(a), torch.unique(b))
    drop_a = (a != a.max()).float().mean()
    drop_b = (b != b.max()).float().mean()
    cells = ones.numel() if name in ("Dropout", "AlphaDropout") else ones.shape[0] * ones.shape[1]
    p = kw["p"]
    assert abs(float(drop_a - drop_b)) < 5 * (2 * p * (1 - p) / cells) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["Dropout2d", "AlphaDropout", "GaussianDropout", "DropBlock2d"])
def test_compile_inductor(name):
    spec = LAYERS[name]
    torch._dynamo.reset()
    m, x = spec.build().train(), spec.make_input().requires_grad_()
    y = torch.compile(m, fullgraph=True)(x)
    y.sum().backward()
    assert x.grad is not None


def test_registry_covers_every_exported_layer():
    exported = {getattr(regulab.nn, n) for n in regulab.nn.__all__}
    layers = {c for c in exported if isinstance(c, type) and issubclass(c, nn.Module) and c is not regulab.nn.DropoutBase}
    assert layers == {s.cls for s in LAYERS.values()}


# ---- every constraint the family registers, refused in house style (generated from the table) ----

_X = torch.ones(2, 3, 4)
_CALLS = {
    "shared_dropout": lambda **kw: regulab.ops.shared_dropout(_X, **kw),
    "dropout1d": lambda **kw: regulab.ops.dropout1d(_X, **kw),
    "dropout2d": lambda **kw: regulab.ops.dropout2d(_X[None], **kw),
    "dropout3d": lambda **kw: regulab.ops.dropout3d(_X[None, None], **kw),
    "locked_dropout": lambda **kw: regulab.ops.locked_dropout(_X, **kw),
    "embedding_dropout": lambda **kw: regulab.ops.embedding_dropout(_X[0], **kw),
    "drop_path": lambda **kw: regulab.ops.drop_path(_X, **kw),
    "drop_path_rates": lambda **kw: regulab.ops.drop_path_rates(**{"p_max": 0.1, "depth": 3, **kw}),
    "alpha_dropout": lambda **kw: regulab.ops.alpha_dropout(_X, **kw),
    "feature_alpha_dropout": lambda **kw: regulab.ops.feature_alpha_dropout(_X, **kw),
    "gaussian_dropout": lambda **kw: regulab.ops.gaussian_dropout(_X, **kw),
    "gaussian_noise": lambda **kw: regulab.ops.gaussian_noise(_X, **kw),
    "drop_block2d": lambda **kw: regulab.ops.drop_block2d(_X[None], **kw),
    "drop_connect_linear": lambda **kw: regulab.ops.drop_connect_linear(_X, torch.ones(2, 4), **kw),
    "concrete_dropout": lambda **kw: regulab.ops.concrete_dropout(_X, torch.tensor(0.0), **kw),
    "concrete_regularizer": lambda **kw: regulab.ops.concrete_regularizer(torch.tensor(0.0), 1.0, 3, **kw),
    "rdrop_loss": lambda **kw: regulab.ops.rdrop_loss(_X[0], _X[0], torch.tensor([0, 1]), **kw),
    "mc_predict": lambda **kw: regulab.mc_predict(nn.Identity(), _X, **kw),
    "scheduled_rate": lambda **kw: regulab.schedules.scheduled_rate(**{"kind": "linear", "t": 1, "total": 3,
                                                                         "p_start": 0.0, "p_end": 0.5, **kw}),
    "DropoutSchedule": lambda **kw: regulab.schedules.DropoutSchedule(nn.Identity(), **kw),
    "DropBlock2d": lambda **kw: regulab.nn.DropBlock2d(**kw),
    "ConcreteDropout": lambda **kw: regulab.nn.ConcreteDropout(**kw),
    "GaussianNoise": lambda **kw: regulab.nn.GaussianNoise(**kw),
}
_CASES = [pytest.param(w, prm, bad, id=f"{w}.{prm}={bad!r}")
          for (w, prm), c in sorted(CONSTRAINTS.items(), key=str) if w in _CALLS for bad in c.bad_values()]


@pytest.mark.parametrize("where,param,bad", _CASES)
def test_every_family_constraint_is_enforced(where, param, bad):
    with pytest.raises(ValueError) as e:
        _CALLS[where](**{param: bad})
    assert str(e.value).startswith(f"{where}: {param} must be {CONSTRAINTS[(where, param)]}, got ")


@pytest.mark.filterwarnings("ignore:`torch.jit.trace.* is deprecated:DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", NAMES)
def test_jit_trace_in_training_replays_the_eager_draws(name):
    # a kernel writing memory directly is invisible to the tracer: the ops must show it theirs
    spec = LAYERS[name]
    m, x = spec.build().train(), spec.make_input()
    traced = torch.jit.trace(m, x, check_trace=False)
    torch.manual_seed(3)
    a = traced(x)
    torch.manual_seed(3)
    assert torch.equal(a, m(x))


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].float_input])
def test_batched_gradients_equal_one_by_one(name):
    # autograd.grad(..., is_grads_batched=True) hands the backward gradients without storage
    spec = LAYERS[name]
    m, x = spec.build().train(), spec.make_input().requires_grad_(True)
    torch.manual_seed(4)
    y = m(x)
    cotangents = torch.randn(3, *y.shape)
    batched = torch.autograd.grad(y, x, cotangents, is_grads_batched=True, retain_graph=True)[0]
    single = torch.stack([torch.autograd.grad(y, x, g, retain_graph=True)[0] for g in cotangents])
    assert torch.equal(batched, single)


@pytest.mark.parametrize("name", [n for n in NAMES if "inplace" in inspect.signature(LAYERS[n].cls).parameters])
def test_in_place_moves_the_version_counter(name):
    # as torch's in-place ops: a graph that saved the input refuses to backward through new values
    spec = LAYERS[name]
    m, x = spec.build(inplace=True).train(), spec.make_input()
    probe = x.clone()
    if m(probe) is not probe:
        pytest.skip("its inplace does not write its input")
    w = torch.randn(x.shape, requires_grad=True)
    z = (w * x).sum()  # saves x
    before = x._version
    with torch.no_grad():
        assert m(x) is x
    assert x._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_in_place_on_long_rows_moves_the_version_counter():
    # channels of 1024 elements take the row kernel (the registry's small inputs take torch's mul)
    x = torch.randn(2, 4, 32, 32)
    w = torch.randn(x.shape, requires_grad=True)
    z = (w * x).sum()
    with torch.no_grad():
        assert regulab.ops.dropout2d(x, 0.5, inplace=True) is x
    assert x._version == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def _permuted(x):
    """The same values, dense but not row-major (dims stored in reverse order)."""
    order = list(range(x.dim()))[::-1]
    return x.permute(order).contiguous().permute(order)


@pytest.mark.parametrize("name", [n for n in NAMES if LAYERS[n].float_input])
def test_any_dense_layout_gives_the_same_values(name):
    # the counters follow the logical order: the layout of the input never changes the draws
    spec = LAYERS[name]
    m, x = spec.build().train(), spec.make_input()
    xp = _permuted(x)
    if xp.is_contiguous():
        pytest.skip("a 1-d input has one layout")
    torch.manual_seed(6)
    a = m(xp)
    torch.manual_seed(6)
    b = m(x)
    if spec.eval_identity:  # the op itself: exactly
        assert torch.equal(a, b)
    else:  # a GEMM follows (drop-connect): its summation order follows the layout
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", TWINS)
def test_output_laid_out_as_the_torch_twins(name):
    spec = LAYERS[name]
    x = _permuted(spec.make_input())
    ours, theirs = spec.build().train()(x), spec.torch_twin(**spec.kwargs()).train()(x)
    assert ours.stride() == theirs.stride()
