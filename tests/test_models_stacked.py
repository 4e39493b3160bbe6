"""Stacked twins agree with their ordinary modules; the hand-written backward with autograd."""
from __future__ import annotations

import pytest
import torch

from regulab.models import MLP, FlatParams, build, seeded_module
from regulab.models.mlp import ACTIVATIONS
from regulab.ops import dropout


def _stack(kind, cfg, shape, M=3):
    md = build(kind, cfg, shape, 10)
    mods = [seeded_module(md.make, s) for s in range(M)]
    return md.stacked(mods[0], M), FlatParams.from_modules(mods), mods


CASES = [("mlp", {"widths": [16, 16]}, (40,)), ("mlp", {"widths": [16, 8], "activation": "tanh"}, (40,)),
         ("mlp", {"widths": [12], "batchnorm": True}, (1, 8, 8)), ("cnn1d", {"channels": [4, 4]}, (40,)),
         ("cnn2d", {"channels": [4, 6], "widths": [12]}, (1, 8, 8))]


@pytest.mark.parametrize("kind,cfg,shape", CASES)
def test_stacked_forward_matches_ordinary_modules(kind, cfg, shape):
    net, fl, mods = _stack(kind, cfg, shape)
    x = torch.randn(3, 5, *shape)
    for m in mods:
        m.eval()
    y = net.forward(fl.views(), x, training=False)  # (M, B, C)
    ys = net.forward(fl.views(), x[0], shared=True, training=False)
    for i, m in enumerate(mods):
        torch.testing.assert_close(y[i], m(x[i]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ys[i], m(x[0]), atol=1e-5, rtol=1e-5)


def test_members_have_their_own_seeded_default_init():
    _, fl, mods = _stack("mlp", {"widths": [16]}, (40,))
    w = fl.views()[0]
    assert not torch.equal(w[0], w[1])
    ref = seeded_module(lambda: MLP(40, [16], 10), 1)
    torch.testing.assert_close(w[1], ref.hidden[0].weight, rtol=0, atol=0)
    bound = 1 / 40 ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 40
    assert float(w.abs().max()) <= bound


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "sigmoid"])
@pytest.mark.parametrize("p", [None, 0.3])
def test_manual_backward_matches_autograd(act, p):
    net, fl, _ = _stack("mlp", {"widths": [16, 16, 16], "activation": act}, (40,), M=4)
    x = torch.randn(4, 7, 40)
    dl = torch.randn(4, 7, 10)
    pt = None if p is None else torch.tensor([0.0, p, 0.5, 0.1])

    def seeds_factory():
        calls = iter(range(100))

        def seeds():
            j = next(calls)
            return j, torch.Generator().manual_seed(1000 + j)
        return seeds

    g_auto = fl.like()
    P = fl.leaves(fl.flat, g_auto)
    seeds = seeds_factory()
    act = ACTIVATIONS[act]
    h = x
    for i in range(3):  # plain autograd reference: residual blocks, out-of-place dropout
        a = act(torch.baddbmm(P[2 * i + 1].unsqueeze(1), h, P[2 * i].transpose(1, 2)))
        h = h + a if i > 0 else a
        if pt is not None:
            h = dropout(h, pt, generator=seeds()[1])
    logits = torch.baddbmm(P[-1].unsqueeze(1), h, P[-2].transpose(1, 2))
    logits.backward(dl)
    g_man = fl.like()
    logits2, ctx = net.forward_train(fl.views(), x.clone(), p=pt, seeds=seeds_factory())
    torch.testing.assert_close(logits2, logits.detach())
    net.backward(fl.views(), fl.views(g_man), ctx, dl, lambda j: torch.Generator().manual_seed(1000 + j))
    torch.testing.assert_close(g_man, g_auto, atol=1e-5, rtol=1e-4)


def test_flat_leaves_accumulate_into_the_flat_grad():
    net, fl, mods = _stack("cnn1d", {"channels": [4]}, (40,), M=2)
    g = fl.like()
    leaves = fl.leaves(fl.flat, g)
    x = torch.randn(2, 3, 40)
    net.forward(leaves, x, training=True).sum().backward()
    mods[1].zero_grad()
    mods[1](x[1]).sum().backward()
    ref = dict(mods[1].named_parameters())
    for b, v in zip(fl.blocks, fl.views(g)):
        torch.testing.assert_close(v[1], ref[b.name].grad, atol=1e-5, rtol=1e-5)


def test_user_factory_and_errors(tmp_path):
    from regulab.errors import SpecError

    f = tmp_path / "mymodel.py"
    f.write_text("import torch\ndef make(num_classes, width=8):\n"
                 "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))\n"
                 "def bad():\n    return 3\n")
    md = build(f"{f}:make", {"kwargs": {"width": 4}}, (40,), 10)
    assert md.stacked is None and isinstance(md.make(), torch.nn.Module)
    with pytest.raises(SpecError, match="must return an nn.Module"):
        build(f"{f}:bad", {}, (40,), 10).make()
    with pytest.raises(SpecError, match="must define a callable 'nope'"):
        build(f"{f}:nope", {}, (40,), 10)
    with pytest.raises(SpecError, match="must exist"):
        build("missing/file.py:make", {}, (40,), 10)
    with pytest.raises(SpecError, match="must match the data's input shape"):
        build("cnn2d", {}, (40,), 10)


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "sigmoid"])
@pytest.mark.parametrize("widths,residual", [([16, 16, 8], True), ([40, 40], True), ([16, 16], False)])
def test_eval_fast_path_matches_the_ordinary_modules(act, widths, residual):
    net, fl, mods = _stack("mlp", {"widths": widths, "activation": act, "residual": residual}, (40,), M=3)
    P = fl.views()
    for n in (5, 9, 5):  # a new chunk length, then a reused workspace
        x = torch.randn(n, 40)
        out = net.forward_eval(P, x)  # (M, C, n)
        assert out.shape == (3, 10, n)
        for i, m in enumerate(mods):
            torch.testing.assert_close(out[i].t(), m.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p_range", [None, (1, 4), (0, 5)])
def test_fused_relu_passes_equal_the_torch_ops(p_range):
    """The numba bias+ReLU+skip+dropout pass (and its backward) == the unfused torch ops: same masks."""
    net, fl, _ = _stack("mlp", {"widths": [16, 16, 16]}, (40,), M=5)
    x = torch.randn(5, 7, 40)
    x[2, 3, 4] = float("nan")  # NaN flows the same way through both
    dl = torch.randn(5, 7, 10)
    pt = None if p_range is None else torch.tensor([0.2, 0.3, 0.5, 0.0, 0.6])

    def run(fused):
        net.fused = fused
        calls = iter(range(100))
        seeds = lambda: (lambda j: (j, torch.Generator().manual_seed(77 + j)))(next(calls))  # noqa: E731
        logits, ctx = net.forward_train(fl.views(), x.clone(), p=pt, seeds=seeds, p_range=p_range)
        g = fl.like()
        net.backward(fl.views(), fl.views(g), ctx, dl, lambda j: torch.Generator().manual_seed(77 + j))
        return logits, g

    (l1, g1), (l0, g0) = run(True), run(False)
    net.fused = True
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert bool(torch.isnan(l1[2]).any()) and not bool(torch.isnan(l1[0]).any())


def test_fused_passes_cap_their_threads_at_torchs():
    """A worker at ``torch.set_num_threads(1)`` (a Ray task, ``--threads 1``) must not run numba on
    every core: the fused passes' parallel kernels take torch's count, as every regulab kernel."""
    import numba

    from regulab.models import _fused
    from regulab.ops import _kernels

    net, fl, _ = _stack("mlp", {"widths": [64]}, (40,), M=4)
    B = 128
    assert net.fused and 4 * B * 64 >= _fused._PARALLEL_MIN  # the parallel kernels
    seen, before = [], torch.get_num_threads()
    _kernels.set_threads()  # numba's threads launched (see test_dropout: its launch keeps torch's count)
    try:
        torch.set_num_threads(1)
        _kernels._threads.n = None  # a fresh worker: numba at its default, all cores
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        logits, ctx = net.forward_train(fl.views(), torch.randn(4, B, 40), p=torch.full((4,), 0.3),
                                        seeds=lambda: (0, torch.Generator().manual_seed(1)))
        seen.append(numba.get_num_threads())
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # (as if another library had set it)
        _kernels._threads.n = None
        net.backward(fl.views(), fl.views(fl.like()), ctx, torch.randn(4, B, 10),
                     lambda j: torch.Generator().manual_seed(1))
        seen.append(numba.get_num_threads())
    finally:
        torch.set_num_threads(before)
        _kernels._threads.n = None
    assert seen == [1, 1]
