"""MC dropout curves, ensembles, uncertainty and calibration on tensors and a small trained model."""
from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from regulab.analysis.calibration import calibration_bins, expected_calibration_error, plot_reliability
from regulab.analysis.mc import (MCCurve, ensemble_curve, entropy, error_curve, first_T_within_sd, mc_sample_probs,
                                 mc_report, mutual_information, plot_mc, predict_probs,
                                 predictive_entropy)
from regulab.errors import RegulabError


def _probs(t, n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(t, n, c, generator=g, dtype=torch.float64), -1)


# --- calibration -------------------------------------------------------------------------------
def test_ece_calibrated_vs_overconfident():
    g = torch.Generator().manual_seed(0)
    n = 20000
    conf = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)
    correct = torch.rand(n, generator=g, dtype=torch.float64) < conf  # right exactly conf of the time
    probs = torch.stack([conf, 1 - conf], 1)
    y = torch.where(correct, 0, 1)
    assert expected_calibration_error(probs, y) < 0.02  # sampling noise only
    sharp = torch.stack([torch.full((n,), 0.99, dtype=torch.float64), torch.full((n,), 0.01, dtype=torch.float64)], 1)
    acc = float(correct.double().mean())
    assert expected_calibration_error(sharp, y) == pytest.approx(0.99 - acc, abs=1e-9)


def test_calibration_bins_and_errors():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    conf, acc, count = calibration_bins(probs, torch.tensor([0, 1]), n_bins=4)
    assert count.tolist() == [0, 0, 1, 1] and acc[3] == 1 and acc[2] == 0  # conf 1.0 lands in the top bin
    with pytest.raises(ValueError, match="expected_calibration_error: n_bins must be an integer >= 1, got 0"):
        expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=0)
    with pytest.raises(RegulabError, match=r"probs must be \(N, C\) with y of shape \(N,\)"):
        expected_calibration_error(probs, torch.tensor([0]))


# --- uncertainty -------------------------------------------------------------------------------
def test_entropy_and_mutual_information():
    assert float(entropy(torch.full((4,), 0.25))) == pytest.approx(math.log(4))
    assert float(entropy(torch.tensor([1.0, 0.0]))) == 0.0
    same = _probs(1, 30, 5).expand(8, 30, 5)
    assert mutual_information(same).abs().max() < 1e-12  # no disagreement, no epistemic part
    s = _probs(8, 30, 5)
    mi = mutual_information(s)
    assert (mi >= -1e-12).all() and (mi <= predictive_entropy(s) + 1e-12).all()


# --- curves ------------------------------------------------------------------------------------
def test_error_curve_matches_explicit_average():
    s, y = _probs(3 * 20, 50, 4), torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1))
    cur = error_curve(s, y, [1, 5, 20], repeats=3)
    groups = s.reshape(3, 20, 50, 4)
    for k, t in enumerate([1, 5, 20]):
        errs = torch.stack([(groups[r, :t].mean(0).argmax(-1) != y).double().mean() for r in range(3)])
        assert cur.mean[k] == pytest.approx(float(errs.mean())) and cur.sd[k] == pytest.approx(float(errs.std()))
    with pytest.raises(ValueError, match=r"error_curve: Ts must lie in \[1, 20\]"):
        error_curve(s, y, [21], repeats=3)


def test_identical_passes_give_flat_curve():
    p = _probs(1, 40, 3)
    y = torch.zeros(40, dtype=torch.long)
    cur = error_curve(p.expand(10, 40, 3), y, range(1, 6), repeats=2, weight_scaling=p[0])
    assert torch.allclose(cur.mean, torch.full((5,), cur.weight_scaling, dtype=torch.float64))
    assert (cur.sd == 0).all() and first_T_within_sd(cur) == 1


def test_ensemble_curve_ends_at_full_average():
    m, y = _probs(5, 60, 3), torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(2))
    cur = ensemble_curve(m, y, orders=6)
    assert cur.Ts == [1, 2, 3, 4, 5] and cur.sd[-1] == 0
    assert cur.mean[-1] == pytest.approx(float((m.mean(0).argmax(-1) != y).double().mean()))


def test_first_T_within_sd():
    cur = MCCurve([1, 2, 5, 10], torch.tensor([0.30, 0.22, 0.205, 0.201]), torch.tensor([0.02, 0.01, 0.01, 0.005]), 0.2)
    assert first_T_within_sd(cur) == 5
    cur = MCCurve([1, 2], torch.tensor([0.3, 0.3]), torch.tensor([0.01, 0.01]), 0.2)
    assert first_T_within_sd(cur) is None


# --- a small trained model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread avoids spin-waiting on a busy machine
    try:
        for _ in range(150):
            idx = torch.randint(0, 1400, (128,))
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net, x[1400:], y[1400:]


def _manual_mc(net, x, n):  # test helper: dropout layers on, everything else eval
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    with torch.no_grad():
        out = torch.stack([torch.softmax(net(x).double(), -1) for _ in range(n)])
    net.eval()
    return out


def test_mc_on_trained_model(trained, tmp_path):
    net, x, y = trained
    ws = predict_probs(net, x)
    torch.manual_seed(0)
    s = _manual_mc(net, x, 4 * 50)
    cur = error_curve(s, y, [1, 2, 5, 10, 20, 50], repeats=4, weight_scaling=ws)
    assert cur.weight_scaling < 0.15
    assert cur.mean[0] > cur.mean[-1]  # one stochastic pass is worse than fifty
    assert abs(float(cur.mean[-1]) - cur.weight_scaling) < 0.02  # T=50 ≈ weight scaling (Srivastava Fig. 11)
    assert float(mutual_information(s[:50]).mean()) > 0
    fig = plot_mc(cur, ensemble_curve(torch.stack([ws, s[0], s[1]]), y))
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "mc.png")
    rel = plot_reliability({"weight scaling": ws, "MC T=50": s[:50].mean(0)}, y)
    rel.savefig(tmp_path / "rel.png")
    assert (tmp_path / "rel.png").stat().st_size > 1000


def test_mc_sample_probs(trained):
    net, x, y = trained
    before = [m.training for m in net.modules()]
    s = mc_sample_probs(net, x[:20], 8, seed=1)
    assert s.shape == (8, 20, 10) and not torch.equal(s[0], s[1])
    assert torch.equal(s, mc_sample_probs(net, x[:20], 8, seed=1))
    assert [m.training for m in net.modules()] == before  # modes restored
    rep = mc_report(net, x, y, Ts=[1, 10, 50], repeats=3, members=[net, net])
    d = rep.to_dict()
    assert d["Ts"] == [1, 10, 50] and set(d["error"]) == {"weight scaling", "MC T=50", "ensemble of 2"}
    assert d["mutual_information"]["ensemble of 2"] == pytest.approx(0, abs=1e-12)  # identical members
    assert d["error"]["MC T=50"] == pytest.approx(d["error"]["weight scaling"], abs=0.03)
    assert set(rep.figures()) == {"mc_curve", "reliability"}
