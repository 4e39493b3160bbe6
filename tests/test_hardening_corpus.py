"""Bad-input corpus: every malformed spec, dataset, model factory and command line exits with
code 2 and one error line that names the field or file; never a traceback.

Sources of cases (all through the real CLI entry point ``regulab.cli.main``, in-process with
``capsys``; a sample also as real ``python -m regulab`` subprocesses):

* ``tests/corpus/specs/*.toml``: malformed specs, each with ``# expect: <text>`` on line 1;
* ``tests/corpus/cases.txt``: command lines over the bad datasets (``corpus/data``), broken
  model factories (``corpus/models``), bad flags and paths;
* generated from the constraint tables: every constrained field of the spec models (their own
  ``Interval``/``OneOf``/``Literal`` constraints: out-of-range values, NaN, wrong types), and
  every entry of :data:`regulab._validate.CONSTRAINTS` that a spec field or CLI flag reaches.

Beyond exit code and message: the study folder named by ``--out`` is never created for a
refused input, and the corpus itself is never modified (hashes before and after).
"""
from __future__ import annotations

import hashlib
import math
import os
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import AfterValidator

from regulab._validate import CONSTRAINTS, Interval, OneOf
from regulab.cli import main
from regulab.study.spec import Arm, Dataset, EarlyStopping, Model, Optimizer, Spec

CORPUS = Path(__file__).parent / "corpus"
ROOT = Path(__file__).resolve().parents[1]
BASE = {"seeds": 1, "epochs": 1, "batch_size": 50, "dataset": {"name": "digits", "n_train": 100},
        "model": {"kind": "mlp", "widths": [8]}, "arms": {"a": {}}}


# --- running one case ------------------------------------------------------------------------
def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clear_refusal(rc, out, err, expect: str, out_dir: Path | None = None) -> str:
    assert "Traceback" not in err and "Traceback" not in out, err
    assert rc == 2, f"exit code {rc}, stderr: {err!r}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, f"expected one error line, got: {err!r}"
    if not errors[0].startswith("regulab: error:"):  # argparse prints its usage lines first
        assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert expect in errors[0], f"{expect!r} not in {errors[0]!r}"
    assert out == "", out
    if out_dir is not None:
        assert not out_dir.exists(), f"{out_dir} was created for a refused input"
    return errors[0]


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module", autouse=True)
def corpus_is_never_modified():
    before = _hash_tree(CORPUS)
    yield
    assert _hash_tree(CORPUS) == before, "a refused input changed the corpus"
    assert not list(CORPUS.rglob(".lock")) and not list(CORPUS.rglob("*.sqlite*"))


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone" / "x.csv")
    return tmp_path


# --- corpus files ----------------------------------------------------------------------------
SPEC_FILES = sorted((CORPUS / "specs").glob("*.toml"))


def _expect_of(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <text>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_bad_spec_file(path, tmp_path, capsys):
    out_dir = tmp_path / "study"
    rc, out, err = run_cli(["study", str(path), "--out", str(out_dir), "--quiet"], capsys)
    assert_clear_refusal(rc, out, err, _expect_of(path), out_dir)


def _cases() -> list[tuple[str, str]]:
    out = []
    for line in (CORPUS / "cases.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            expect, _, args = line.partition(" || ")
            out.append((expect.strip(), args.strip()))
    return out


CASES = _cases()


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{corpus}", str(CORPUS)).replace("{tmp}", str(tmp)).replace("{out}", str(tmp / "study"))


@pytest.mark.parametrize("expect,args", CASES, ids=[f"{i:02d}-{a.split()[0]}" for i, (_, a) in enumerate(CASES)])
def test_bad_command_line(expect, args, scratch, capsys):
    argv = shlex.split(_fill(args, scratch))
    rc, out, err = run_cli(argv, capsys)
    assert_clear_refusal(rc, out, err, _fill(expect, scratch), scratch / "study")


def test_the_corpus_is_big_enough():
    assert len(SPEC_FILES) + len(CASES) >= 40
    # the base spec the data/model cases lean on is valid: their errors come from the one bad part
    from regulab.study.spec import load_spec

    load_spec(CORPUS / "base.toml")


# --- generated from the constraint tables ----------------------------------------------------
def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                  else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _key(k: str) -> str:
    return k if k.replace("_", "").isalnum() else _toml(k)


def to_toml(d: dict) -> str:
    return "".join(f"{_key(k)} = {_toml(v)}\n" for k, v in d.items())


def _constraints_in(annotation) -> list[tuple[object, bool]]:
    """(constraint, inside_a_list) for every AfterValidator/Literal in a field annotation."""
    found = []
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        for m in annotation.__metadata__:
            if isinstance(m, AfterValidator) and "constraint" in m.func.__code__.co_freevars:
                cell = m.func.__closure__[m.func.__code__.co_freevars.index("constraint")]
                found.append((cell.cell_contents, False))
        return found + _constraints_in(args[0])
    if origin is typing.Literal:
        return [(OneOf(tuple(args)), False)]
    if origin is list:
        return [(c, True) for c, _ in _constraints_in(args[0])]
    for a in args:  # unions (X | None)
        found += _constraints_in(a)
    return found


def _at(path: tuple, value) -> dict:
    import copy

    d = copy.deepcopy(BASE)
    node = d
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return d


FIELD_MODELS = [(Spec, ()), (Dataset, ("dataset",)), (Model, ("model",)), (Optimizer, ("optimizer",)),
                (Arm, ("arms", "a")), (EarlyStopping, ("arms", "a", "early_stopping"))]
CNN_FIELDS = {"channels", "kernel_size", "stride"}


def _generated_field_cases() -> list[tuple[str, dict, str]]:
    cases = []
    for model, prefix in FIELD_MODELS:
        for name, f in model.model_fields.items():
            for constraint, in_list in _constraints_in(f.annotation):
                for bad in constraint.bad_values():
                    if bad is None:  # TOML has no null
                        continue
                    path = (*prefix, name)
                    d = _at(path, [bad] if in_list else bad)
                    if model is Model and name in CNN_FIELDS:
                        d["model"]["kind"] = "cnn1d"
                    field = ".".join(("spec", *path, *(["0"] if in_list else [])))
                    cases.append((f"{field}={bad!r}", d, f"{field}: must be"))
            # a value of the wrong type for every scalar field
            wrong = "x" if f.annotation is not str else 3
            if name in ("kwargs",):
                continue
            d = _at((*prefix, name), wrong)
            field = ".".join(("spec", *prefix, name))
            cases.append((f"{field}={wrong!r}", d, f"{field}: must be"))
    return cases


FIELD_CASES = _generated_field_cases()


@pytest.mark.parametrize("spec,expect", [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_generated_bad_field_values(spec, expect, tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text(to_toml(spec))
    out_dir = tmp_path / "study"
    rc, out, err = run_cli(["study", str(path), "--out", str(out_dir), "--quiet"], capsys)
    assert_clear_refusal(rc, out, err, expect, out_dir)


# CONSTRAINTS entries (the Python API's table) that a spec field or a CLI flag reaches.
TABLE_TO_SPEC = {
    ("dropout", "p"): ("arms", "a", "p"),
    ("data.load", "val_fraction"): ("dataset", "val_fraction"),
    ("data.load", "seed"): ("dataset", "seed"),
    ("data.load", "n_train"): ("dataset", "n_train"),
    ("EarlyStopping", "min_delta"): ("arms", "a", "early_stopping", "min_delta"),
    ("EarlyStopping", "patience"): ("arms", "a", "early_stopping", "patience"),
    ("EarlyStopping", "start_from_epoch"): ("arms", "a", "early_stopping", "start_from_epoch"),
    ("EarlyStopping", "mode"): ("arms", "a", "early_stopping", "mode"),
    ("l1_penalty", "strength"): ("arms", "a", "l1"),
    ("l2_penalty", "strength"): ("arms", "a", "l2"),
    ("MaxNorm", "max_value"): ("arms", "a", "max_norm"),
    ("decoupled_decay_", "weight_decay"): ("arms", "a", "weight_decay"),
    ("gaussian_noise", "sigma"): ("arms", "a", "input_noise"),
    ("label_smoothing_cross_entropy", "epsilon"): ("arms", "a", "label_smoothing"),
    ("mixup", "alpha"): ("arms", "a", "mixup"),
}
# Values the table refuses but the spec accepts on purpose (documented "off" switches).
SPEC_OFF_VALUES = {("mixup", "alpha"): [0.0]}
TABLE_TO_FLAG = {("diagnose", "seed"): "--seed"}


def _table_cases() -> list[tuple[str, list | dict, str]]:
    import regulab.data  # noqa: F401  (register their constraints)
    import regulab.doctor  # noqa: F401
    import regulab.regularizers  # noqa: F401

    cases = []
    for key, path in TABLE_TO_SPEC.items():
        assert key in CONSTRAINTS, f"{key} left the constraint table; update TABLE_TO_SPEC"
        for bad in CONSTRAINTS[key].bad_values():
            if bad is None or bad in SPEC_OFF_VALUES.get(key, []):
                continue
            field = ".".join(("spec", *path))
            cases.append((f"{key[0]}.{key[1]}={bad!r}", _at(path, bad), f"{field}: must be"))
    for key, flag in TABLE_TO_FLAG.items():
        for bad in CONSTRAINTS[key].bad_values():
            if bad is None:
                continue
            argv = ["doctor", f"{CORPUS}/models/factories.py:ok", "--input-shape", "2,64", flag, str(bad)]
            text = (f"{flag}: invalid int value" if not isinstance(bad, int) else f"{flag} must be")
            cases.append((f"{key[0]}.{key[1]}={bad!r}", argv, text))
    return cases


TABLE_CASES = _table_cases()


@pytest.mark.parametrize("case,expect", [c[1:] for c in TABLE_CASES], ids=[c[0] for c in TABLE_CASES])
def test_generated_from_the_constraint_table(case, expect, tmp_path, capsys):
    out_dir = tmp_path / "study"
    if isinstance(case, dict):
        path = tmp_path / "spec.toml"
        path.write_text(to_toml(case))
        argv = ["study", str(path), "--out", str(out_dir), "--quiet"]
    else:
        argv = case
    rc, out, err = run_cli(argv, capsys)
    assert_clear_refusal(rc, out, err, expect, out_dir)


def test_spec_fields_are_at_least_as_strict_as_the_table():
    """A value the Python API refuses must not slip through a spec field (except documented 'off')."""
    from regulab.study.spec import parse_spec
    from regulab.errors import SpecError

    for key, path in TABLE_TO_SPEC.items():
        for bad in CONSTRAINTS[key].bad_values():
            if bad is None or bad in SPEC_OFF_VALUES.get(key, []):
                continue
            with pytest.raises(SpecError):
                parse_spec(_at(path, bad))


def test_generated_case_counts():
    assert len(FIELD_CASES) >= 60 and len(TABLE_CASES) >= 30


# --- a sample through real subprocesses (the installed entry point, its exit code) -------------
SAMPLE = [CASES[0], next(c for c in CASES if "factories.py:boom --out" in c[1]),
          next(c for c in CASES if "--seeds abc" in c[1])]


@pytest.mark.slow
@pytest.mark.parametrize("expect,args", SAMPLE, ids=["dataset", "factory", "argparse"])
def test_subprocess_sample(expect, args, scratch):
    argv = shlex.split(_fill(args, scratch))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "regulab", *argv], capture_output=True, text=True, timeout=300,
                       cwd=scratch, env=env)
    assert_clear_refusal(p.returncode, p.stdout, p.stderr, _fill(expect, scratch), scratch / "study")
