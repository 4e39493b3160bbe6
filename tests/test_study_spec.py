"""Study spec: validation messages, sweeps, CLI overrides, the example and default specs."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from regulab.errors import SpecError
from regulab.study.cli import build_spec
from regulab.study.plan import expand, plan
from regulab.study.spec import DEFAULT_SPEC, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]

BAD = [
    ({"arms": {"dropout": {"p": 1.5}}}, "spec.arms.dropout.p: must be a number in [0, 1), got 1.5"),
    ({"arms": {"dropout": {"pp": 0.5}}}, "spec.arms.dropout: unknown key 'pp'; did you mean 'p'?"),
    ({"optimzer": {}}, "spec: unknown key 'optimzer'; did you mean 'optimizer'?"),
    ({"epochs": 0}, "spec.epochs: must be an integer >= 1, got 0"),
    ({"epochs": "3"}, "spec.epochs: must be an integer, got '3'"),
    ({"seeds": True}, "spec.seeds: must be an integer, got True"),
    ({"arms": {"a": {"l2": -1}}}, "spec.arms.a.l2: must be a number >= 0, got -1"),
    ({"arms": {"a": {"max_norm": 0}}}, "spec.arms.a.max_norm: must be a number > 0, got 0"),
    ({"arms": {"a": {"p": float("nan")}}}, "spec.arms.a.p: must be a number in [0, 1), got nan"),
    ({"arms": {"a": {"augment": ["shfit"]}}}, "spec.arms.a.augment.0: must be one of"),
    ({"arms": {"a": {"early_stopping": {"patince": 3}}}}, "did you mean 'patience'?"),
    ({"arms": {"a": {"early_stopping": {"baseline": float("nan")}}}},  # TOML nan; refused by the library rule
     "spec.arms.a.early_stopping.baseline: must be a number, got nan"),
    ({"optimizer": {"name": "adm"}}, "spec.optimizer.name: must be 'sgd', 'momentum', 'nesterov', 'adam' or 'adamw'"),
    ({"optimizer": {"betas": [0.9]}}, "spec.optimizer.betas: must be two numbers in [0, 1)"),
    ({"model": {"kind": "mpl"}}, "did you mean 'mlp'?"),
    ({"model": {"kind": "mlp", "channels": [3]}}, "spec.model.channels: must be left out for kind 'mlp'"),
    ({"dataset": {"n_train": -1}}, "spec.dataset.n_train: must be an integer >= 1, got -1"),
    ({"dataset": {"val_fraction": 1.0}}, "spec.dataset.val_fraction: must be a number in (0, 1), got 1.0"),
    ({"arms": {}}, "spec.arms: must be a table with at least one arm"),
    ({"sweep": [{"arm": "basline", "p": [0.1]}]}, "spec.sweep.0.arm: must be one of the arms ['baseline'], got 'basline'; did you mean 'baseline'?"),
    ({"sweep": [{"p": [0.1, 1.5]}]}, "spec.sweep.0.p: must be a number in [0, 1), got 1.5"),
    ({"selection": "acc"}, "spec.selection: must be 'val_accuracy' or 'val_loss', got 'acc'"),
]


@pytest.mark.parametrize("data,msg", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_specs_name_the_field(data, msg):
    with pytest.raises(SpecError) as e:
        plan(parse_spec(data))
    assert str(e.value).startswith(msg) or msg in str(e.value)


def test_default_spec_has_the_standard_arms():
    spec = parse_spec(DEFAULT_SPEC)
    assert spec.seeds >= 3 and len(spec.arms) == 11
    groups = plan(spec)
    assert len(groups) == 1 and len(groups[0].runs) == 33  # one stacked group


def test_example_spec_is_valid_and_sweeps_expand():
    spec = load_spec(ROOT / "examples" / "study.toml")
    runs = expand(spec)
    arms = sorted({r.arm for r in runs})
    assert "dropout p=0.1 n_train=1000" in arms and "baseline n_train=3600" in arms
    r = next(r for r in runs if r.arm == "dropout p=0.5 n_train=1000")
    assert r.config["sweep"] == {"p": 0.5, "n_train": 1000} and r.config["arm"]["p"] == 0.5
    assert r.config["dataset"]["n_train"] == 1000
    assert len({g.n_train for g in plan(spec)}) == 2  # one group per training-set size


def test_bad_toml_and_missing_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("epochs = [")
    with pytest.raises(SpecError, match="must be valid TOML"):
        load_spec(f)
    with pytest.raises(SpecError, match="must exist"):
        load_spec(tmp_path / "nope.toml")


def _args(**kw):
    base = dict(spec=None, dataset=None, model=None, arms=None, seeds=None, epochs=None, resume=None)
    return argparse.Namespace(**{**base, **kw})


def test_cli_overrides():
    d = build_spec(_args(arms="baseline,label smoothing", seeds=2, epochs=4, dataset="digits", model="cnn2d"))
    spec = parse_spec(d)
    assert list(spec.arms) == ["baseline", "label smoothing"] and spec.seeds == 2 and spec.epochs == 4
    assert spec.dataset.name == "digits" and spec.model.kind == "cnn2d"
    with pytest.raises(SpecError, match="did you mean 'baseline'"):
        build_spec(_args(arms="baselin"))
