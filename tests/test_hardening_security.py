"""Security: nothing is ever unpickled, user text is escaped in the report, artifact names stay
inside the study folder, and ``regulab doctor`` imports user code only from the path it is given.
"""
from __future__ import annotations

import ast
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regulab.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "regulab"


# --- no pickle on any load path ----------------------------------------------------------------
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<not a literal>"
    return None


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def scan(path: Path) -> tuple[list[str], list[str]]:
    """(unsafe uses, safe load calls) of one source file."""
    bad, safe = [], []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            bad += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            bad.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            leaf = name.rsplit(".", 1)[-1]
            if name in ("torch.load",) or (leaf == "load" and name.startswith("torch")):
                (safe if _kw(node, "weights_only") is True else bad).append(f"{where}: {name}(weights_only="
                                                                             f"{_kw(node, 'weights_only')})")
            elif name in ("np.load", "numpy.load"):
                (safe if _kw(node, "allow_pickle") is False else bad).append(f"{where}: {name}(allow_pickle="
                                                                             f"{_kw(node, 'allow_pickle')})")
            elif name in ("torch.save", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load"):
                bad.append(f"{where}: {name}")
            elif name in ("eval", "exec"):
                bad.append(f"{where}: {name}()")
            elif leaf in ("load_file", "safe_open"):
                safe.append(f"{where}: {name} (safetensors)")
            if _kw(node, "allow_pickle") is True:
                bad.append(f"{where}: {name}(allow_pickle=True)")
        elif isinstance(node, ast.Attribute) and node.attr in ("read_pickle", "Unpickler"):
            bad.append(f"{where}: .{node.attr}")
    return bad, safe


def test_no_pickle_on_any_load_path():
    """Every torch.load has weights_only=True, every np.load allow_pickle=False, weights are
    safetensors, no pickle/joblib/dill/marshal/shelve import, no eval/exec."""
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    bad, safe = [], []
    for f in files:
        b, s = scan(f)
        bad += b
        safe += s
    assert bad == [], "unsafe deserialisation:\n" + "\n".join(bad)
    # the scan does see the load paths that exist (so an empty 'bad' means something)
    assert any("np.load" in s for s in safe) and any("safetensors" in s for s in safe), safe


def test_the_scanner_catches_unsafe_code(tmp_path):
    f = SRC / "_scan_probe_never_committed.py"
    code = ("import pickle\nimport numpy as np, torch\nnp.load('x')\nnp.load('x', allow_pickle=True)\n"
            "torch.load('x')\ntorch.load('x', weights_only=False)\ntorch.save({}, 'x')\neval('1')\n"
            "np.load('x', allow_pickle=False)\ntorch.load('x', weights_only=True)\n")
    f.write_text(code)
    try:
        bad, safe = scan(f)
    finally:
        f.unlink()
    assert len(bad) == 8 and len(safe) == 2, (bad, safe)


def test_an_npz_with_pickled_objects_is_refused_not_unpickled(tmp_path):
    """A pickle payload inside an .npz: loading must refuse it, and the payload must not run."""
    import numpy as np

    from regulab import data
    from regulab.errors import DatasetError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    x = np.empty(2, dtype=object)
    x[0], x[1] = Evil(), Evil()
    p = tmp_path / "evil.npz"
    np.savez(p, x_train=x, y_train=np.zeros(2, int), x_test=np.zeros((2, 2)), y_test=np.zeros(2, int))
    with pytest.raises(DatasetError, match="never unpickled"):
        data.load(str(p))
    assert not marker.exists()


# --- the HTML report escapes everything user-controlled ------------------------------------------
EVIL_ARMS = {
    "<script>alert(1)</script>": {"p": 0.2},
    '"><img src=x onerror=alert(2)>': {},
    "../../x": {"l2": 1e-4},
}


@pytest.mark.slow
def test_report_escapes_user_text_and_artifact_names_stay_inside(tmp_path, capsys):
    """Arms named like markup and like paths; a study name with markup. The report shows them as
    text, and every file the study writes is inside its folder."""
    import regulab
    from regulab.report import write_report

    root = tmp_path / "a" / "b"
    out = root / "study"
    spec = {"name": "<b onmouseover=alert(3)>study</b>", "epochs": 2, "seeds": 2,
            "dataset": {"name": "digits", "n_train": 120}, "model": {"kind": "mlp", "widths": [8]},
            "arms": {"baseline": {}, **EVIL_ARMS}}
    before = {p for p in tmp_path.rglob("*")}
    regulab.Study(spec, out=out, quiet=True, threads=1).run()
    html = write_report(out).read_text()
    for raw in ("<script>alert(1)</script>", "<img src=x", "<b onmouseover", "onerror=alert(2)>"):
        assert raw not in html, f"unescaped {raw!r} in report.html"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b onmouseover=alert(3)&gt;" in html or "&lt;b onmouseover" in html
    # every new file or folder lies inside the study folder; names are sanitised
    new = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in new if out not in p.parents and p != out and p not in out.parents]
    assert outside == [], outside
    names = [p.name for p in (out / "weights").iterdir()]
    assert len(names) == 8 and all("/" not in n and ".." not in n and "<" not in n for n in names), names
    assert not (root / "x").exists() and not (tmp_path / "x").exists()


def test_safe_name_never_leaves_the_folder():
    from regulab.study.store import safe_name

    for text in ["../../x", "/etc/passwd", "..", ".", "a/../../b", "\x00", "<script>", "~/.ssh/id", "C:\\x",
                 "a" * 500, "...", "-rf", "seed=0/../.."]:
        s = safe_name(text)
        assert s and "/" not in s and "\\" not in s and s not in (".", "..") and not s.startswith(("-", "."))
        assert len(s) <= 80


# --- doctor imports only from the path it is given -----------------------------------------------
def test_doctor_help_says_where_user_code_is_imported_from(capsys):
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "imported from that file alone" in text
    assert "no directory is added to sys.path" in text
    assert "only point the doctor at code you trust" in text


def test_doctor_does_not_add_the_target_folder_to_sys_path(tmp_path, capsys):
    (tmp_path / "sibling_helper_for_doctor.py").write_text("raise SystemExit('sibling imported')\n")
    (tmp_path / "model.py").write_text(
        "from torch import nn\n"
        "def make():\n    return nn.Sequential(nn.Linear(4, 2))\n"
        "def make_with_sibling():\n    import sibling_helper_for_doctor\n    return nn.Linear(4, 2)\n")
    path_before, mods_before = list(sys.path), set(sys.modules)
    rc = main(["doctor", f"{tmp_path}/model.py:make", "--input-shape", "2,4"])
    assert rc == 0
    assert sys.path == path_before
    assert "sibling_helper_for_doctor" not in sys.modules and "model" not in set(sys.modules) - mods_before
    rc = main(["doctor", f"{tmp_path}/model.py:make_with_sibling", "--input-shape", "2,4"])
    err = capsys.readouterr().err
    assert rc == 2 and "No module named 'sibling_helper_for_doctor'" in err, err


@pytest.mark.slow
def test_doctor_ignores_modules_in_the_working_directory(tmp_path):
    """Run from a folder full of modules that shadow what regulab imports: none of them runs."""
    evil = tmp_path / "cwd"
    evil.mkdir()
    marker = tmp_path / "shadowed"
    for name in ("numpy", "torch", "json", "regulab", "model_helpers"):
        (evil / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    target = tmp_path / "target"
    target.mkdir()
    (target / "net.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(4, 2)\n")
    exe = Path(sys.executable).with_name("regulab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from regulab.cli import main; "
                                                                 "sys.exit(main())"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([*cmd, "doctor", f"{target}/net.py:make", "--input-shape", "2,4"], cwd=evil,
                       capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert not marker.exists(), f"a module from the working directory was imported: {marker.read_text()}"
