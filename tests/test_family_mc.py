"""MC dropout (modes switched and restored) and dropout rate schedules."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import regulab
from regulab.schedules import DropoutSchedule, scheduled_rate


def _net():
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), regulab.nn.Dropout(0.3),
        nn.AlphaDropout(0.1), regulab.nn.ConcreteDropout(nn.Sequential(nn.Linear(16, 4), nn.BatchNorm1d(4))),
    )


def test_mc_dropout_switches_only_dropout_modules_and_restores():
    net = _net().train()
    net[1].eval()  # a mixed starting state must come back exactly
    before = [m.training for m in net.modules()]
    with regulab.mc_dropout(net):
        for m in net.modules():
            expect = regulab.nn.is_dropout_module(m)
            assert m.training is expect, m
    assert [m.training for m in net.modules()] == before


def test_mc_dropout_restores_modes_on_error():
    net = _net().eval()
    with pytest.raises(KeyError), regulab.mc_dropout(net):
        raise KeyError("boom")
    assert not any(m.training for m in net.modules())


def test_mc_predict_samples_differ_and_batchnorm_is_untouched():
    net = _net()
    net(torch.randn(32, 6))  # some running statistics
    net.eval()
    stats = net[1].running_mean.clone()
    x = torch.randn(5, 6)
    ys = regulab.mc_predict(net, x, samples=8)
    assert ys.shape == (8, 5, 4) and not ys.requires_grad
    assert not torch.equal(ys[0], ys[1])
    assert torch.equal(net[1].running_mean, stats) and not net.training
    with pytest.raises(ValueError, match="mc_predict: samples must be an integer >= 1"):
        regulab.mc_predict(net, x, samples=0)


def test_functional_dropout_follows_its_module_flag_unless_included():
    class Custom(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=self.training)

    net = nn.Sequential(nn.Identity(), Custom()).eval()
    x = torch.ones(1000)
    assert torch.equal(regulab.mc_predict(net, x, samples=2)[0], x)  # documented limit
    ys = regulab.mc_predict(net, x, samples=2, include=(Custom,))
    assert (ys == 0).any()


def test_mc_dropout_turns_on_drop_connect_parametrizations():
    lin = regulab.nn.drop_connect(nn.Linear(8, 8), 0.5).eval()
    x = torch.randn(2, 8)
    ys = regulab.mc_predict(lin, x, samples=3)
    assert not torch.equal(ys[0], ys[1])
    assert torch.equal(lin(x), lin(x))


@pytest.mark.parametrize("kind,t,want", [
    ("constant", 7, 0.5), ("linear", 0, 0.5), ("linear", 5, 0.3), ("linear", 99, 0.1),
    ("cosine", 0, 0.5), ("cosine", 5, 0.3), ("cosine", 10, 0.1), ("exp", 0, 0.5),
])
def test_scheduled_rate_values(kind, t, want):
    assert math.isclose(scheduled_rate(kind, t, 10, 0.5, 0.1), want, abs_tol=1e-12)


def test_exp_curriculum_and_monotone_ramp():
    ps = [scheduled_rate("exp", t, 100, 0.0, 0.5) for t in range(0, 101, 10)]
    assert ps == sorted(ps) and ps[-1] > 0.4999
    ramp = [scheduled_rate("linear", t, 4, 0.0, 0.4) for t in range(5)]
    assert ramp == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_dropout_schedule_drives_every_dropout_module_but_learnt_rates():
    net = _net()
    sched = DropoutSchedule(net, "linear", 0.0, 0.4, total=4, by="epoch")
    scheduled = [m for m in net.modules() if regulab.nn.is_dropout_module(m)]
    concrete = net[6]
    p0 = concrete.p
    for _ in range(2):
        sched.step()
    assert all(m.p == 0.2 for m in scheduled if m is not concrete)
    assert concrete.p == p0
    state = sched.state_dict()
    other = DropoutSchedule(net, "linear", 0.0, 0.4, total=4)
    other.load_state_dict(state)
    assert other.t == 2 and net[3].p == 0.2


def test_relative_schedule_keeps_per_layer_ratios():
    net = nn.Sequential(*[regulab.nn.DropPath(p) for p in regulab.ops.drop_path_rates(0.3, 4)])
    sched = DropoutSchedule(net, "linear", 0.0, 1.0, total=2, relative=True)
    assert [m.p for m in net] == [0.0] * 4
    sched.step()
    assert [m.p for m in net] == [0.0, 0.05, 0.1, 0.15]


@pytest.mark.parametrize("kwargs,msg", [
    ({"kind": "lineer"}, "DropoutSchedule: kind must be one of"),
    ({"total": 0}, "DropoutSchedule: total must be an integer >= 1"),
    ({"p_end": 1.5}, r"DropoutSchedule: p_end must be a number in \[0, 1\]"),
    ({"by": "batch"}, "DropoutSchedule: by must be one of 'step', 'epoch'"),
])
def test_schedule_errors_in_house_style(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        DropoutSchedule(_net(), **kwargs)
