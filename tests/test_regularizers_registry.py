"""The REGULARIZERS registry, and bad arguments generated from the constraint table."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import regulab.regularizers as R
from regulab._validate import CONSTRAINTS, OneOf

SUBMODULES = [R.penalties, R.decay, R.constraints, R.smoothing, R.noise, R.augment, R.augment_image, R.mixing,
              R.early_stopping]
NAMES = {n for m in SUBMODULES for n in m.__all__}
MINE = sorted(k for k in CONSTRAINTS if k[0].split(".")[0] in NAMES)

X1, X2 = torch.randn(2, 8), torch.randn(2, 1, 4, 4)
Y = torch.tensor([0, 1])
W = [torch.randn(3, 3)]


def _penalty_model(cls):
    return lambda **kw: cls(**kw).penalty(nn.Linear(2, 2))


# where -> a call that uses valid values except the keyword under test.
FACTORIES = {
    "l1_penalty": lambda **kw: R.l1_penalty(W, **kw),
    "l2_penalty": lambda **kw: R.l2_penalty(W, **kw),
    "l1l2_penalty": lambda **kw: R.l1l2_penalty(W, **kw),
    "L1": _penalty_model(R.L1),
    "L2": _penalty_model(R.L2),
    "L1L2": _penalty_model(R.L1L2),
    "select_parameters": lambda **kw: R.select_parameters(nn.Linear(2, 2), **kw),
    "param_groups_weight_decay": lambda **kw: R.param_groups_weight_decay(nn.Linear(2, 2), **kw),
    "coupled_decay_": lambda **kw: R.coupled_decay_(W, **kw),
    "decoupled_decay_": lambda **kw: R.decoupled_decay_(W, **{"lr": 0.1, "weight_decay": 0.1, **kw}),
    "DecoupledWeightDecay": lambda **kw: R.DecoupledWeightDecay(W, **kw),
    "max_norm_": lambda **kw: R.max_norm_(torch.randn(3, 3), **kw),
    "MaxNorm": lambda **kw: R.MaxNorm(**kw),
    "label_smoothing_cross_entropy": lambda **kw: R.label_smoothing_cross_entropy(torch.randn(2, 3), Y, **kw),
    "LabelSmoothingCrossEntropy": lambda **kw: R.LabelSmoothingCrossEntropy(**kw),
    "gaussian_noise": lambda **kw: R.gaussian_noise(X1, **kw),
    "GaussianNoise": lambda **kw: R.GaussianNoise(**kw),
    "random_shift": lambda **kw: R.random_shift(X1, **kw),
    "random_scale": lambda **kw: R.random_scale(X1, **kw),
    "additive_noise": lambda **kw: R.additive_noise(X1, **kw),
    "time_mask": lambda **kw: R.time_mask(X1, **kw),
    "random_crop": lambda **kw: R.random_crop(X2, **kw),
    "horizontal_flip": lambda **kw: R.horizontal_flip(X2, **kw),
    "random_translate": lambda **kw: R.random_translate(X2, **kw),
    "cutout": lambda **kw: R.cutout(X2, **kw),
    "mixup": lambda **kw: R.mixup(X1, Y, **kw),
    "cutmix": lambda **kw: R.cutmix(X2, Y, **kw),
    "MixResult.soft_targets": lambda **kw: R.mixup(X1, Y).soft_targets(**kw),
    "EarlyStopping": lambda **kw: R.EarlyStopping(**kw),
    "EarlyStoppingRule": lambda **kw: R.EarlyStoppingRule(**{"mode": "min", **kw}),
}
CASES = [(where, param, bad) for where, param in MINE for bad in CONSTRAINTS[(where, param)].bad_values()]


def test_every_registered_constraint_has_a_factory():
    assert MINE and {w for w, _ in MINE} <= set(FACTORIES)
    assert set(FACTORIES) <= {w for w, _ in MINE}


@pytest.mark.parametrize("where,param,bad", CASES, ids=[f"{w}.{p}={b!r}" for w, p, b in CASES])
def test_bad_values_raise_house_style_errors(where, param, bad):
    with pytest.raises(ValueError) as info:
        FACTORIES[where](**{param: bad})
    msg = str(info.value)
    assert msg.startswith(f"{where}: {param} must be {CONSTRAINTS[(where, param)]}"), msg
    assert msg.split(", got ")[1].startswith(repr(bad)), msg


def good_value(where, param):
    c = CONSTRAINTS[(where, param)]
    if isinstance(c, OneOf):
        return c.choices[0]
    if (where, param) == ("random_scale", "high"):
        return 2.0  # must also be >= the default low
    return c.lo + 1 if c.integer else c.lo + 0.5


@pytest.mark.parametrize("where,param", MINE, ids=[f"{w}.{p}" for w, p in MINE])
def test_a_good_value_passes(where, param):
    FACTORIES[where](**{param: good_value(where, param)})


@pytest.mark.parametrize("bad", [torch.tensor([[0.1]]), torch.tensor([0.1, float("nan")]), torch.tensor([1, 2]),
                                 torch.tensor([-0.1, 0.2]), torch.tensor([])])
def test_bad_per_member_tensors_are_refused(bad):
    with pytest.raises(ValueError, match=r"L2: l2 must be a number >= 0 \(or a 1-D tensor of them\), got "):
        R.L2(bad)


@pytest.mark.parametrize("name", sorted(R.REGULARIZERS))
def test_registry_entries(name):
    info = R.REGULARIZERS[name]
    assert info.obj.__name__ == name and name in R.__all__
    assert info.kind in {"penalty", "decay", "constraint", "loss", "noise", "augmentation", "mixing", "early_stopping"}
    assert info.convention and "\n" not in info.convention and len(info.convention) <= 120
    doc = inspect.getdoc(info.obj)
    assert doc and "Examples:" in doc and ">>>" in doc
    summary = doc.splitlines()[0]
    assert summary.endswith(")") or summary.endswith(".") or summary.endswith("``"), summary


def test_public_api_is_documented():
    for name in R.__all__:
        obj = getattr(R, name)
        if callable(obj) and not isinstance(obj, dict):
            assert inspect.getdoc(obj), name
