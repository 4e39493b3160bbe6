"""regulab's seeded ops under ``torch.func`` transforms.

``vmap``: each batch element gets what the op gives its slice outside vmap, with one seed for
all elements (``randomness="same"``) or its own seed (``"different"``); ``"error"`` refuses the
seed draw. ``grad``: the gradient torch's autograd gives for the same seed, alone and under vmap.
``jvp``: every op is elementwise and linear in its input, so the tangent equals that gradient form.
"""
import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, stack_module_state, vmap

import regulab
from regulab import ops

OPS = {
    "dropout": lambda t: ops.dropout(t, 0.5),
    "dropout in place": lambda t: ops.dropout(t.clone(), 0.5, inplace=True),
    "dropout2d": lambda t: ops.dropout2d(t, 0.5),
    "dropout2d in place": lambda t: ops.dropout2d(t.clone(), 0.5, inplace=True),
    "drop_path": lambda t: ops.drop_path(t, 0.5, True),
    "alpha_dropout": lambda t: ops.alpha_dropout(t, 0.5),
    "feature_alpha_dropout": lambda t: ops.feature_alpha_dropout(t, 0.5),
    "gaussian_dropout": lambda t: ops.gaussian_dropout(t, 0.5),
    "gaussian_noise": lambda t: ops.gaussian_noise(t, 0.5),
    "drop_block2d": lambda t: ops.drop_block2d(t, 0.3, 3),
    "concrete_dropout": lambda t: ops.concrete_dropout(t, torch.tensor(0.0)),
}
X = torch.randn(3, 2, 4, 6, 6)  # (vmap batch, N, C, H, W)


@pytest.mark.parametrize("name", OPS)
def test_same_randomness_is_the_op_on_each_slice_with_one_seed(name):
    f = OPS[name]
    torch.manual_seed(0)
    got = vmap(f, randomness="same")(X)
    want = []
    for b in range(X.shape[0]):
        torch.manual_seed(0)  # the one seed the vmapped call drew
        want.append(f(X[b]))
    assert torch.equal(got, torch.stack(want))


@pytest.mark.parametrize("name", OPS)
def test_different_randomness_gives_each_element_its_own_draw(name):
    x = X[:1].expand(3, *X.shape[1:])  # three equal elements: only the noise can tell them apart
    got = vmap(OPS[name], randomness="different")(x)
    assert not torch.equal(got[0], got[1]) and not torch.equal(got[1], got[2])


def test_different_randomness_keeps_dropout_values_exact():
    y = vmap(lambda t: ops.dropout(t, 0.25), randomness="different")(X)
    kept = y != 0
    scale = torch.ones(1).div_(0.75)  # torch rounds 1/(1 - p) in the dtype, then multiplies
    assert torch.equal(y[kept], X[kept] * scale) and 0.65 < kept.float().mean() < 0.85


def test_error_randomness_refuses_the_seed_draw():
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(OPS["dropout"], randomness="error")(X)


def test_stacked_ensemble_of_modules_with_regulab_dropout():
    """The torch.func ensemble pattern: functional_call over stacked weights, vmapped."""
    models = [torch.nn.Sequential(torch.nn.Linear(8, 16), regulab.nn.Dropout(0.5), torch.nn.Linear(16, 2))
              for _ in range(4)]
    params, buffers = stack_module_state(models)
    x = torch.randn(5, 8)

    def one(p, b):
        return functional_call(models[0], (p, b), (x,))

    out = vmap(one, randomness="different")(params, buffers)
    assert out.shape == (4, 5, 2)
    for m in models:
        m.eval()
    base = models[0]
    eval_out = vmap(lambda p, b: functional_call(base, (p, b), (x,)))(params, buffers)
    assert torch.allclose(eval_out, torch.stack([m(x) for m in models]), atol=1e-6)


def test_every_op_has_its_own_batching_rule():
    """No op falls back to functorch's generic per-sample loop (which warns on every use and
    cannot run the in-place ops), eager or under torch.compile (which calls the custom ops
    themselves). Checked in a fresh process: the warning is printed once."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import torch, tests.test_functorch as t\n"
            "for f in t.OPS.values():\n"
            "    torch.func.vmap(f, randomness='different')(t.X)\n"
            "    torch.compile(torch.func.vmap(f, randomness='same'), backend='eager')(t.X)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "batching rule" not in r.stderr, r.stderr[-2000:]


W = torch.randn(*X.shape[1:])


def _loss(f):
    return lambda t: (f(t) * W).sum()


def _autograd(f, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    t = x.clone().requires_grad_()
    _loss(f)(t).backward()
    return t.grad


@pytest.mark.parametrize("name", OPS)
def test_grad_transform_equals_autograd_for_the_same_seed(name):
    torch.manual_seed(1)
    got = grad(_loss(OPS[name]))(X[0])
    torch.testing.assert_close(got, _autograd(OPS[name], X[0], 1), rtol=0, atol=0)


@pytest.mark.parametrize("name", OPS)
def test_vmap_of_grad_is_per_sample_autograd(name):
    torch.manual_seed(1)
    got = vmap(grad(_loss(OPS[name])), randomness="same")(X)
    want = torch.stack([_autograd(OPS[name], X[b], 1) for b in range(X.shape[0])])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_ensemble_training_step_with_vmap_grad():
    """Per-member gradients of a stacked ensemble (the torch.func recipe), each member with its
    own dropout mask: a member's gradient is the one its mask gives, zero where it dropped."""
    models = [torch.nn.Sequential(torch.nn.Linear(8, 16), regulab.nn.Dropout(0.5), torch.nn.Linear(16, 1))
              for _ in range(4)]
    params, buffers = stack_module_state(models)
    x = torch.randn(1, 8)

    def loss(p, b):
        return functional_call(models[0], (p, b), (x,)).sum()

    g = vmap(grad(loss), randomness="different")(params, buffers)
    # d loss / d W2 = dropout(h): zero exactly on the units each member dropped
    h = torch.stack([torch.relu(m[0](x)) for m in models])  # (4, 1, 16) pre-dropout activations
    dropped = (g["2.weight"] == 0) & (h != 0)
    assert g["2.weight"].shape == (4, 1, 16)
    assert dropped.any() and not torch.equal(dropped[0], dropped[1])


INPLACE = [name for name in OPS if name.endswith("in place")]


@pytest.mark.parametrize("name", INPLACE)
def test_in_place_op_under_vmap_keeps_the_mask_in_the_gradient(name):
    """Inside vmap x.requires_grad is False even when an outer level differentiates: the op
    must still go through autograd (a copy of the out-of-place op), not the bare in-place op."""
    f = OPS[name]
    w = X.clone().requires_grad_()
    torch.manual_seed(2)
    y = vmap(lambda t: f(t * 1), randomness="same")(w)
    (y * W).sum().backward()
    want = torch.stack([_autograd(f, X[b], 2) for b in range(X.shape[0])])
    torch.testing.assert_close(w.grad, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", OPS)
def test_grad_of_vmap_is_per_sample_autograd(name):
    torch.manual_seed(3)
    got = grad(lambda t: (vmap(OPS[name], randomness="same")(t) * W).sum())(X)
    want = torch.stack([_autograd(OPS[name], X[b], 3) for b in range(X.shape[0])])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_in_place_under_vmap_on_an_expanded_input_is_refused():
    x = torch.ones(1, 8).expand(3, 8)
    with torch.no_grad(), pytest.raises(RuntimeError, match="share memory|single memory location"):
        vmap(lambda t: ops.dropout(t, 0.5, inplace=True), randomness="different")(x)


def test_import_under_a_non_cpu_default_device():
    """The per-thread seed buffer is a CPU tensor whatever the default device."""
    import subprocess
    import sys
    code = "import torch; torch.set_default_device('meta'); import regulab.ops; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("name", OPS)
def test_jvp_is_the_diagonal_jacobian_applied_to_the_tangent(name):
    torch.manual_seed(5)
    _, tangent = jvp(OPS[name], (X[0],), (W,))
    torch.testing.assert_close(tangent, _autograd(OPS[name], X[0], 5), rtol=0, atol=0)


def test_jacfwd_equals_jacrev():
    x = torch.randn(7, dtype=torch.float64)
    torch.manual_seed(1)
    fwd = jacfwd(lambda t: ops.alpha_dropout(t, 0.4), randomness="same")(x)
    torch.manual_seed(1)
    rev = jacrev(lambda t: ops.alpha_dropout(t, 0.4))(x)
    assert torch.equal(fwd, rev) and torch.count_nonzero(fwd - torch.diag(torch.diagonal(fwd))) == 0


@pytest.mark.parametrize("name", OPS)
def test_forward_ad_dual_tensors_carry_the_tangent(name):
    """torch.autograd.forward_ad outside torch.func: the same tangent as torch.func.jvp."""
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        torch.manual_seed(5)
        tangent = fwAD.unpack_dual(OPS[name](fwAD.make_dual(X[0], W))).tangent
    torch.testing.assert_close(tangent, _autograd(OPS[name], X[0], 5), rtol=0, atol=0)


@pytest.mark.parametrize("name", INPLACE)
def test_in_place_under_no_grad_inside_a_dual_level_updates_the_tangent(name):
    """Forward-mode AD ignores grad mode: an in-place op under no_grad still masks the tangent."""
    import torch.autograd.forward_ad as fwAD
    f = {"dropout in place": lambda t: ops.dropout(t, 0.5, inplace=True),
         "dropout2d in place": lambda t: ops.dropout2d(t, 0.5, inplace=True)}[name]
    with fwAD.dual_level():
        d = fwAD.make_dual(X[0].clone(), W.clone())
        with torch.no_grad():
            torch.manual_seed(5)
            f(d)
        tangent = fwAD.unpack_dual(d).tangent
    torch.testing.assert_close(tangent, _autograd(OPS[name], X[0], 5), rtol=0, atol=0)


def test_an_additive_op_returns_a_tangent_of_its_own():
    import torch.autograd.forward_ad as fwAD
    v = torch.ones_like(X[0])
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(ops.gaussian_noise(fwAD.make_dual(X[0], v), 0.5)).tangent
    assert torch.equal(tangent, v) and tangent.data_ptr() != v.data_ptr()


def test_a_tensor_leaked_from_a_finished_transform_is_dropped_as_its_value():
    """A wrapper kept past the end of its ``grad`` transform (a "dead" functorch wrapper) takes the
    eager fast path unwrapped: the values and mask of the same seed on a plain copy of it."""
    import importlib

    dropout_module = importlib.import_module("regulab.ops.dropout")  # (ops.dropout is the function)
    leaked = []

    def f(x):
        y = x * 1
        leaked.append(y)
        return y.sum()

    grad(f)(torch.randn(64))
    dead = leaked[0]
    assert torch._C._functorch.is_functorch_wrapped_tensor(dead) and dead.requires_grad
    plain = torch.tensor(dead.tolist())
    torch.manual_seed(5)
    got = ops.dropout(dead, 0.5)
    torch.manual_seed(5)
    assert torch.equal(got, ops.dropout(plain, 0.5)) and (got == 0).any()
    # the eager path skips Function.apply's Python wrapper on this torch (it is the fast path)
    assert dropout_module._apply_raw is not dropout_module._MaskedScaleFn.apply
