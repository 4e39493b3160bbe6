"""``regulab doctor``: exit codes, JSON, one-line usage errors, import only from the named file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from regulab.cli import main

ZOO = Path(__file__).parent / "zoo"


def _run(capsys, *argv):
    rc = main(["doctor", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _write(tmp_path, body, name="model.py"):
    f = tmp_path / name
    f.write_text("import torch\nfrom torch import nn\nimport torch.nn.functional as F\n" + body)
    return str(f)


def test_clean_exit_0(capsys):
    rc, out, err = _run(capsys, f"{ZOO}/clean.py:plain_mlp", "--input-shape", "32,40")
    assert rc == 0 and "no findings" in out and err == ""


def test_error_exit_1_human(capsys, tmp_path):
    f = _write(tmp_path, "class M(nn.Module):\n    def forward(self, x):\n        return F.dropout(x, 0.5)\n"
                         "def make():\n    return nn.Sequential(nn.Linear(8, 8), M())\n")
    rc, out, _ = _run(capsys, f"{f}:make", "--input-shape", "16x8")
    assert rc == 1
    assert out.startswith("error [functional-dropout-training] 1: M.forward calls F.dropout(p=0.5)")
    assert "  fix: pass training=self.training" in out


def test_warning_only_exit_0_json(capsys, tmp_path):
    f = _write(tmp_path, "def make():\n    return nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), "
                         "nn.BatchNorm1d(8))\n")
    rc, out, _ = _run(capsys, f"{f}:make", "--input-shape", "64 8", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["errors"] == 0 and doc["warnings"] == 1
    (fd,) = doc["findings"]
    assert fd["code"] == "dropout-before-batchnorm" and 0 < fd["details"]["variance_ratio"] < 1


def test_int_inputs(capsys, tmp_path):
    f = _write(tmp_path, "def make():\n    return nn.Sequential(nn.Embedding(50, 8), nn.Dropout(0.1), "
                         "nn.Flatten(), nn.Linear(32, 2))\n")
    rc, out, _ = _run(capsys, f"{f}:make", "--input-shape", "4,4", "--dtype", "int64", "--int-high", "50")
    assert rc == 0, out


def test_module_target(capsys, tmp_path, monkeypatch):
    _write(tmp_path, "def make():\n    return nn.Linear(3, 3)\n", name="my_models_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, out, _ = _run(capsys, "my_models_mod:make", "--input-shape", "2,3")
    assert rc == 0


def test_file_target_adds_nothing_to_sys_path(capsys, tmp_path):
    # a sibling module next to the target must NOT become importable
    (tmp_path / "sibling_helper_xyz.py").write_text("X = 1\n")
    f = _write(tmp_path, "import sibling_helper_xyz\ndef make():\n    return nn.Linear(3, 3)\n")
    before = list(sys.path)
    rc, _, err = _run(capsys, f"{f}:make", "--input-shape", "2,3")
    assert rc == 2 and "ModuleNotFoundError" in err and sys.path == before


@pytest.mark.parametrize("target_body,shape,match", [
    (None, "2,3", "TARGET must be 'path/to/file.py:factory' or 'package.module:factory', got 'nocolon'"),
    ("def make():\n    return nn.Linear(3, 3)\n", "2,3", "factory must be a callable defined in"),
    ("def make():\n    raise ValueError('boom')\n", "2,3", "must build a model without arguments, got ValueError: boom"),
    ("def make():\n    return 42\n", "2,3", "must return a torch.nn.Module, got int"),
    ("def make():\n    return nn.Linear(3, 3)\n", "2,x", "--input-shape must be positive integers"),
    ("def make():\n    return nn.Linear(3, 3)\n", "0,3", "--input-shape must be positive integers"),
    ("def make():\n    return nn.Linear(3, 3)\n", "2,4", "forward must accept the example input of shape (2, 4)"),
    ("def make(:\n", "2,3", "TARGET file must import cleanly, got SyntaxError"),
])
def test_bad_usage_exit_2_one_line(capsys, tmp_path, target_body, shape, match):
    if target_body is None:
        target = "nocolon"
    else:
        f = _write(tmp_path, target_body)
        target = f"{f}:{'mkae' if 'callable' in match else 'make'}"
    rc, out, err = _run(capsys, target, "--input-shape", shape)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("regulab doctor: error: doctor: ") and match in err, err
    assert "Traceback" not in err


def test_did_you_mean_factory(capsys, tmp_path):
    f = _write(tmp_path, "def make_model():\n    return nn.Linear(3, 3)\n")
    rc, _, err = _run(capsys, f"{f}:make_modle", "--input-shape", "2,3")
    assert rc == 2 and "did you mean 'make_model'?" in err


def test_missing_file(capsys, tmp_path):
    rc, _, err = _run(capsys, f"{tmp_path}/nope.py:make", "--input-shape", "2,3")
    assert rc == 2 and "TARGET must name an existing .py file" in err


def test_help_says_how_code_is_imported(capsys):
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "spec_from_file_location" in out and "sys.path" in out


def test_zoo_through_cli(capsys):
    from zoo import broken, clean

    for name, (shape, codes) in broken.BROKEN.items():
        rc, out, _ = _run(capsys, f"{ZOO}/broken.py:{name}", "--input-shape", ",".join(map(str, shape)), "--json")
        doc = json.loads(out)
        assert {f["code"] for f in doc["findings"]} == codes, name
        assert rc == (1 if doc["errors"] else 0), name
    for name, shape in clean.CLEAN.items():
        rc, out, _ = _run(capsys, f"{ZOO}/clean.py:{name}", "--input-shape", ",".join(map(str, shape)))
        assert rc == 0 and "no findings" in out, name
