"""Fuzzing the study spec parser: whatever goes in, only :class:`SpecError` comes out.

Three sources of input, all derandomized hypothesis strategies:

* random spec-shaped dicts: known keys (and near-misses) at every level, values of any
  TOML type (numbers of every kind incl. NaN/inf, strings, bools, lists, nested tables);
* random TOML text (including invalid UTF-8 and syntax errors) through ``load_spec``;
* mutations of a valid spec: one field replaced by a value of another type.

A parsed spec must also plan (``plan(spec)``) without anything but :class:`SpecError`, and
every message must be one line that starts with ``spec`` and names a field path.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regulab.errors import SpecError
from regulab.study.plan import plan
from regulab.study.spec import Arm, Dataset, EarlyStopping, Model, Optimizer, Spec, Sweep, load_spec, parse_spec

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

KEYS = {
    None: list(Spec.model_fields),
    "arm": list(Arm.model_fields),
    "dataset": list(Dataset.model_fields),
    "model": list(Model.model_fields),
    "optimizer": list(Optimizer.model_fields),
    "early_stopping": list(EarlyStopping.model_fields),
    "sweep": list(Sweep.model_fields),
}
ALL_KEYS = sorted({k for ks in KEYS.values() for k in ks})

scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 10**6, 0.0, 0.5, 1.0, -0.5, 1.5, 1e-300, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["mlp", "cnn1d", "cnn2d", "digits", "mnist1d", "adam", "sgd", "relu", "cosine",
                     "shift", "flip", "val_loss", "x.py:f", "os:getcwd", ":", "a:b:c", "../x.py:f"]),
)
keys = st.one_of(st.sampled_from(ALL_KEYS), st.text(min_size=1, max_size=8),
                 st.sampled_from(ALL_KEYS).map(lambda k: k[:-1] + "x"))  # near misses
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@st.composite
def spec_dicts(draw):
    """Spec-shaped dicts: mostly the right keys at the right level, with random values."""
    def table(kind):
        names = KEYS[kind]
        chosen = draw(st.lists(st.sampled_from(names), max_size=min(4, len(names)), unique=True))
        out = {}
        for k in chosen:
            if kind == "arm" and k == "early_stopping":
                out[k] = draw(st.one_of(values, st.just(None).map(lambda _: table("early_stopping"))))
            else:
                out[k] = draw(values)
        if draw(st.booleans()):
            out[draw(keys)] = draw(values)
        return out

    d = table(None)
    for sub in ("dataset", "model", "optimizer"):
        if draw(st.booleans()):
            d[sub] = table(sub)
    if draw(st.booleans()):
        d["arms"] = {draw(st.text(max_size=10)): table("arm") for _ in range(draw(st.integers(0, 3)))}
    if draw(st.booleans()):
        d["sweep"] = [table("sweep") for _ in range(draw(st.integers(0, 2)))]
    # keep generated studies small: a valid spec must plan quickly
    return d


def _check_message(e: SpecError) -> None:
    msg = str(e)
    assert "\n" not in msg, msg
    assert msg.startswith(("spec", "study")), msg


def _parse_and_plan(data) -> None:
    try:
        spec = parse_spec(data)
        if len(spec.arms) * spec.seeds > 10_000:
            return
        sizes = [len(v) for s in spec.sweep for v in s.model_dump(exclude={"arm"}, exclude_none=True).values()]
        if math.prod(sizes or [1]) > 1000:
            return
        plan(spec)
    except SpecError as e:
        _check_message(e)


@FUZZ
@given(spec_dicts())
def test_random_spec_dicts_raise_only_spec_error(data):
    _parse_and_plan(data)


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_random_top_level_tables_raise_only_spec_error(data):
    _parse_and_plan(data)


VALID = {"seeds": 2, "epochs": 3, "dataset": {"name": "digits", "n_train": 100},
         "model": {"kind": "mlp", "widths": [8]}, "optimizer": {"name": "adam", "lr": 0.01},
         "arms": {"base": {}, "drop": {"p": 0.2, "early_stopping": {"patience": 2}}},
         "sweep": [{"arm": "drop", "p": [0.1, 0.3]}]}
PATHS = [(), ("dataset",), ("model",), ("optimizer",), ("arms", "drop"), ("arms", "drop", "early_stopping"),
         ("sweep", 0)]


@FUZZ
@given(where=st.sampled_from(PATHS), key=keys, value=values)
def test_one_field_mutations_of_a_valid_spec(where, key, value):
    import copy

    data = copy.deepcopy(VALID)
    node = data
    for part in where:
        node = node[part]
    node[key] = value
    _parse_and_plan(data)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.sampled_from([b"[arms.a]\np = 2", b"seeds = ", b"[[sweep]]\narm = 'x'", b"\xff\xfe",
                                  b"epochs = 1e999", b"[model]\nkind = 'a:b'\n[model]\n", b"arms = 3"])))
def test_random_toml_bytes_raise_only_spec_error(blob):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "spec.toml"
        p.write_bytes(blob)
        try:
            load_spec(p)
        except SpecError as e:
            assert "\n" not in str(e), str(e)
