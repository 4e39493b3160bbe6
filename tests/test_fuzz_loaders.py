"""Fuzzing the dataset loaders: random and damaged bytes give :class:`DatasetError`, nothing else.

Every file kind ``regulab.data.load`` reads (``.npz``, ``.csv``, ``.csv.gz``, IDX folders with raw
and ``.gz`` files) gets (a) random bytes and (b) a valid file with random damage: bit flips,
truncation, bytes spliced in. The loader must either return a well-formed split (damage can
leave a valid file) or raise :class:`DatasetError` with one line naming the file; no numpy,
zip, gzip, csv or unicode exception may escape, and no file handle may leak (warnings are errors).
"""
from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regulab import data
from regulab.errors import DatasetError

FUZZ = settings(max_examples=80, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _valid_npz() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.normal(size=(30, 4)).astype(np.float32), y_train=np.arange(30) % 3,
             x_test=rng.normal(size=(9, 4)).astype(np.float32), y_test=np.arange(9) % 3)
    return buf.getvalue()


def _valid_csv() -> bytes:
    rows = ["a,b,label"] + [f"{i * 0.5},{-i},{i % 3}" for i in range(40)]
    return ("\n".join(rows) + "\n").encode()


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()


def _valid_idx() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {"train-images-idx3-ubyte": _idx(rng.integers(0, 255, (30, 4, 4), dtype=np.uint8)),
            "train-labels-idx1-ubyte": _idx((np.arange(30) % 3).astype(np.uint8)),
            "t10k-images-idx3-ubyte": _idx(rng.integers(0, 255, (9, 4, 4), dtype=np.uint8)),
            "t10k-labels-idx1-ubyte": _idx((np.arange(9) % 3).astype(np.uint8))}


NPZ, CSV, IDX = _valid_npz(), _valid_csv(), _valid_idx()


@st.composite
def damaged(draw, blob: bytes) -> bytes:
    """``blob`` with a few random edits: bit flips, truncation, insertion, deletion, zeroed ranges."""
    b = bytearray(blob)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "zero"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[i:i + draw(st.integers(1, 32))]
        else:
            b[i:i + draw(st.integers(1, 64))] = bytes(min(64, len(b) - i))
    return bytes(b)


def _load(path: Path) -> None:
    try:
        s = data.load(str(path), val_fraction=0.2, standardize=True)
    except DatasetError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert msg.startswith("data.load: "), msg
        return
    # a damaged file that still loads must give a well-formed split
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert len(s.x_train) == len(s.y_train) > 0 and len(s.x_test) == len(s.y_test) > 0
    assert int(s.y_train.min()) >= 0 and s.num_classes >= 1


def _file(tmp: str, name: str, blob: bytes) -> Path:
    p = Path(tmp) / name
    p.write_bytes(blob)
    return p


@FUZZ
@given(blob=st.binary(max_size=400), suffix=st.sampled_from([".npz", ".csv", ".csv.gz"]))
def test_random_bytes_in_files(blob, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        _load(_file(tmp, "d" + suffix, blob))


@FUZZ
@given(blob=damaged(NPZ))
def test_damaged_npz(blob):
    with tempfile.TemporaryDirectory() as tmp:
        _load(_file(tmp, "d.npz", blob))


@FUZZ
@given(blob=damaged(CSV), gz=st.booleans())
def test_damaged_csv(blob, gz):
    with tempfile.TemporaryDirectory() as tmp:
        _load(_file(tmp, "d.csv.gz" if gz else "d.csv", gzip.compress(blob, mtime=0) if gz else blob))


@FUZZ
@given(blob=damaged(gzip.compress(CSV, mtime=0)))
def test_damaged_gzip_of_csv(blob):
    with tempfile.TemporaryDirectory() as tmp:
        _load(_file(tmp, "d.csv.gz", blob))


@FUZZ
@given(which=st.sampled_from(sorted(IDX)), data_=st.data(), gz=st.booleans(), rand=st.booleans())
def test_damaged_idx_folder(which, data_, gz, rand):
    blob = data_.draw(st.binary(max_size=200)) if rand else data_.draw(damaged(IDX[which]))
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in IDX.items():
            content = blob if name == which else content
            if gz:
                _file(tmp, name + ".gz", gzip.compress(content, mtime=0))
            else:
                _file(tmp, name, content)
        _load(Path(tmp))


def _npy(shape, descr: str, payload: bytes) -> bytes:
    hdr = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape))
    hdr += " " * (63 - (len(hdr) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + payload


dims = st.one_of(st.integers(0, 5), st.sampled_from([2**31, 2**32 - 1, 10**11, 2**62]))


@FUZZ
@given(shape=st.lists(dims, max_size=3), descr=st.sampled_from(["<f8", "<f4", "|u1", "<i8", "|O", "<U3", ">f8"]),
       payload=st.binary(max_size=64), key=st.sampled_from(["x_train", "y_train", "x_test", "y_test"]))
def test_npy_headers_that_lie(shape, descr, payload, key):
    """Headers that promise arrays far larger than the archive (up to exabytes), object arrays,
    negative-free but overflowing shapes: never a MemoryError, ValueError or unpickling."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(NPZ)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, _npy(shape, descr, payload) if info.filename == key + ".npy"
                         else src.read(info))
    with tempfile.TemporaryDirectory() as tmp:
        _load(_file(tmp, "d.npz", buf.getvalue()))


@FUZZ
@given(which=st.sampled_from(sorted(IDX)), type_byte=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
       shape=st.lists(dims, min_size=1, max_size=4), payload=st.binary(max_size=64))
def test_idx_headers_that_lie(which, type_byte, shape, payload):
    """IDX headers with any dims/type and sizes whose product overflows 64 bits."""
    head = bytes([0, 0, type_byte, len(shape)]) + b"".join(min(s, 2**32 - 1).to_bytes(4, "big") for s in shape)
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in IDX.items():
            _file(tmp, name, head + payload if name == which else content)
        _load(Path(tmp))


@pytest.mark.parametrize("shape", [(2**31, 2**31, 4), (2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_idx_shape_product_overflowing_int64_is_a_dataset_error(tmp_path, shape):
    """Regression: np.prod wrapped the promised size to 0 and a ValueError escaped."""
    for name, content in IDX.items():
        _file(str(tmp_path), name, content)
    head = bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in shape)
    _file(str(tmp_path), "train-images-idx3-ubyte", head)
    with pytest.raises(DatasetError, match="is truncated: its header promises shape"):
        data.load(str(tmp_path))


def test_npz_header_promising_745_gib_is_a_dataset_error(tmp_path):
    """Regression: a MemoryError escaped from numpy's allocation."""
    import zipfile

    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(io.BytesIO(NPZ)) as src, zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, _npy((10**11,), "<f8", b"") if info.filename == "x_train.npy"
                         else src.read(info))
    with pytest.raises(DatasetError, match=r"bomb.npz' is not a valid .npz dataset \(x_train is too large"):
        data.load(str(p))


@pytest.mark.parametrize("blob", [NPZ, CSV])
def test_the_undamaged_seeds_load(blob, tmp_path):
    """The fuzzers start from files that load (so damage, not the seed, is what is tested)."""
    p = _file(str(tmp_path), "d.npz" if blob is NPZ else "d.csv", blob)
    assert len(data.load(str(p)).y_train) > 0
    for name, content in IDX.items():
        _file(str(tmp_path), name, content)
    assert len(data.load(str(tmp_path)).y_train) > 0
