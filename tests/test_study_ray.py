"""The Ray executor gives the local executor's results (tiny study, local Ray with 2 CPUs)."""
from __future__ import annotations

import pytest

import regulab
from regulab.study.store import open_results

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # Ray start-up alone takes ~20-40 s here

SPEC = {"epochs": 3, "seeds": 2, "dataset": {"name": "digits"}, "model": {"kind": "mlp", "widths": [16]},
        "arms": {"baseline": {}, "dropout": {"p": 0.2}}, "sweep": [{"n_train": [150, 250]}]}


def _key(d):
    res = open_results(d)
    return ([(e["run_id"], e["epoch"], e["train_loss"], e["val_acc"]) for e in res.epochs],
            [(f["run_id"], f["best_epoch"], f["test_acc"]) for f in res.finals], res)


def test_ray_executor_matches_local(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    regulab.Study(SPEC, out=tmp_path / "local", quiet=True).run()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        capsys.readouterr()
        regulab.Study(SPEC, out=tmp_path / "ray", executor="ray").run()
        log = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("regulab study:")]
    finally:
        ray.shutdown()
    ep_l, fin_l, _ = _key(tmp_path / "local")
    ep_r, fin_r, res = _key(tmp_path / "ray")
    assert len({r["group_key"] for r in res.runs}) == 2  # two groups, two Ray tasks
    assert {r["executor"] for r in res.runs} == {"ray"} and {r["status"] for r in res.runs} == {"finished"}
    assert ep_r == ep_l and fin_r == fin_l
    # progress: each group's epochs (streamed from its task) and the runs as groups finish
    for g in {r["group_key"] for r in res.runs}:
        assert [ln for ln in log if f"group {g} of 4 runs stacked, epoch " in ln][-1].split(" (")[0].endswith("3/3")
    assert log[0] == "regulab study: 8 runs, 0 already done" and log[-1] == "regulab study: 8/8 runs done"
