"""The :class:`Split` container and the seeded, stratified splitting behind it.

Everything here works on plain numpy arrays until :func:`make_split` turns
the final parts into tensors: ``x`` float32 of shape ``(N, *input_shape)``,
``y`` int64 of shape ``(N,)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DatasetError

__all__ = ["Split", "check_arrays", "stratified_split", "make_split", "carve_test",
           "TEST_FRACTION", "TEST_SEED"]

# Datasets without an official test split (scikit-learn's, mnist5k, CSV files)
# get one carved off with this fraction and this seed, whatever ``seed`` the
# caller passes: the test set of a dataset never moves.
TEST_FRACTION = 0.2
TEST_SEED = 0

# Independent random streams per purpose, so changing n_train never moves the
# validation set and changing seed never moves a fixed test split.
_VAL_STREAM = 1
_SUBSET_STREAM = 2
_TEST_STREAM = 3


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """A dataset split into train / validation / test tensors held in memory.

    ``x_*`` are float32 of shape ``(N, *input_shape)``; ``y_*`` are int64 class
    labels of shape ``(N,)`` in ``[0, num_classes)``. ``meta`` is a plain,
    JSON-friendly dict: ``name``, ``source``, ``sizes`` (train/val/test),
    ``class_counts`` (per part, a list of length ``num_classes``),
    ``test_split``, ``n_train``, ``val_fraction``, ``seed``, ``standardize``.

    Examples:
        >>> import torch
        >>> x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
        >>> s = Split("toy", x, y, x[:2], y[:2], x[:2], y[:2], 2, (2,),
        ...           {"sizes": {"train": 4, "val": 2, "test": 2}})
        >>> s.summary()
        'toy: 4 train / 2 val / 2 test, 2 classes, input (2,)'
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple
    meta: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: name, part sizes, number of classes, input shape."""
        line = (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val / "
            f"{len(self.y_test)} test, {self.num_classes} classes, input {self.input_shape}"
        )
        if self.meta.get("standardize"):
            line += ", standardized"
        return line

    def __repr__(self) -> str:
        return f"Split({self.summary()})"


def check_arrays(label: str, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Check ``x_train, y_train, x_test, y_test`` from one source; labels come back as int64.

    ``label`` names the source (a file, a built-in) in every message.

    Examples:
        >>> x, y = np.zeros((2, 3)), np.array([0, 1])
        >>> sorted(check_arrays("f", x_train=x, y_train=y, x_test=x, y_test=y))
        ['x_test', 'x_train', 'y_test', 'y_train']
        >>> check_arrays("f", x_train=x, y_train=np.array([0, -1]), x_test=x, y_test=y)
        Traceback (most recent call last):
        ...
        regulab.errors.DatasetError: f: y_train must hold non-negative integer class labels, got -1 (row 1)
    """
    out = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype.kind not in "biuf":
            raise DatasetError(f"{label}: x_{part} must hold numbers, got dtype {x.dtype}")
        if y.dtype.kind not in "biuf":
            raise DatasetError(f"{label}: y_{part} must hold integer class labels, got dtype {y.dtype}")
        if x.ndim < 2 or y.ndim != 1:
            raise DatasetError(
                f"{label}: x_{part} must have shape (N, ...) and y_{part} shape (N,), got "
                f"{x.shape} and {y.shape}"
            )
        if len(x) != len(y):
            raise DatasetError(
                f"{label}: x_{part} has {len(x)} examples but y_{part} has {len(y)} labels; "
                "they must match"
            )
        if len(y) == 0:
            raise DatasetError(f"{label}: the {part} part is empty (0 examples)")
        # Integer pixels cannot be NaN: only float data is scanned (and none is copied).
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.dtype.kind == "f" else None
        if bad is not None and bad.any():
            raise DatasetError(
                f"{label}: x_{part} has NaN or infinite values in {int(bad.sum())} rows "
                f"(first at row {int(np.argmax(bad))}); clean or drop them first"
            )
        yf = y.astype(np.float64)
        wrong = ~np.isfinite(yf) | (yf < 0) | (yf != np.round(yf))
        if wrong.any():
            i = int(np.argmax(wrong))
            raise DatasetError(
                f"{label}: y_{part} must hold non-negative integer class labels, got "
                f"{y[i].item()!r} (row {i})"
            )
        out[f"x_{part}"], out[f"y_{part}"] = x, yf.astype(np.int64)
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DatasetError(
            f"{label}: x_train and x_test must have the same example shape, got "
            f"{out['x_train'].shape[1:]} and {out['x_test'].shape[1:]}"
        )
    classes = np.unique(out["y_train"])
    if len(classes) < 2:
        raise DatasetError(
            f"{label}: the labels must cover at least 2 classes, got {len(classes)} "
            f"(only class {int(classes[0])})"
        )
    return out


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _allocate(counts: np.ndarray, k: int, keep_rest: bool) -> np.ndarray:
    """Per-class share of ``k``, proportional to ``counts``, summing to ``k`` exactly.

    Each class gets at least 1 and, when ``keep_rest``, at most ``count - 1``;
    ``k`` is clipped into the range where that is possible.
    """
    hi = counts - 1 if keep_rest else counts
    k = int(np.clip(k, len(counts), hi.sum()))
    exact = counts * (k / counts.sum())
    take = np.clip(np.floor(exact).astype(np.int64), 1, hi)
    while take.sum() < k:  # largest remainder first, among classes with room
        gap = np.where(take < hi, exact - take, -np.inf)
        take[np.argmax(gap)] += 1
    while take.sum() > k:  # the 1-per-class floor overshot: trim the most over-served
        gap = np.where(take > 1, exact - take, np.inf)
        take[np.argmin(gap)] -= 1
    return take


def stratified_split(y: np.ndarray, k: int, seed: int, stream: int, *, where: str,
                     part: str, keep_rest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pick about ``k`` indices of ``y`` stratified by class; return (picked, rest), sorted.

    Every class present gets at least one picked index and, when
    ``keep_rest``, keeps at least one in the rest, so a class needs two
    examples. Deterministic for a given (y, k, seed, stream).

    Examples:
        >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> a, b = stratified_split(y, 2, 0, 1, where="w", part="val")
        >>> sorted(y[a].tolist()), len(b)
        ([0, 1], 6)
    """
    classes, counts = np.unique(y, return_counts=True)
    if keep_rest and counts.min() < 2:
        c, n = int(classes[counts.argmin()]), int(counts.min())
        raise DatasetError(
            f"{where}: class {c} has only {n} example in the {part}, too few to split it "
            f"stratified (each class needs at least 2); add examples of class {c} or remove it"
        )
    take = _allocate(counts, k, keep_rest)
    rng = _rng(seed, stream)
    picked, rest = [], []
    for c, t in zip(classes, take):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        picked.append(idx[:t])
        rest.append(idx[t:])
    return np.sort(np.concatenate(picked)), np.sort(np.concatenate(rest))


def _standardize(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Per-feature mean/std fitted on ``x_train`` only; constant features are only centred.

    Works in float32 with float64 accumulators: full-size float64 temporaries
    would triple the time and memory on MNIST-sized data.
    """
    centred = x_train.astype(np.float32)  # (N, *shape), a copy
    mean = centred.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred -= mean
    std = np.sqrt(np.square(centred).mean(axis=0, dtype=np.float64))
    std[std == 0] = 1.0  # a constant feature would divide by zero
    std = std.astype(np.float32)
    centred /= std
    out = [centred]
    for a in others:
        b = a.astype(np.float32)
        b -= mean
        b /= std
        out.append(b)
    return out


def _class_counts(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(y, minlength=num_classes).tolist()


def make_split(name: str, source: str, x_train: np.ndarray, y_train: np.ndarray,
               x_test: np.ndarray, y_test: np.ndarray, *, test_split: str, n_train: int | None,
               val_fraction: float, seed: int, standardize: bool, where: str) -> Split:
    """Carve validation (and the ``n_train`` subset) from a checked train part, build the Split.

    The validation set is drawn first from the whole training part, so it does
    not depend on ``n_train``; the ``n_train`` examples are then drawn from
    what is left. Both draws are stratified and seeded.
    """
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    n_present = len(np.unique(y_train))
    if n_train is not None and n_train < n_present:
        raise DatasetError(
            f"{where}: n_train must be >= {n_present} (one example per class of {name!r}), "
            f"got {n_train}"
        )
    n_val = max(1, int(round(val_fraction * len(y_train))))
    val_idx, rest_idx = stratified_split(y_train, n_val, seed, _VAL_STREAM, where=where,
                                         part="training part")
    if n_train is not None:
        available = len(rest_idx)
        if n_train > available:
            raise DatasetError(
                f"{where}: n_train must be <= {available} (the training examples of {name!r} left "
                f"after the validation split), got {n_train}; lower n_train or val_fraction"
            )
        if n_train < available:
            sub, _ = stratified_split(y_train[rest_idx], n_train, seed, _SUBSET_STREAM,
                                      where=where, part="training part", keep_rest=False)
            rest_idx = rest_idx[sub]
    xtr, ytr = x_train[rest_idx], y_train[rest_idx]
    xva, yva = x_train[val_idx], y_train[val_idx]
    if standardize:
        xtr, xva, xte = _standardize(xtr, xva, x_test)
    else:
        xtr, xva, xte = (a.astype(np.float32) for a in (xtr, xva, x_test))
    parts = {"train": ytr, "val": yva, "test": y_test}
    meta = {
        "name": name,
        "source": source,
        "sizes": {k: int(len(v)) for k, v in parts.items()},
        "class_counts": {k: _class_counts(v, num_classes) for k, v in parts.items()},
        "test_split": test_split,
        "n_train": n_train,
        "val_fraction": val_fraction,
        "seed": seed,
        "standardize": standardize,
    }

    def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return Split(name, t(xtr, torch.float32), t(ytr, torch.int64), t(xva, torch.float32),
                 t(yva, torch.int64), t(xte, torch.float32), t(y_test, torch.int64),
                 num_classes, tuple(int(d) for d in x_train.shape[1:]), meta)


def carve_test(x: np.ndarray, y: np.ndarray, *, where: str) -> tuple[np.ndarray, ...]:
    """Fixed stratified test split (TEST_FRACTION, TEST_SEED) for data that ships without one."""
    n_test = max(1, int(round(TEST_FRACTION * len(y))))
    test_idx, train_idx = stratified_split(y, n_test, TEST_SEED, _TEST_STREAM, where=where,
                                           part="dataset")
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


TEST_SPLIT_NOTE = f"stratified {TEST_FRACTION:.0%} of the data, fixed seed {TEST_SEED}"
