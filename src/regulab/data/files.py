"""Readers for user files: IDX folders (MNIST family), ``.npz`` and CSV.

Each reader returns plain numpy arrays and raises :class:`DatasetError` that
names the file and the problem; nothing from numpy, gzip or csv leaks out.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError, did_you_mean

__all__ = ["find_idx_folder", "read_idx_folder", "read_npz", "read_csv"]

# IDX type byte -> numpy dtype (the format is big-endian).
_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PARTS = {  # role -> (file stem, dims)
    "train images": ("train-images-idx3-ubyte", 3),
    "train labels": ("train-labels-idx1-ubyte", 1),
    "test images": ("t10k-images-idx3-ubyte", 3),
    "test labels": ("t10k-labels-idx1-ubyte", 1),
}
_IDX_HINT = ", ".join(f"{stem}[.gz]" for stem, _ in _IDX_PARTS.values())


def _read_bytes(path: Path, where: str) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DatasetError(f"{where}: {str(path)!r} is not a valid gzip file ({e})") from None
    except OSError as e:
        raise DatasetError(f"{where}: cannot read {str(path)!r} ({e.strerror or e})") from None


def _idx_file(folder: Path, stem: str) -> Path | None:
    # Uncompressed first: torchvision leaves both and the raw one reads faster.
    for name in (stem, stem.replace("-idx", ".idx"), stem + ".gz", stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_idx_folder(root: Path, where: str) -> Path:
    """The folder holding the four IDX files: ``root``, ``root/raw`` or the one ``root/<Name>/raw``."""
    images = _IDX_PARTS["train images"][0]
    for cand in (root, root / "raw"):
        if _idx_file(cand, images):
            return cand
    found = sorted(p for p in root.glob("*/raw") if _idx_file(p, images))  # <root>/<Name>/raw
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.parent.name for p in found)
        raise DatasetError(
            f"{where}: {str(root)!r} holds several IDX datasets ({names}); pass one of them, "
            f"e.g. {str(found[0].parent)!r}"
        )
    raise DatasetError(
        f"{where}: {str(root)!r} holds no IDX dataset: expected {_IDX_HINT} in it "
        "or in <folder>/<Name>/raw/ (torchvision's layout)"
    )


def _parse_idx(path: Path, dims: int, where: str) -> np.ndarray:
    data = _read_bytes(path, where)
    kind = "images" if dims == 3 else "labels"
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic is None or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        shown = "the file is shorter than 4 bytes" if magic is None else f"magic number 0x{magic:08X}"
        raise DatasetError(
            f"{where}: {str(path)!r} is not an IDX file ({shown}; IDX {kind} start with "
            f"0x0000080{dims})"
        )
    if data[3] != dims:
        raise DatasetError(
            f"{where}: {str(path)!r} must be an IDX file of {dims} dims ({kind}), got {data[3]} dims "
            f"(magic number 0x{magic:08X}); are the image and label files swapped?"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetError(f"{where}: {str(path)!r} is truncated: the IDX header is cut short")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    count = math.prod(shape)  # exact: np.prod wraps around in int64 for headers like (2^31, 2^31, 4)
    need = count * dtype.itemsize
    got = len(data) - header
    if got < need:
        raise DatasetError(
            f"{where}: {str(path)!r} is truncated: its header promises shape {shape} "
            f"({need} bytes of data), found {got} bytes"
        )
    if got > need:
        raise DatasetError(
            f"{where}: {str(path)!r} is malformed: {got - need} bytes follow the {need} bytes "
            f"of data its header promises for shape {shape}"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def read_idx_folder(folder: Path, where: str) -> dict[str, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` from the four IDX files in ``folder``."""
    out, files = {}, {}
    for role, (stem, dims) in _IDX_PARTS.items():
        path = _idx_file(folder, stem)
        if path is None:
            raise DatasetError(
                f"{where}: IDX folder {str(folder)!r} has no {stem}[.gz] ({role}); "
                f"an IDX dataset needs all of {_IDX_HINT}"
            )
        files[role] = path
        out[role] = _parse_idx(path, dims, where)
    for part in ("train", "test"):
        n_img, n_lab = len(out[f"{part} images"]), len(out[f"{part} labels"])
        if n_img != n_lab:
            raise DatasetError(
                f"{where}: {str(files[part + ' images'])!r} has {n_img} images but "
                f"{str(files[part + ' labels'])!r} has {n_lab} labels; they must match"
            )
    return {"x_train": out["train images"], "y_train": out["train labels"],
            "x_test": out["test images"], "y_test": out["test labels"]}


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    """The four arrays of a ``.npz`` file, loaded with ``allow_pickle=False``."""
    try:
        # Our own handle: np.load leaks its file when the archive is damaged.
        with open(path, "rb") as fh:
            return _read_npz_handle(fh, path, where)
    except OSError as e:
        raise DatasetError(f"{where}: cannot read {str(path)!r} ({e.strerror or e})") from None


def _read_npz_handle(fh, path: Path, where: str) -> dict[str, np.ndarray]:
    def bad(why: str) -> DatasetError:
        return DatasetError(f"{where}: {str(path)!r} is not a valid .npz dataset ({why})")

    try:
        f = np.load(fh, allow_pickle=False)
    except ValueError:  # numpy falls back to unpickling what is neither .npy nor .npz
        raise bad("not a NumPy .npz archive") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise bad(str(e) or type(e).__name__) from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise bad("a single .npy array, not an .npz archive with named arrays")
    with f:
        missing = [k for k in NPZ_KEYS if k not in f.files]
        if missing:
            raise DatasetError(
                f"{where}: {str(path)!r} has no array {missing[0]!r}; a .npz dataset needs "
                f"the keys {', '.join(NPZ_KEYS)} (found: {', '.join(f.files) or 'none'})"
            )
        out = {}
        for k in NPZ_KEYS:
            try:
                out[k] = f[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise bad(f"{k} holds Python objects, which are never unpickled; "
                              "store plain numeric arrays") from None
                raise bad(f"{k}: {e}") from None
            except (EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise bad(f"{k} is damaged: {e or type(e).__name__}") from None
            except MemoryError as e:  # a header that promises an array larger than memory
                raise bad(f"{k} is too large to load ({e})") from None
    return out


def _open_text(path: Path, where: str):
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise DatasetError(f"{where}: cannot read {str(path)!r} ({e.strerror or e})") from None


def read_csv(path: Path, label_column: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, F)`` and integer labels ``(N,)`` from a CSV with a header row."""
    rows, lines = [], []
    try:
        with _open_text(path, where) as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise DatasetError(
                        f"{where}: {str(path)!r} line {reader.line_num} has {len(row)} fields, "
                        f"the header has {len(header)}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DatasetError(f"{where}: {str(path)!r} is not a readable CSV file ({e})") from None
    if not header:
        raise DatasetError(f"{where}: {str(path)!r} is empty; a CSV dataset needs a header row")
    if label_column not in header:
        hint = did_you_mean(label_column, header)
        raise DatasetError(
            f"{where}: {str(path)!r} has no label column {label_column!r} (columns: "
            f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''})"
            + (f"; {hint}" if hint else "; pass label_column=<name>")
        )
    if len(header) < 2:
        raise DatasetError(f"{where}: {str(path)!r} has no feature columns besides {label_column!r}")
    if not rows:
        raise DatasetError(f"{where}: {str(path)!r} has a header but no data rows")
    try:
        table = np.array(rows, dtype=str).astype(np.float64)  # (N, columns)
    except ValueError:
        for row, line in zip(rows, lines):
            for name, cell in zip(header, row):
                try:
                    float(cell)
                except ValueError:
                    raise DatasetError(
                        f"{where}: {str(path)!r} line {line}, column {name!r}: {cell!r} is not a number"
                    ) from None
        raise  # pragma: no cover - numpy and float() disagree
    bad = ~np.isfinite(table)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(
            f"{where}: {str(path)!r} line {lines[r]}, column {header[c]!r}: {rows[r][c]!r} is not a "
            "finite number (NaN or inf); clean or drop that row"
        )
    li = header.index(label_column)
    y = table[:, li]
    wrong = (y < 0) | (y != np.round(y))
    if wrong.any():
        r = int(np.argmax(wrong))
        raise DatasetError(
            f"{where}: {str(path)!r} line {lines[r]}, column {label_column!r}: labels must be "
            f"non-negative integer class ids, got {rows[r][li]!r}"
        )
    return np.delete(table, li, axis=1), y.astype(np.int64)
