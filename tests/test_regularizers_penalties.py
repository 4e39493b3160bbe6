"""Penalties, parameter selection and coupled/decoupled weight decay: closed forms and parity."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from regulab.regularizers import (
    L1,
    L1L2,
    L2,
    DecoupledWeightDecay,
    coupled_decay_,
    decoupled_decay_,
    l1_penalty,
    l1l2_penalty,
    l2_penalty,
    param_groups_weight_decay,
    select_parameters,
)


class StackedLinear(nn.Module):
    """M linear layers stacked on a leading member dim: weight (M, out, in), bias (M, out)."""

    def __init__(self, m: int, i: int, o: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m, o, i))
        self.bias = nn.Parameter(torch.randn(m, o))

    def forward(self, x):  # (M, B, in) -> (M, B, out)
        return torch.baddbmm(self.bias[:, None, :], x, self.weight.transpose(1, 2))


def zoo() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.Flatten(), nn.LayerNorm(12), nn.Linear(12, 4)
    )


def test_default_selection_is_weight_matrices_and_kernels_only():
    names = [n for n, _ in select_parameters(zoo())]
    assert names == ["0.weight", "4.weight"]
    assert [n for n, _ in select_parameters(StackedLinear(3, 4, 2))] == ["weight"]  # (M, out) bias skipped
    assert len(select_parameters(zoo(), "all")) == len(list(zoo().parameters()))
    custom = select_parameters(zoo(), lambda module, name, p: isinstance(module, nn.Linear))
    assert [n for n, _ in custom] == ["4.weight", "4.bias"]


def test_penalties_match_keras_formula_and_are_differentiable():
    torch.manual_seed(0)
    model = zoo()
    w = [model[0].weight, model[4].weight]
    l2 = L2(0.3).penalty(model)
    assert torch.allclose(l2, 0.3 * sum((p**2).sum() for p in w))
    l1 = L1(0.2).penalty(model)
    assert torch.allclose(l1, 0.2 * sum(p.abs().sum() for p in w))
    both = L1L2(0.2, 0.3).penalty(model)
    assert torch.allclose(both, l1 + l2)
    both.backward()
    assert model[4].bias.grad is None and model[1].weight.grad is None  # biases, norm params untouched
    expected = 0.2 * torch.sign(model[4].weight) + 2 * 0.3 * model[4].weight
    assert torch.allclose(model[4].weight.grad, expected)
    assert L1L2()(w).item() == 0.0


def test_functional_penalties_per_member_equal_member_by_member():
    torch.manual_seed(0)
    ws = [torch.randn(3, 5, 4), torch.randn(3, 2, 5)]
    s = torch.tensor([0.0, 0.1, 2.0])
    for fn, ref in ((l2_penalty, lambda w: (w**2).sum()), (l1_penalty, lambda w: w.abs().sum())):
        got = fn(ws, s)
        assert got.shape == (3,)
        want = torch.stack([s[m] * sum(ref(w[m]) for w in ws) for m in range(3)])
        assert torch.allclose(got, want)
    assert torch.allclose(l1l2_penalty(ws, s, s), l1_penalty(ws, s) + l2_penalty(ws, s))
    assert L2(s).penalty(StackedLinear(3, 4, 2)).shape == (3,)
    with pytest.raises(ValueError, match="l2_penalty: input must be stacked on a leading member dim of size 3"):
        l2_penalty(torch.randn(2, 4), s)


def test_l2_and_l1_shrink_weights_as_predicted_under_sgd():
    w0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    lr, l2, l1, steps = 0.1, 0.25, 0.05, 5
    for reg, closed in ((L2(l2), w0 * (1 - 2 * lr * l2) ** steps), (L1(l1), w0 - steps * lr * l1 * torch.sign(w0))):
        w = nn.Parameter(w0.clone())
        opt = torch.optim.SGD([w], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            reg(w).backward()
            opt.step()
        assert torch.allclose(w.detach(), closed, atol=1e-6)


def test_decoupled_decay_closed_form_and_per_member():
    w = torch.ones(3, 2, 2)
    lr, lam = 0.1, torch.tensor([0.0, 0.5, 1.0])
    for _ in range(4):
        decoupled_decay_([w], lr, lam)
    assert torch.allclose(w[:, 0, 0], (1 - lr * lam) ** 4)
    g = torch.zeros(3, 2, 2)
    p = torch.ones(3, 2, 2, requires_grad=True)
    p.grad = g
    coupled_decay_(p, lam)
    assert torch.allclose(p.grad[:, 0, 0], lam)


def _train(opt_factory, decoupled: float | None = None, steps: int = 15, scheduler: bool = False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = opt_factory(model.parameters())
    if decoupled is not None:
        DecoupledWeightDecay(opt, decoupled)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5) if scheduler else None
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if sched:
            sched.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_coupled_and_decoupled_coincide_for_plain_sgd():
    lr, lam = 0.1, 0.05
    coupled = _train(lambda ps: torch.optim.SGD(ps, lr=lr, weight_decay=lam))
    decoupled = _train(lambda ps: torch.optim.SGD(ps, lr=lr), decoupled=lam)
    assert torch.allclose(coupled, decoupled, atol=1e-6)


def test_coupled_and_decoupled_differ_under_adam_and_decoupled_adam_is_adamw():
    lr, lam = 0.01, 0.5
    coupled = _train(lambda ps: torch.optim.Adam(ps, lr=lr, weight_decay=lam))
    decoupled = _train(lambda ps: torch.optim.Adam(ps, lr=lr), decoupled=lam)
    assert (coupled - decoupled).abs().max() > 1e-3
    adamw = _train(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=lam))
    assert torch.equal(decoupled, adamw)  # bit for bit
    with_sched = _train(lambda ps: torch.optim.Adam(ps, lr=lr), decoupled=lam, scheduler=True)
    assert torch.equal(with_sched, _train(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=lam), scheduler=True))


def test_decoupled_weight_decay_on_params_and_subset_and_remove():
    w, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    manual = DecoupledWeightDecay([w], 0.5)
    manual.step(lr=0.1)
    assert torch.allclose(w.detach(), torch.full((2, 2), 0.95))
    with pytest.raises(ValueError, match="DecoupledWeightDecay.step: lr must be"):
        manual.step()
    opt = torch.optim.SGD([w, b], lr=0.1)
    hooked = DecoupledWeightDecay(opt, 0.5, params=[w])
    w.grad, b.grad = torch.zeros(2, 2), torch.zeros(2)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((2, 2), 0.95**2)) and torch.equal(b.detach(), torch.ones(2))
    hooked.remove()
    opt.step()
    assert torch.allclose(w.detach(), torch.full((2, 2), 0.95**2))


def test_param_groups_weight_decay_excludes_biases_and_norms():
    model = zoo()
    no_decay, decay = param_groups_weight_decay(model, 0.1, no_weight_decay_list=("0.weight",))
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [model[4].weight.shape]
    assert len(no_decay["params"]) + 1 == len(list(model.parameters()))
    before = model[4].bias.detach().clone()
    opt = torch.optim.SGD([no_decay, decay], lr=1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    w = model[4].weight.detach().clone()
    opt.step()
    assert torch.allclose(model[4].weight.detach(), 0.9 * w) and torch.equal(model[4].bias.detach(), before)
