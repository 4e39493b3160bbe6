"""The study engine end to end: determinism, resume, crash safety, CLI, user models."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import regulab
from regulab.cli import main
from regulab.study import executor
from regulab.study.store import open_results

TINY = {"name": "tiny", "epochs": 4, "seeds": 2, "checkpoint_every": 0.0,
        "dataset": {"name": "digits", "n_train": 200}, "model": {"kind": "mlp", "widths": [16]},
        "arms": {"baseline": {}, "dropout": {"p": 0.3, "input_noise": 0.1},
                 "es": {"early_stopping": {"patience": 0, "min_delta": 5.0}}}}


def _metrics(d):
    res = open_results(d)
    ep = [(e["run_id"], e["epoch"], e["train_loss"], e["val_loss"], e["clean_train_acc"]) for e in res.epochs]
    fin = [(f["run_id"], f["best_epoch"], f["test_loss"], f["test_acc"]) for f in res.finals]
    return ep, fin, res


def test_same_spec_same_metrics_and_finished_runs_are_reused(tmp_path):
    a = regulab.Study(TINY, out=tmp_path / "a", quiet=True).run()
    regulab.Study(TINY, out=tmp_path / "b", quiet=True).run()
    assert _metrics(tmp_path / "a")[:2] == _metrics(tmp_path / "b")[:2]
    assert {r["status"] for r in a.runs} == {"finished"} and len(a.finals) == 6
    es = [f for f, r in zip(a.finals, a.runs) if r["arm"] == "es"]
    assert all(f["stopped_epoch"] == 2 for f in es)
    assert all(len(a.epochs_of(r["run_id"])) == 2 for r in a.runs if r["arm"] == "es")
    for f in a.finals:
        assert (tmp_path / "a" / f["weights"]).is_file()
    before = [(r["run_id"], r["finished_at"]) for r in a.runs]
    again = regulab.Study(TINY, out=tmp_path / "a", quiet=True).run()
    assert [(r["run_id"], r["finished_at"]) for r in again.runs] == before  # nothing recomputed


FACTORY = ("import torch\n"
           "def make(input_shape, num_classes, hidden=16):\n"
           "    n = 1\n    for s in input_shape: n *= s\n"
           "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n, hidden), torch.nn.ReLU(),\n"
           "                               torch.nn.Dropout(0.0), torch.nn.Linear(hidden, num_classes))\n")


def _factory_spec(tmp_path, **kw) -> dict:
    """TINY on a user model: per-run groups (the per-run trainer)."""
    f = tmp_path / "net.py"
    f.write_text(FACTORY)
    return {**TINY, "model": {"kind": f"{f}:make", "kwargs": {"hidden": 12}}, **kw}


@pytest.mark.parametrize("per_run", [False, True])
@pytest.mark.parametrize("crash_before_db", [True, False])
def test_interrupted_study_resumes_to_identical_results(tmp_path, monkeypatch, crash_before_db, per_run):
    spec = _factory_spec(tmp_path) if per_run else TINY
    regulab.Study(spec, out=tmp_path / "ref", quiet=True).run()
    real_commit, real_record = executor.GroupJob.commit, executor.Store.record_epochs
    calls = {"n": 0}

    def crashing_commit(self, tensors, info, rows, statuses):
        calls["n"] += 1
        if calls["n"] == 3:
            if crash_before_db:  # checkpoint written, transaction never happened
                monkeypatch.setattr(executor.Store, "record_epochs", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
            else:
                real_commit(self, tensors, info, rows, statuses)
                raise KeyboardInterrupt
        real_commit(self, tensors, info, rows, statuses)

    monkeypatch.setattr(executor.GroupJob, "commit", crashing_commit)
    with pytest.raises(KeyboardInterrupt):
        regulab.Study(spec, out=tmp_path / "run", quiet=True).run()
    monkeypatch.setattr(executor.GroupJob, "commit", real_commit)
    monkeypatch.setattr(executor.Store, "record_epochs", real_record)
    part = open_results(tmp_path / "run")
    assert max(e["epoch"] for e in part.epochs) == (2 if crash_before_db else 3)
    regulab.Study(spec, out=tmp_path / "run", quiet=True).run()
    assert _metrics(tmp_path / "run")[:2] == _metrics(tmp_path / "ref")[:2]


@pytest.mark.slow
def test_kill_9_loses_nothing_committed_and_never_duplicates(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('epochs = 40\nseeds = 2\ncheckpoint_every = 0.0\n[dataset]\nname = "digits"\nn_train = 200\n'
                    '[model]\nwidths = [16]\n[arms.baseline]\n[arms.dropout]\np = 0.3\n')
    cmd = [sys.executable, "-m", "regulab", "study", str(spec), "--quiet", "--out"]
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True)
    out = tmp_path / "run"
    for delay in (2.5, 4.0):
        p = subprocess.Popen(cmd + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while time.time() - t0 < 60 and not (out / "checkpoints").is_dir():
            time.sleep(0.05)
        time.sleep(delay / 10)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    subprocess.run(cmd + [str(out)], check=True, capture_output=True)
    assert _metrics(out)[:2] == _metrics(tmp_path / "ref")[:2]


def test_cli_runs_a_spec_and_prints_a_summary(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('epochs = 2\nseeds = 2\n[dataset]\nname = "digits"\nn_train = 150\n'
                    '[model]\nwidths = [8]\n[arms.baseline]\n[arms."label smoothing"]\nlabel_smoothing = 0.1\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "label smoothing" in out and "±" in out and str((tmp_path / "o").resolve()) in out
    assert main(["study", "--resume", str(tmp_path / "o"), "--quiet"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[arms.dropout]\np = 1.5\n")
    assert main(["study", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == \
        "regulab study: error: spec.arms.dropout.p: must be a number in [0, 1), got 1.5"


def test_user_model_with_extra_state_trains_without_mid_run_checkpoints(tmp_path):
    f = tmp_path / "extra.py"
    f.write_text("import torch\n"
                 "class Net(torch.nn.Sequential):\n"
                 "    def get_extra_state(self):\n        return {'note': 'not a tensor'}\n"
                 "    def set_extra_state(self, state):\n        pass\n"
                 "def make(input_shape, num_classes):\n"
                 "    n = 1\n    for s in input_shape: n *= s\n"
                 "    return Net(torch.nn.Flatten(), torch.nn.Linear(n, num_classes))\n")
    spec = {**TINY, "seeds": 1, "arms": {"baseline": {}}, "model": {"kind": f"{f}:make"}}
    res = regulab.Study(spec, out=tmp_path / "x", quiet=True).run()
    assert {r["status"] for r in res.runs} == {"finished"} and len(res.epochs_of(res.runs[0]["run_id"])) == 4


def test_user_factory_model_trains_per_run(tmp_path):
    spec = _factory_spec(tmp_path, seeds=1)
    res = regulab.Study(spec, out=tmp_path / "u", quiet=True).run()
    assert {r["status"] for r in res.runs} == {"finished"}
    assert len({r["group_key"] for r in res.runs}) == 3  # one run per group
    assert all(f["test_acc"] > 0.3 for f in res.finals)


def test_a_user_model_that_raises_leaves_the_other_runs_to_finish_then_resumes(tmp_path, capsys, monkeypatch):
    f = tmp_path / "flaky.py"
    f.write_text("import os, torch\n"
                 "class Net(torch.nn.Linear):\n"
                 "    def __init__(self, *a):\n"
                 "        super().__init__(*a)\n"
                 "        self.seed, self.calls = torch.initial_seed(), 0  # built under manual_seed(run seed)\n"
                 "    def forward(self, x):\n"
                 "        self.calls += 1\n"
                 "        if os.environ.get('REGULAB_TEST_BOOM') and self.seed == 0 and self.calls > 6:\n"
                 "            raise ValueError('boom mid-training')\n"
                 "        return super().forward(x.flatten(1))\n"
                 "def make(input_shape, num_classes):\n"
                 "    return Net(64, num_classes)\n")
    out = tmp_path / "s"
    monkeypatch.setenv("REGULAB_TEST_BOOM", "1")
    toml = tmp_path / "spec.toml"
    toml.write_text(f'epochs = 4\nseeds = 2\ncheckpoint_every = 0.0\n[dataset]\nname = "digits"\nn_train = 200\n'
                    f'[model]\nkind = "{f}:make"\n[arms.baseline]\n')
    assert main(["study", str(toml), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    # one line: the run, the error and where the user's code raised it; the other run trained
    assert err == (f"regulab study: error: {out}: run baseline/seed=0 (group "
                   f"{open_results(out).runs[0]['group_key']}) raised ValueError: boom mid-training at {f}:9; "
                   "the other groups finished and every committed epoch is kept: re-run the same command to resume")
    res = open_results(out)
    assert [r["status"] for r in res.runs][1] == "finished" and res.runs[0]["status"] != "finished"
    done = res.runs[1]["finished_at"]
    monkeypatch.delenv("REGULAB_TEST_BOOM")  # the model fixed: the same command resumes the failed run only
    assert main(["study", str(toml), "--out", str(out), "--quiet"]) == 0
    res = open_results(out)
    assert {r["status"] for r in res.runs} == {"finished"} and res.runs[1]["finished_at"] == done
    # a full disk is the machine's, not the model's: it stops the study at once, with its own message
    def full(*a, **kw):
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                           'message: "No space left on device" })')  # as safetensors words it
    with monkeypatch.context() as m:
        m.setattr(executor, "atomic_save", full)
        assert main(["study", str(toml), "--out", str(tmp_path / "full"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"regulab study: error: {tmp_path / 'full'}: the disk is full") and "\n" not in err
    assert [r["status"] for r in open_results(tmp_path / "full").runs] != ["finished"] * 2
    # a built-in (stacked) model's error is not the user's: it stops the study at once
    monkeypatch.setattr(executor.GroupJob, "run", lambda self: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        regulab.Study(TINY, out=tmp_path / "b", quiet=True).run()
