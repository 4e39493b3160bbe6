"""The doctor on the model zoo: every broken model caught, no false alarm on the clean ones."""
from __future__ import annotations

import pytest
import torch

from regulab.doctor import diagnose
from zoo import broken, clean


def _input(shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def test_zoo_size():
    assert len(broken.BROKEN) >= 8 and len(clean.CLEAN) >= 5


@pytest.mark.parametrize("name", sorted(broken.BROKEN))
def test_broken_model_is_caught(name):
    shape, codes = broken.BROKEN[name]
    findings = diagnose(getattr(broken, name)(), _input(shape))
    got = {f.code for f in findings}
    assert codes <= got, f"{name}: expected {codes}, got {got}"
    # nothing unrelated piles on: the reported codes are the expected ones
    assert got == codes, f"{name}: extra findings {got - codes}"


@pytest.mark.parametrize("name", sorted(clean.CLEAN))
def test_clean_model_has_no_finding(name):
    findings = diagnose(getattr(clean, name)(), _input(clean.CLEAN[name]))
    assert findings == [], [f"{f.code}: {f.message}" for f in findings]


def test_culprit_is_innermost_module():
    (f,) = diagnose(broken.nested_culprit(), _input((64, 40)))
    assert f.where == "1.0.1.1" and f.code == "random-in-eval"
    assert "_HomemadeDropout" in f.message


def test_both_attention_blocks_named():
    findings = diagnose(broken.sdpa_dropout_always(), _input((64, 1, 40)))
    assert sorted(f.where for f in findings) == ["blocks.0.attn", "blocks.1.attn"]
    assert all(f.severity == "error" and f.details["dropout_p"] == 0.2 for f in findings)


def test_train_override_names_owner_and_stuck_modules():
    (f,) = diagnose(broken.train_not_propagated(), _input((64, 40)))
    assert f.where == "0" and f.severity == "error" and "0.2" in f.details["stuck"]
    (g,) = diagnose(broken.batchnorm_frozen_inverted(), _input((64, 1, 40)))
    assert g.where == "" and "BatchNorm" in g.message and len(g.details["stuck"]) == 5


@pytest.mark.parametrize("name", ["dropout_before_batchnorm", "functional_dropout_before_batchnorm",
                                  "dropout2d_before_batchnorm_resnet", "gaussian_dropout_before_batchnorm"])
def test_variance_ratio_beside_closed_form(name):
    shape, _ = broken.BROKEN[name]
    (f,) = diagnose(getattr(broken, name)(), _input(shape))
    d = f.details
    assert d["variance_ratio"] < 0.9  # dropout right before BN: Var_test < Var_train
    # dropout feeds BN directly here, so measured ≈ closed form (seeded, 8 passes pooled)
    assert d["variance_ratio"] == pytest.approx(d["closed_form"], rel=0.08)
    assert f"{d['variance_ratio']:.3f}" in f.message and f"{d['closed_form']:.3f}" in f.message


def test_severities():
    sev = {}
    for name, (shape, codes) in broken.BROKEN.items():
        for f in diagnose(getattr(broken, name)(), _input(shape)):
            sev[f.code] = f.severity
    assert {c for c, s in sev.items() if s == "warning"} == {
        "dropout-before-batchnorm", "dropout-on-logits", "dropout-p-high", "input-dropout-high"}
