"""Variance shift measured behind dropout→BatchNorm matches Li et al.'s closed form."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import regulab
from regulab.analysis import closed_form_ratio, measured_ratio, variance_shift
from regulab.errors import RegulabError


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_closed_form_is_q_when_mean_zero(p):
    assert closed_form_ratio(p, 0.0, 2.5) == pytest.approx(1 - p)


def test_closed_form_values_and_limits():
    assert closed_form_ratio(0.2, 1.0, 1.0) == pytest.approx(1 / (2 / 0.8 - 1))
    assert closed_form_ratio(0.0, 3.0, 1.0) == pytest.approx(1.0)
    c, v = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    assert torch.allclose(closed_form_ratio(0.5, c, v), torch.tensor([0.5, 1 / 3]))
    with pytest.raises(ValueError, match="closed_form_ratio: p must be a number in \\[0, 1\\), got 1"):
        closed_form_ratio(1, 0.0, 1.0)


# Tolerance: 8 passes × 8000 rows pooled, 16 channels averaged: the Monte Carlo error of the
# mean ratio is well under 1%; 2% relative leaves room for the seed.
@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("c,v", [(0.0, 1.0), (1.0, 1.0), (2.0, 0.5)])
@pytest.mark.parametrize("layer", [nn.Dropout, regulab.nn.Dropout])
def test_measured_matches_closed_form(p, c, v, layer):
    g = torch.Generator().manual_seed(1)
    x = c + v ** 0.5 * torch.randn(8000, 16, generator=g)
    r = variance_shift((layer(p), nn.BatchNorm1d(16)), x, seed=3)
    expected = closed_form_ratio(p, c, v)
    assert r.closed_form == pytest.approx(expected, rel=0.02)
    assert r.measured == pytest.approx(expected, rel=0.02)
    assert r.per_channel.shape == (16,)


def test_conv_input_and_channel_dropout():
    x = 0.5 + torch.randn(400, 6, 50, generator=torch.Generator().manual_seed(0))  # (N, C, L)
    r = variance_shift((nn.Dropout(0.4), nn.BatchNorm1d(6)), x)
    assert r.measured == pytest.approx(closed_form_ratio(0.4, 0.5, 1.0), rel=0.03)


def test_weight_layer_between_pushes_ratio_toward_one():
    torch.manual_seed(0)
    x = torch.randn(4000, 64)
    direct = variance_shift(nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(64)), x)
    through = variance_shift(nn.Sequential(nn.Dropout(0.5), nn.Linear(64, 32), nn.BatchNorm1d(32)), x)
    assert direct.batchnorm == "1" and through.batchnorm == "2"
    assert direct.measured == pytest.approx(0.5, rel=0.03)
    assert through.measured > direct.measured


def test_named_modules_and_state_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 8), nn.BatchNorm1d(8))
    net.train()
    x = torch.randn(512, 8)
    rng = torch.get_rng_state()
    r = variance_shift(net, x, dropout="2", batchnorm="4")
    assert r.dropout == "2" and r.batchnorm == "4" and net.training and net[2].training
    assert torch.equal(torch.get_rng_state(), rng)
    assert "measured" in str(r) and "closed form" in str(r)


def test_errors():
    x = torch.randn(16, 4)
    with pytest.raises(RegulabError, match="model must contain a dropout module"):
        variance_shift(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), x)
    with pytest.raises(RegulabError, match="dropout '0' must feed a BatchNorm"):
        variance_shift(nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 4)), x)
    with pytest.raises(RegulabError, match="batchnorm must be a submodule name, got 'nope'"):
        variance_shift(nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(4)), x, batchnorm="nope")
    with pytest.raises(ValueError, match="variance_shift: repeats must be an integer >= 1, got 0"):
        variance_shift((nn.Dropout(0.5), nn.BatchNorm1d(4)), x, repeats=0)


def test_measured_ratio_nan_for_dead_channels():
    x = torch.zeros(10, 2)
    x[:, 0] = torch.arange(10.0)
    out = measured_ratio(x, x)
    assert out[0] == 1 and torch.isnan(out[1])
