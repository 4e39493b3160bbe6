"""The Ray executor gives the local executor's results (tiny studies, local Ray with 2 CPUs), and
its tasks train on the driver's data (a data file need only be on the driver's machine)."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import regulab
from regulab.data import load
from regulab.errors import StudyError
from regulab.study import executor
from regulab.study.store import open_results

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # Ray start-up alone takes ~20-40 s here

SPEC = {"epochs": 3, "seeds": 2, "dataset": {"name": "digits"}, "model": {"kind": "mlp", "widths": [16]},
        "arms": {"baseline": {}, "dropout": {"p": 0.2}}, "sweep": [{"n_train": [150, 250]}]}


def _key(d):
    res = open_results(d)
    return ([(e["run_id"], e["epoch"], e["train_loss"], e["val_acc"]) for e in res.epochs],
            [(f["run_id"], f["best_epoch"], f["test_acc"]) for f in res.finals], res)


def test_ray_executor_matches_local(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    d = load("digits")
    npz = tmp_path / "mine.npz"  # a user's data file, gone from disk once the driver has read it
    np.savez(npz, x_train=d.x_train.numpy(), y_train=d.y_train.numpy(), x_test=d.x_test.numpy(),
             y_test=d.y_test.numpy())
    own = {**SPEC, "dataset": {"name": str(npz)}, "sweep": []}
    regulab.Study(SPEC, out=tmp_path / "local", quiet=True).run()
    regulab.Study(own, out=tmp_path / "own-local", quiet=True).run()
    real_run_ray = executor.run_ray

    def run_ray_without_the_file(*args, **kw):
        npz.unlink(missing_ok=True)
        return real_run_ray(*args, **kw)

    # a model whose seed-0 run fails in every Ray worker (not in the driver, which checks the spec
    # first); the seed-1 run (its own group: user models train one run per group) trains
    (tmp_path / "net.py").write_text(
        "import os, torch\nfrom torch import nn\n"
        "class Net(nn.Linear):\n"
        "    def __init__(self, *a):\n"
        "        super().__init__(*a)\n"
        "        self.boom = torch.initial_seed() == 0  # built under torch.manual_seed(run seed)\n"
        "    def forward(self, x):\n"
        "        if self.boom and os.getpid() != int(os.environ['REGULAB_TEST_DRIVER_PID']):\n"
        "            raise ValueError('boom in the worker')\n"
        "        return super().forward(x.flatten(1))\n"
        "def make(input_shape, num_classes):\n"
        "    return Net(64, num_classes)\n")
    failing = {"epochs": 2, "seeds": 2, "arms": {"baseline": {}}, "dataset": {"name": "digits"},
               "model": {"kind": f"{tmp_path / 'net.py'}:make"}}
    cancelled = []
    monkeypatch.setenv("REGULAB_TEST_DRIVER_PID", str(os.getpid()))  # (before ray.init: the workers' too)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        capsys.readouterr()
        regulab.Study(SPEC, out=tmp_path / "ray", executor="ray").run()
        log = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("regulab study:")]
        with pytest.raises(StudyError) as err:
            regulab.Study(failing, out=tmp_path / "failing", executor="ray", quiet=True).run()
        # a driver stopped early (Ctrl-C at the first task's start) cancels the tasks still running
        real_cancel, real_begin = ray.cancel, executor.GroupJob.begin
        monkeypatch.setattr(ray, "cancel", lambda gen, **kw: (cancelled.append(gen), real_cancel(gen, **kw)))
        monkeypatch.setattr(executor.GroupJob, "begin", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            regulab.Study(SPEC, out=tmp_path / "stopped", executor="ray", quiet=True).run()
        monkeypatch.setattr(executor.GroupJob, "begin", real_begin)
        monkeypatch.setattr(ray, "cancel", real_cancel)
        monkeypatch.setattr(executor, "run_ray", run_ray_without_the_file)
        regulab.Study(own, out=tmp_path / "own-ray", executor="ray", quiet=True).run()
    finally:
        ray.shutdown()
    # every attempt failed: one line naming the group, the attempts and the task's last error
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'failing'))}: group g[0-9a-f]+ \(1 run\) failed in 3 Ray task "
                        r"attempts, the last with: ValueError: boom in the worker; the other groups finished and "
                        r"every committed epoch is kept: re-run the same command to resume",
                        str(err.value)), str(err.value)
    # the failed group's run is left to resume; the other group trained to its end
    status = {r["seed"]: r["status"] for r in open_results(tmp_path / "failing").runs}
    assert status[1] == "finished" and status[0] != "finished"
    assert len(cancelled) == 2  # both groups' tasks of the stopped study
    assert not npz.exists() and _key(tmp_path / "own-ray")[:2] == _key(tmp_path / "own-local")[:2]
    ep_l, fin_l, _ = _key(tmp_path / "local")
    ep_r, fin_r, res = _key(tmp_path / "ray")
    assert len({r["group_key"] for r in res.runs}) == 2  # two groups, two Ray tasks
    assert {r["executor"] for r in res.runs} == {"ray"} and {r["status"] for r in res.runs} == {"finished"}
    assert ep_r == ep_l and fin_r == fin_l
    # progress: each group's epochs (streamed from its task) and the runs as groups finish
    for g in {r["group_key"] for r in res.runs}:
        assert [ln for ln in log if f"group {g} of 4 runs stacked, epoch " in ln][-1].split(" (")[0].endswith("3/3")
    assert log[0] == "regulab study: 8 runs, 0 already done" and log[-1] == "regulab study: 8/8 runs done"
