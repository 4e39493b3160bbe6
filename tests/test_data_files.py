"""User files: IDX folders (gz and raw, torchvision layout), .npz and CSV; and their bad inputs."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from regulab.data import DatasetError, load

STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def idx_bytes(a: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = bytes([0, 0, type_byte, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return header + a.astype(">u1" if type_byte == 0x08 else ">f4").tobytes()


def small_arrays(n_train=60, n_test=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % classes).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % classes).astype(np.uint8),
    }


def write_idx(folder, arrays=None, gz=True, override=None):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = arrays or small_arrays()
    for key, stem in STEMS.items():
        data = (override or {}).get(key) or idx_bytes(arrays[key])
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_idx_folder(tmp_path, gz):
    arrays = write_idx(tmp_path / "fashion", gz=gz)
    s = load(tmp_path / "fashion", standardize=False, val_fraction=0.2)
    assert s.name == "fashion" and s.input_shape == (1, 28, 28) and s.num_classes == 3
    assert torch.equal(s.x_test, torch.from_numpy(arrays["x_test"][:, None].astype(np.float32)))
    assert torch.equal(s.y_test, torch.from_numpy(arrays["y_test"].astype(np.int64)))
    assert s.meta["sizes"] == {"train": 48, "val": 12, "test": 20}
    assert s.meta["class_counts"]["val"] == [4, 4, 4]
    # train + val are exactly the training images, each once
    both = torch.cat([s.x_train, s.x_val]).reshape(60, -1)
    ref = torch.from_numpy(arrays["x_train"].reshape(60, -1).astype(np.float32))
    assert torch.equal(both[both[:, 0].argsort(stable=True)].sum(0), ref.sum(0))


def test_idx_torchvision_layout(tmp_path):
    write_idx(tmp_path / "KMNIST" / "raw", gz=False)
    (tmp_path / "KMNIST" / "raw" / "extra.txt").write_text("ignored")
    s = load(str(tmp_path))
    assert s.name == "KMNIST" and len(s.y_test) == 20
    assert load(tmp_path / "KMNIST").name == "KMNIST"
    assert load(tmp_path / "KMNIST" / "raw").name == "KMNIST"


def test_idx_float_type_is_read(tmp_path):
    arrays = small_arrays()
    override = {"x_train": idx_bytes(arrays["x_train"].astype(np.float32) / 255, 0x0D)}
    write_idx(tmp_path, arrays, override=override)
    s = load(tmp_path, standardize=False)
    assert s.x_train.max().item() <= 1.0


def test_npz(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x_train=rng.normal(size=(50, 5)), y_train=np.arange(50) % 2,
             x_test=rng.normal(size=(10, 5)), y_test=np.arange(10) % 2)
    s = load(str(tmp_path / "d.npz"))
    assert s.name == "d" and s.input_shape == (5,) and s.num_classes == 2
    assert s.meta["source"] == str(tmp_path / "d.npz") and s.meta["test_split"] == "official"
    # standardisation is fitted on the training part only
    assert torch.allclose(s.x_train.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(s.x_train.std(0, unbiased=False), torch.ones(5), atol=1e-5)
    assert not torch.allclose(s.x_test.mean(0), torch.zeros(5), atol=1e-3)


def test_npz_3d_images_get_a_channel_axis(tmp_path):
    a = small_arrays()
    np.savez_compressed(tmp_path / "mnist.npz", **a)
    s = load(tmp_path / "mnist.npz")
    assert s.input_shape == (1, 28, 28) and tuple(s.x_val.shape[1:]) == (1, 28, 28)


def test_csv_with_header_and_label_column(tmp_path):
    rows = ["f1,target,f2"] + [f"{i * 0.5},{i % 3},{-i}" for i in range(30)] + [""]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    s = load(tmp_path / "t.csv", label_column="target", standardize=False, val_fraction=0.25)
    assert s.name == "t" and s.input_shape == (2,) and s.num_classes == 3
    assert s.meta["sizes"] == {"train": 18, "val": 6, "test": 6}
    assert s.meta["class_counts"]["test"] == [2, 2, 2]
    # the label column is removed from the features, order of the others kept
    x = torch.cat([s.x_train, s.x_val, s.x_test])
    assert torch.equal(x[:, 0] * -2, x[:, 1])
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write("\n".join(rows))
    g = load(tmp_path / "t.csv.gz", label_column="target", standardize=False, val_fraction=0.25)
    assert torch.equal(g.x_train, s.x_train) and g.name == "t"


# ---- bad files: each gives its own one-line message ------------------------------------

def _msg(source, **kw) -> str:
    with pytest.raises(DatasetError) as e:
        load(source, **kw)
    return str(e.value)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.npz"
    assert _msg(p) == f"data.load: '{p}' does not exist (no such file or folder)"


def test_directory_instead_of_file(tmp_path):
    p = tmp_path / "data.npz"
    p.mkdir()
    assert _msg(p) == f"data.load: '{p}' is a folder, expected a .npz file"


def test_unsupported_file_kind(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"x")
    assert _msg(p) == (
        f"data.load: '{p}' is not a supported file: expected a .npz or .csv(.gz) file, "
        "or a folder of IDX files; pass the folder that holds it"
    )


def test_folder_without_idx_files(tmp_path):
    assert _msg(tmp_path) == (
        f"data.load: '{tmp_path}' holds no IDX dataset: expected train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] "
        "in it or in <folder>/<Name>/raw/ (torchvision's layout)"
    )


def test_idx_folder_missing_one_file(tmp_path):
    write_idx(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert _msg(tmp_path).startswith(
        f"data.load: IDX folder '{tmp_path}' has no t10k-labels-idx1-ubyte[.gz] (test labels); "
    )


def test_several_torchvision_datasets(tmp_path):
    write_idx(tmp_path / "MNIST" / "raw")
    write_idx(tmp_path / "FashionMNIST" / "raw")
    assert _msg(tmp_path) == (
        f"data.load: '{tmp_path}' holds several IDX datasets (FashionMNIST, MNIST); pass one of "
        f"them, e.g. '{tmp_path / 'FashionMNIST'}'"
    )


def test_wrong_idx_magic(tmp_path):
    a = small_arrays()
    write_idx(tmp_path, a, override={"x_train": b"\x1f\x8b\x08\x00" + bytes(100)})
    p = tmp_path / "train-images-idx3-ubyte.gz"
    assert _msg(tmp_path) == (
        f"data.load: '{p}' is not an IDX file (magic number 0x1F8B0800; IDX images start with "
        "0x00000803)"
    )


def test_swapped_idx_files(tmp_path):
    a = small_arrays()
    write_idx(tmp_path, a, override={"x_train": idx_bytes(a["y_train"])})
    p = tmp_path / "train-images-idx3-ubyte.gz"
    assert _msg(tmp_path) == (
        f"data.load: '{p}' must be an IDX file of 3 dims (images), got 1 dims "
        "(magic number 0x00000801); are the image and label files swapped?"
    )


def test_truncated_idx(tmp_path):
    a = small_arrays()
    write_idx(tmp_path, a, gz=False, override={"x_test": idx_bytes(a["x_test"])[:-100]})
    p = tmp_path / "t10k-images-idx3-ubyte"
    assert _msg(tmp_path) == (
        f"data.load: '{p}' is truncated: its header promises shape (20, 28, 28) "
        "(15680 bytes of data), found 15580 bytes"
    )


def test_truncated_gzip(tmp_path):
    write_idx(tmp_path)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:20])
    assert _msg(tmp_path).startswith(f"data.load: '{p}' is not a valid gzip file (")


def test_image_and_label_counts_disagree(tmp_path):
    a = small_arrays()
    write_idx(tmp_path, a, gz=False, override={"y_train": idx_bytes(a["y_train"][:59])})
    assert _msg(tmp_path) == (
        f"data.load: '{tmp_path / 'train-images-idx3-ubyte'}' has 60 images but "
        f"'{tmp_path / 'train-labels-idx1-ubyte'}' has 59 labels; they must match"
    )


def _npz(tmp_path, **change):
    a = {"x_train": np.zeros((20, 3)), "y_train": np.arange(20) % 2,
         "x_test": np.zeros((6, 3)), "y_test": np.arange(6) % 2}
    a.update(change)
    p = tmp_path / "bad.npz"
    np.savez(p, **{k: v for k, v in a.items() if v is not None})
    return p


def test_npz_bad_cases(tmp_path):
    x = np.zeros((20, 3))
    x[4, 1] = np.nan
    p = _npz(tmp_path, x_train=x)
    assert _msg(p) == (f"data.load: '{p}': x_train has NaN or infinite values in 1 rows "
                       "(first at row 4); clean or drop them first")
    x[4, 1] = np.inf
    assert "x_train has NaN or infinite values" in _msg(_npz(tmp_path, x_train=x))
    p = _npz(tmp_path, y_train=np.arange(20) % 2 + 0.5)
    assert _msg(p) == (f"data.load: '{p}': y_train must hold non-negative integer class labels, "
                       "got 0.5 (row 0)")
    p = _npz(tmp_path, y_test=np.array([0, 1, -1, 0, 1, 0]))
    assert _msg(p) == (f"data.load: '{p}': y_test must hold non-negative integer class labels, "
                       "got -1 (row 2)")
    p = _npz(tmp_path, y_train=np.zeros(20, np.int64))
    assert _msg(p) == f"data.load: '{p}': the labels must cover at least 2 classes, got 1 (only class 0)"
    p = _npz(tmp_path, y_train=np.arange(19) % 2)
    assert _msg(p) == (f"data.load: '{p}': x_train has 20 examples but y_train has 19 labels; "
                       "they must match")
    p = _npz(tmp_path, x_test=np.zeros((6, 4)))
    assert _msg(p) == (f"data.load: '{p}': x_train and x_test must have the same example shape, "
                       "got (3,) and (4,)")
    p = _npz(tmp_path, y_test=None)
    assert _msg(p) == (f"data.load: '{p}' has no array 'y_test'; a .npz dataset needs the keys "
                       "x_train, y_train, x_test, y_test (found: x_train, y_train, x_test)")
    p = _npz(tmp_path, y_train=np.array(["a", "b"] * 10))
    assert _msg(p) == f"data.load: '{p}': y_train must hold integer class labels, got dtype <U1"
    p = _npz(tmp_path, y_train=np.array([0, 1] * 10, dtype=object))
    assert _msg(p) == (f"data.load: '{p}' is not a valid .npz dataset (y_train holds Python "
                       "objects, which are never unpickled; store plain numeric arrays)")


def test_npz_not_an_archive(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello")
    assert _msg(p) == f"data.load: '{p}' is not a valid .npz dataset (not a NumPy .npz archive)"
    np.savez(p, x_train=np.zeros((5, 2)), y_train=np.zeros(5), x_test=np.zeros((5, 2)),
             y_test=np.zeros(5))
    p.write_bytes(p.read_bytes()[:300])  # a real archive, cut short
    assert _msg(p).startswith(f"data.load: '{p}' is not a valid .npz dataset (")
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    assert _msg(p) == (f"data.load: '{p}' is not a valid .npz dataset (a single .npy array, "
                       "not an .npz archive with named arrays)")


def _csv(tmp_path, text):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    return p


def test_csv_bad_cases(tmp_path):
    good = "".join(f"{i},{i % 2}\n" for i in range(10))
    p = _csv(tmp_path, "a,lable\n" + good)
    assert _msg(p) == (f"data.load: '{p}' has no label column 'label' (columns: a, lable); "
                       "did you mean 'lable'?")
    p = _csv(tmp_path, "a,label\n1,0\n2,x\n" + good)
    assert _msg(p) == f"data.load: '{p}' line 3, column 'label': 'x' is not a number"
    p = _csv(tmp_path, "a,label\n1,0\nnan,1\n" + good)
    assert _msg(p) == (f"data.load: '{p}' line 3, column 'a': 'nan' is not a finite number "
                       "(NaN or inf); clean or drop that row")
    p = _csv(tmp_path, "a,label\n1,0\n2,1.5\n" + good)
    assert _msg(p) == (f"data.load: '{p}' line 3, column 'label': labels must be non-negative "
                       "integer class ids, got '1.5'")
    p = _csv(tmp_path, "a,label\n1,0\n2,-1\n" + good)
    assert "got '-1'" in _msg(p)
    p = _csv(tmp_path, "a,label\n1,0\n2,1,3\n" + good)
    assert _msg(p) == f"data.load: '{p}' line 3 has 3 fields, the header has 2"
    p = _csv(tmp_path, "")
    assert _msg(p) == f"data.load: '{p}' is empty; a CSV dataset needs a header row"
    p = _csv(tmp_path, "a,label\n")
    assert _msg(p) == f"data.load: '{p}' has a header but no data rows"
    p = _csv(tmp_path, "label\n0\n1\n")
    assert _msg(p) == f"data.load: '{p}' has no feature columns besides 'label'"
    p = _csv(tmp_path, "a,label\n" + good + "5,2\n")
    assert _msg(p) == (f"data.load: '{p}': class 2 has only 1 example in the dataset, too few to "
                       "split it stratified (each class needs at least 2); add examples of class 2 "
                       "or remove it")
    (tmp_path / "latin.csv").write_bytes(b"a,label\n\xe9,0\n")
    assert "is not a readable CSV file" in _msg(tmp_path / "latin.csv")
