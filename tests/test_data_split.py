"""Options of regulab.data.load: splits, subsets, standardisation, determinism, bad values."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from regulab import errors
from regulab._validate import CONSTRAINTS
from regulab.data import DatasetError, Split, load
from regulab.data.split import stratified_split

FIELDS = ["name", "x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "num_classes",
          "input_shape", "meta"]


def _npz(tmp_path, n_train=200, n_test=50, classes=4, features=6, seed=0, name="d.npz"):
    rng = np.random.default_rng(seed)
    y = np.arange(n_train) % classes
    x = rng.normal(size=(n_train, features)) + y[:, None]
    x[:, 2] = 3.0  # a constant feature
    xt = rng.normal(size=(n_test, features))
    p = tmp_path / name
    np.savez(p, x_train=x, y_train=y, x_test=xt, y_test=np.arange(n_test) % classes)
    return p


def test_split_fields_are_the_agreed_ones():
    assert [f.name for f in dataclasses.fields(Split)] == FIELDS
    assert errors.DatasetError is DatasetError


def test_split_is_frozen_and_summarises(tmp_path):
    s = load(_npz(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"
    assert s.summary() == "d: 180 train / 20 val / 50 test, 4 classes, input (6,), standardized"
    assert repr(s) == f"Split({s.summary()})"


def test_loading_is_deterministic(tmp_path):
    p = _npz(tmp_path)
    a, b = load(p, n_train=100, seed=3), load(p, n_train=100, seed=3)
    for f in FIELDS[1:7]:
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.meta == b.meta
    c = load(p, n_train=100, seed=4)
    assert not torch.equal(a.x_val, c.x_val)


def test_validation_set_does_not_depend_on_n_train(tmp_path):
    p = _npz(tmp_path)
    full = load(p, standardize=False, seed=2)
    sub = load(p, standardize=False, seed=2, n_train=40)
    assert torch.equal(full.x_val, sub.x_val) and torch.equal(full.y_val, sub.y_val)
    assert sub.meta["sizes"] == {"train": 40, "val": 20, "test": 50}
    assert sub.meta["class_counts"]["train"] == [10, 10, 10, 10]
    # the subset is drawn from the training part, never from validation
    train_rows = {tuple(r) for r in full.x_train.tolist()}
    assert {tuple(r) for r in sub.x_train.tolist()} <= train_rows


def test_n_train_equal_to_available_keeps_everything(tmp_path):
    p = _npz(tmp_path)
    full = load(p, standardize=False)
    assert torch.equal(load(p, standardize=False, n_train=180).x_train, full.x_train)


def test_validation_split_is_stratified():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    val, rest = stratified_split(y, 10, seed=0, stream=1, where="w", part="p")
    assert np.bincount(y[val]).tolist() == [5, 3, 2]
    assert len(np.intersect1d(val, rest)) == 0 and len(val) + len(rest) == 100
    # every class keeps one example on each side, even for a tiny fraction
    val, _ = stratified_split(y, 1, seed=0, stream=1, where="w", part="p")
    assert np.bincount(y[val]).tolist() == [1, 1, 1]


def test_standardisation_is_fitted_on_train_only(tmp_path):
    p = _npz(tmp_path)
    raw, s = load(p, standardize=False, n_train=60), load(p, n_train=60)
    mean = raw.x_train.double().mean(0)
    std = raw.x_train.double().std(0, unbiased=False)
    std[std == 0] = 1
    for part in ("x_train", "x_val", "x_test"):
        expect = ((getattr(raw, part).double() - mean) / std).float()
        assert torch.allclose(getattr(s, part), expect, atol=1e-5), part
    assert torch.all(s.x_train[:, 2] == 0)  # constant feature: centred, not divided by 0
    assert torch.isfinite(s.x_test).all()


def test_num_classes_is_largest_label_plus_one(tmp_path):
    p = tmp_path / "gap.npz"
    y = np.array([0, 2] * 20)
    np.savez(p, x_train=np.arange(40.0)[:, None], y_train=y, x_test=np.zeros((4, 1)),
             y_test=np.array([0, 2, 0, 2]))
    s = load(p)
    assert s.num_classes == 3 and s.meta["class_counts"]["test"] == [2, 0, 2]


# ---- bad option values, generated from the constraint table -----------------------------

def _load_cases():
    for (where, param), constraint in sorted(CONSTRAINTS.items(), key=str):
        if where != "data.load":
            continue
        for bad in constraint.bad_values():
            if param == "n_train" and bad is None:
                continue  # None means "all of them"
            yield pytest.param(param, bad, id=f"{param}={bad!r}")


@pytest.mark.parametrize("param,bad", list(_load_cases()))
def test_bad_option_values_are_refused_in_house_style(param, bad):
    with pytest.raises(DatasetError) as e:
        load("wine", **{param: bad})
    assert str(e.value).startswith(f"data.load: {param} must be ")
    assert str(e.value).endswith(f"got {bad!r}")


@pytest.mark.parametrize("kwargs,message", [
    (dict(val_fraction=1.0), "data.load: val_fraction must be a number in (0, 1), got 1.0"),
    (dict(seed=-1), "data.load: seed must be an integer >= 0, got -1"),
    (dict(n_train=0), "data.load: n_train must be None or an integer >= 1, got 0"),
    (dict(standardize="yes"), "data.load: standardize must be True or False, got 'yes'"),
    (dict(label_column=""), "data.load: label_column must be a non-empty column name, got ''"),
    (dict(n_train=2), "data.load: wine: n_train must be >= 3 (one example per class of 'wine'), got 2"),
    (dict(n_train=500), "data.load: wine: n_train must be <= 128 (the training examples of 'wine' "
                        "left after the validation split), got 500; lower n_train or val_fraction"),
])
def test_option_messages(kwargs, message):
    with pytest.raises(DatasetError) as e:
        load("wine", **kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("source,hint", [
    ("digts", "; did you mean 'digits'?"),
    ("MNIST1D", "; did you mean 'mnist1d'?"),
    ("cifar10", ""),
])
def test_unknown_builtin_suggests_a_name(source, hint):
    with pytest.raises(DatasetError) as e:
        load(source)
    assert str(e.value) == (
        "data.load: source must be a built-in dataset name (mnist1d, digits, breast_cancer, wine, "
        f"mnist5k) or the path of a .npz file, .csv file or IDX folder, got {source!r}{hint}"
    )


def test_source_of_the_wrong_type():
    with pytest.raises(DatasetError, match=r"^data.load: source must be a built-in dataset name "
                                           r"or a path, got 3$"):
        load(3)


def test_class_too_small_for_the_validation_split(tmp_path):
    p = tmp_path / "small.npz"
    y = np.array([0] * 10 + [1] * 10 + [2])
    np.savez(p, x_train=np.arange(21.0)[:, None], y_train=y, x_test=np.zeros((3, 1)),
             y_test=np.array([0, 1, 2]))
    with pytest.raises(DatasetError) as e:
        load(p)
    assert str(e.value) == (
        f"data.load: '{p}': class 2 has only 1 example in the training part, too few to split it "
        "stratified (each class needs at least 2); add examples of class 2 or remove it"
    )
