"""Datasets in memory, split and ready: ``regulab.data.load(source) -> Split``.

Source syntax (one string or path):

* a built-in name: ``"mnist1d"`` (the default), ``"digits"``, ``"breast_cancer"``,
  ``"wine"``, ``"mnist5k"`` (needs ``pip install 'regulab[mnist5k]'``). All are
  generated or read locally; nothing is downloaded. See :mod:`regulab.data.builtin`.
* ``"path/to/file.npz"``: arrays ``x_train, y_train, x_test, y_test``, loaded with
  ``allow_pickle=False``.
* ``"path/to/file.csv"`` (or ``.csv.gz``): a header row, one column of integer
  labels (``label_column``, default ``"label"``), every other column a numeric feature.
* ``"path/to/folder"``: IDX files as MNIST, Fashion-MNIST and KMNIST ship them
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each raw or ``.gz``), in the folder itself or in
  torchvision's ``<folder>/<Name>/raw/`` layout.

Conventions:

* ``x`` tensors are float32 of shape ``(N, *input_shape)``, ``y`` int64 of shape
  ``(N,)``; ``num_classes`` is the largest label + 1. Images keep their layout for
  CNNs: ``(1, 28, 28)`` for IDX and mnist5k, ``(1, 8, 8)`` for digits; a 3-D
  ``x`` in a ``.npz`` is read as grayscale ``(N, H, W)`` and gets the channel axis.
  Vectors stay flat: mnist1d is ``(40,)``, CSV files ``(F,)``.
* Data without an official test split (scikit-learn's, mnist5k, CSV) gets a
  stratified 20% test split with a fixed seed, the same whatever ``seed`` says.
* The validation set is a stratified, seeded ``val_fraction`` of the training
  part, drawn before and independently of ``n_train``; ``n_train`` then takes a
  stratified, seeded subset of the rest. Every class keeps at least one example
  in each part, so the validation set may be slightly larger than asked for
  very small fractions.
* ``standardize`` fits a per-feature mean and std on the final training part
  only and applies it to all three parts (a constant feature is only centred).
  Without it, values come as stored (e.g. 0..255 pixels).
* The result depends only on ``(source, n_train, val_fraction, seed,
  standardize)``: loading twice gives identical tensors.

Every problem with the data or the options raises :class:`DatasetError`
(one line, naming the file and the problem).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._validate import NONNEG_INT, POS_INT, Interval, register
from ..errors import DatasetError, did_you_mean, format_error
from .builtin import BUILTINS, cache_dir, load_builtin
from .files import find_idx_folder, read_csv, read_idx_folder, read_npz
from .split import TEST_SPLIT_NOTE, Split, carve_test, check_arrays, make_split

__all__ = ["load", "Split", "DatasetError", "BUILTINS", "cache_dir"]

_WHERE = "data.load"
_VAL_FRACTION = register(_WHERE, "val_fraction", Interval(0.0, 1.0, "neither"))
_SEED = register(_WHERE, "seed", NONNEG_INT)
_N_TRAIN = register(_WHERE, "n_train", POS_INT)
_FILE_SUFFIXES = (".npz", ".csv", ".gz")


def load(source: str | os.PathLike = "mnist1d", *, n_train: int | None = None,
         val_fraction: float = 0.1, seed: int = 0, standardize: bool = True,
         label_column: str = "label") -> Split:
    """Load a dataset into memory as train / validation / test tensors.

    Args:
        source: a built-in name or a path (see the module docstring for the syntax).
        n_train: take a stratified, seeded subset of this many training examples
            (after the validation set is set aside); None keeps them all.
        val_fraction: fraction of the training part held out for validation, in (0, 1).
        seed: seeds the validation split and the ``n_train`` subset.
        standardize: per-feature standardisation fitted on the training part.
        label_column: the label column of a CSV file.

    Returns:
        A :class:`Split`.

    Raises:
        DatasetError: for any problem with the source, the data or the options.

    Examples:
        >>> s = load("digits", n_train=500, seed=1)
        >>> s.summary()
        'digits: 500 train / 144 val / 359 test, 10 classes, input (1, 8, 8), standardized'
        >>> s.x_train.dtype, tuple(s.x_train.shape), s.y_train.dtype
        (torch.float32, (500, 1, 8, 8), torch.int64)
        >>> s.meta["class_counts"]["test"]
        [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
        >>> load("digts")
        Traceback (most recent call last):
        ...
        regulab.errors.DatasetError: data.load: source must be a built-in dataset name (mnist1d, digits, breast_cancer, wine, mnist5k) or the path of a .npz file, .csv file or IDX folder, got 'digts'; did you mean 'digits'?
    """
    _check_options(n_train, val_fraction, seed, standardize, label_column)
    if isinstance(source, str) and source in BUILTINS:
        (x_tr, y_tr, x_te, y_te), test_note = load_builtin(source, _WHERE)
        name, label = source, f"{_WHERE}: {source}"
    else:
        path = _resolve_path(source)
        label = f"{_WHERE}: {str(path)!r}"
        arrays, test_note, name = _read_path(path, label_column)
        a = check_arrays(label, **arrays)
        x_tr, y_tr, x_te, y_te = (a[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        if x_tr.ndim == 3:  # grayscale (N, H, W) -> (N, 1, H, W) for CNNs
            x_tr, x_te = x_tr[:, None], x_te[:, None]
        source = str(path)
    return make_split(name, source, x_tr, y_tr, x_te, y_te, test_split=test_note,
                      n_train=n_train, val_fraction=float(val_fraction), seed=int(seed),
                      standardize=standardize, where=label)


def _fail(param: str, constraint: str, value: object, fix: str | None = None) -> DatasetError:
    return DatasetError(format_error(_WHERE, param, constraint, value, fix))


def _check_options(n_train, val_fraction, seed, standardize, label_column) -> None:
    if not _VAL_FRACTION.contains(val_fraction):
        raise _fail("val_fraction", str(_VAL_FRACTION), val_fraction)
    if not _SEED.contains(seed):
        raise _fail("seed", str(_SEED), seed)
    if n_train is not None and not _N_TRAIN.contains(n_train):
        raise _fail("n_train", f"None or {_N_TRAIN}", n_train)
    if not isinstance(standardize, bool):
        raise _fail("standardize", "True or False", standardize)
    if not isinstance(label_column, str) or not label_column:
        raise _fail("label_column", "a non-empty column name", label_column)


def _resolve_path(source: object) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise _fail("source", "a built-in dataset name or a path", source)
    text = os.fspath(source)
    looks_like_path = (not isinstance(source, str) or os.sep in text or "/" in text
                       or text.endswith(_FILE_SUFFIXES) or text.startswith("~"))
    path = Path(text).expanduser()
    if not looks_like_path and not path.exists():
        raise _fail(
            "source",
            f"a built-in dataset name ({', '.join(BUILTINS)}) or the path of a .npz file, "
            ".csv file or IDX folder",
            text,
            did_you_mean(text.lower(), BUILTINS),
        )
    if not path.exists():
        raise DatasetError(f"{_WHERE}: {text!r} does not exist (no such file or folder)")
    return path


def _name_of(path: Path) -> str:
    if path.is_dir():
        return path.name if path.name != "raw" else path.parent.name
    return path.name.removesuffix(".gz").removesuffix(".csv").removesuffix(".npz")


def _read_path(path: Path, label_column: str) -> tuple[dict[str, np.ndarray], str, str]:
    """Arrays of a file or IDX folder, how its test split was made, and the dataset's name."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if path.is_dir():
        if suffix in (".npz", ".csv", ".csv.gz"):
            raise DatasetError(f"{_WHERE}: {str(path)!r} is a folder, expected a {suffix} file")
        folder = find_idx_folder(path, _WHERE)
        return read_idx_folder(folder, _WHERE), "official", _name_of(folder)
    if suffix == ".npz":
        return read_npz(path, _WHERE), "official", _name_of(path)
    if suffix in (".csv", ".csv.gz"):
        x, y = read_csv(path, label_column, _WHERE)
        label = f"{_WHERE}: {str(path)!r}"
        x_tr, y_tr, x_te, y_te = carve_test(x, y, where=label)
        arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
        return arrays, TEST_SPLIT_NOTE, _name_of(path)
    hint = "; pass the folder that holds it" if "ubyte" in path.name else ""
    raise DatasetError(
        f"{_WHERE}: {str(path)!r} is not a supported file: expected a .npz or .csv(.gz) file, "
        f"or a folder of IDX files{hint}"
    )
