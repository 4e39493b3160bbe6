"""``regulab mc DIR`` on a tiny finished study."""
from __future__ import annotations

import json

import pytest
import torch

from regulab.cli import main

pytestmark = pytest.mark.slow  # trains a tiny 6-run study (~7 s)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import regulab

    out = tmp_path_factory.mktemp("study")
    spec = {"epochs": 3, "seeds": 3, "dataset": {"name": "digits", "n_train": 300},
            "model": {"kind": "mlp", "widths": [32]}, "arms": {"baseline": {}, "dropout": {"p": 0.3}}}
    threads = torch.get_num_threads()
    try:
        regulab.Study(spec, out=out, quiet=True, threads=1).run()
    finally:
        torch.set_num_threads(threads)
    return out


def test_mc_json_and_pngs(study, tmp_path, capsys):
    rc = main(["mc", str(study), "--T", "1,5,20", "--repeats", "2", "--json", "--out", str(tmp_path)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["arm"] == "dropout" and doc["seeds"] == [0, 1, 2] and doc["Ts"] == [1, 5, 20]
    assert set(doc["error"]) == {"weight scaling", "MC T=20", "ensemble of 3"}
    assert doc["ensemble_members"] == [1, 2, 3] and len(doc["mc_error_sd"]) == 3
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in ("mc_curve", "reliability"))


def test_mc_text(study, capsys):
    rc = main(["mc", str(study), "--arm", "dropout", "--T", "1,10", "--repeats", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("arm dropout: 3 seed(s)") and "weight scaling" in out and "T=10:" in out


@pytest.mark.parametrize("argv,match", [
    (["--arm", "dropuot"], "--arm must be one of ['baseline', 'dropout'], got 'dropuot'; did you mean 'dropout'?"),
    (["--arm", "baseline"], "--arm must name an arm with dropout (p > 0), got 'baseline'"),
    (["--T", "0,5"], "--T must be positive integers like 1,10,100, got '0,5'"),
    (["--repeats", "0"], "--repeats must be an integer >= 1, got 0"),
])
def test_mc_bad_usage(study, capsys, argv, match):
    rc = main(["mc", str(study), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and match in err, err


def test_mc_not_a_study(tmp_path, capsys):
    rc = main(["mc", str(tmp_path / "nope")])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err
