"""Constraints after real optimizer steps: Linear, Conv and stacked weights, per-member c."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from regulab.regularizers import MaxNorm, NonNeg, UnitNorm, max_norm_, unit_norm_


def _steps(model, opt, steps=5, shape=(16, 3, 10)):
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        (model(torch.randn(*shape, generator=g)) ** 2).sum().backward()
        opt.step()


def test_max_norm_bounds_linear_and_conv_units_after_large_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(32, 5))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    MaxNorm(0.5).attach(opt)
    bias_before = model[2].bias.detach().clone()
    _steps(model, opt)
    conv_norms = model[0].weight.flatten(1).norm(dim=1)  # over (in, k)
    lin_norms = model[2].weight.norm(dim=1)  # over in
    assert (conv_norms <= 0.5 + 1e-5).all() and (lin_norms <= 0.5 + 1e-5).all()
    assert torch.allclose(lin_norms, torch.full((5,), 0.5), atol=1e-5)  # large lr: all at the bound
    assert not torch.equal(model[2].bias.detach(), bias_before)  # biases are trained, not constrained


def test_max_norm_leaves_small_units_unchanged_and_rescales_only_large_ones():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    max_norm_(w, 2.0)
    assert torch.allclose(w, torch.tensor([[1.2, 1.6], [0.3, 0.4]]), atol=1e-6)
    assert torch.equal(w[1], torch.tensor([0.3, 0.4]))


def test_max_norm_stacked_per_member_c():
    c = torch.tensor([0.5, 1.0, 4.0])
    w = torch.randn(3, 4, 6) * 3  # (M, out, in)
    norms_before = w.norm(dim=2)
    MaxNorm(c, stacked=True)(w)
    norms = w.norm(dim=2)  # (M, out)
    assert (norms <= c[:, None] + 1e-5).all()
    assert torch.allclose(norms, torch.minimum(norms_before, c[:, None]), atol=1e-5)
    w4 = torch.randn(2, 3, 2, 5) * 5  # stacked conv (M, out, in, k)
    max_norm_(w4, torch.tensor([1.0, 2.0]), stacked=True)
    assert torch.allclose(w4.flatten(2).norm(dim=2).max(1).values, torch.tensor([1.0, 2.0]), atol=1e-5)
    with pytest.raises(ValueError, match="MaxNorm: stacked must be True"):
        MaxNorm(c)
    with pytest.raises(ValueError, match="max_norm_: input must be stacked on a leading member dim of size 3"):
        max_norm_(torch.randn(2, 4, 6), c, stacked=True)


def test_max_norm_stacked_attach_skips_stacked_biases():
    w = nn.Parameter(torch.randn(2, 3, 4))
    b = nn.Parameter(torch.randn(2, 3) * 10)
    opt = torch.optim.SGD([w, b], lr=1.0)
    MaxNorm(torch.tensor([0.1, 0.2]), stacked=True).attach(opt)
    w.grad, b.grad = torch.randn(2, 3, 4) * 10, torch.zeros(2, 3)
    before = b.detach().clone()
    opt.step()
    assert (w.detach().norm(dim=2) <= torch.tensor([[0.1], [0.2]]) + 1e-6).all()
    assert torch.equal(b.detach(), before)


def test_unit_norm_and_non_neg_after_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(32, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    UnitNorm().attach(opt, params=model)
    _steps(model, opt)
    assert torch.allclose(model[0].weight.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(model[2].weight.norm(dim=1), torch.ones(5), atol=1e-5)
    lin = nn.Linear(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    handle = NonNeg().attach(opt, params=[lin.weight])
    _steps(lin, opt, shape=(8, 4))
    assert (lin.weight >= 0).all()
    handle.remove()
    stacked = torch.randn(2, 3, 4)
    unit_norm_(stacked, stacked=True)
    assert torch.allclose(stacked.norm(dim=2), torch.ones(2, 3), atol=1e-5)


def test_constraint_shape_errors():
    with pytest.raises(ValueError, match=r"max_norm_: weight must be at least 2-D \(out, in, ...\), got 'shape \(4,\)'"):
        max_norm_(torch.randn(4), 1.0)
    with pytest.raises(ValueError, match="unit_norm_: weight must be at least 3-D"):
        unit_norm_(torch.randn(2, 4), stacked=True)
