"""Concurrency: two processes on one study folder, readers beside a writer, a Ray worker killed
mid-task.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regulab.cli import main
from test_hardening_forkserver import epoch_gaps, sigint_default, snapshot

LONG_SPEC = """\
name = "long"
seeds = 2
epochs = 400
batch_size = 50
checkpoint_every = 0.0
[dataset]
name = "digits"
n_train = 300
[model]
kind = "mlp"
widths = [16]
[arms.baseline]
[arms.dropout]
p = 0.2
"""


def _cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _epochs(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM epochs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_second_process_on_a_study_folder_is_refused(tmp_path):
    """A `regulab study` process holds the folder; a second one (same command, --resume, or another
    spec) is refused with exit 2 and a message naming the holder; a reader (`regulab report`)
    works beside it; the first process is not disturbed."""
    spec = tmp_path / "spec.toml"
    spec.write_text(LONG_SPEC)
    d = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "regulab", "study", str(spec), "--out", str(d), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 240
        while _epochs(d / "study.sqlite") < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        n_before = _epochs(d / "study.sqlite")
        held = f"{d}: another regulab process (pid {first.pid}) is using this study folder"
        for argv in (["study", spec, "--out", d, "--quiet"], ["study", "--resume", d, "--quiet"],
                     ["study", Path(__file__).parent / "corpus" / "base.toml", "--out", d, "--quiet"]):
            rc, out, err = _cli(argv)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert rc == 2 and len(lines) == 1 and held in lines[0], err
            assert "wait for it to finish or choose another --out folder" in lines[0]
        # readers need no lock: a report of the study so far
        rc, out, err = _cli(["report", d, "--quiet"])
        assert rc == 0, err
        assert first.poll() is None and _epochs(d / "study.sqlite") >= n_before
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    snap = snapshot(d)
    assert snap["integrity"] == [("ok",)] and epoch_gaps(snap) == []
    # the lock went with the process: the folder is usable again
    from regulab.study.store import Store

    with Store(d):
        pass


def test_lock_is_refused_in_process_too(tmp_path):
    """The same refusal for a second Store in one process (e.g. a notebook running two studies)."""
    from regulab.errors import StudyError
    from regulab.study.store import Store

    with Store(tmp_path / "s"):
        with pytest.raises(StudyError, match=f"another regulab process \\(pid {os.getpid()}\\)"):
            Store(tmp_path / "s")
    with Store(tmp_path / "s"):  # released on close
        pass


RAY_SPEC = {"epochs": 4, "seeds": 2, "checkpoint_every": 0.0, "dataset": {"name": "digits"},
            "model": {"kind": "mlp", "widths": [16]}, "arms": {"baseline": {}, "dropout": {"p": 0.2}},
            "sweep": [{"n_train": [150, 250]}]}


@pytest.mark.ray
@pytest.mark.slow
def test_ray_tasks_resume_from_commit_points_after_a_lost_worker_or_an_interrupted_study(tmp_path, monkeypatch):
    """Each group's first task attempt SIGKILLs its worker after its first commit point
    (REGULAB_TEST_RAY_CRASH_DIR hook in the executor); the driver starts the task again from
    that commit point (not from scratch). A study interrupted under the local executor resumes
    under Ray from the local checkpoint. Every run finishes with every epoch exactly once, and
    the results equal an uninterrupted local study's."""
    ray = pytest.importorskip("ray")
    import regulab
    from regulab.study import executor
    from regulab.study.store import open_results

    regulab.Study(RAY_SPEC, out=tmp_path / "local", quiet=True, threads=1).run()
    # a local study interrupted after its 2nd commit point: group 1 at epoch 2, group 2 not started
    real_commit, calls = executor.GroupJob.commit, []

    def interrupted(self, *args):
        real_commit(self, *args)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(executor.GroupJob, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        regulab.Study(RAY_SPEC, out=tmp_path / "resumed", quiet=True, threads=1).run()
    monkeypatch.setattr(executor.GroupJob, "commit", real_commit)

    crashes = tmp_path / "crashes"  # (the workers see the environment of ray.init)
    crashes.mkdir()
    monkeypatch.setenv("REGULAB_TEST_RAY_CRASH_DIR", str(crashes))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name in ("ray", "resumed"):  # (both studies have the same group keys: a fresh log each)
            regulab.Study(RAY_SPEC, out=tmp_path / name, executor="ray", quiet=True, threads=1).run()
            crashes.rename(tmp_path / f"crashes-{name}")
            crashes.mkdir()
    finally:
        ray.shutdown()
    snap_local = snapshot(tmp_path / "local")
    for name in ("ray", "resumed"):
        res = open_results(tmp_path / name)
        groups = list(dict.fromkeys(r["group_key"] for r in sorted(res.runs, key=lambda r: r["run_id"])))
        crashes = tmp_path / f"crashes-{name}"
        assert sorted(p.name for p in crashes.glob("*.log")) == sorted(f"{g}.log" for g in groups)
        for i, g in enumerate(groups):  # the first attempt died after its first commit; the second resumed there
            events = (crashes / f"{g}.log").read_text().split("\n")
            if name == "resumed" and i == 0:  # resumed at the local study's epoch 2
                assert events == ["start 2", "commit 3", "start 3", "commit 4", ""], (name, g)
            else:
                assert events == ["start 0", "commit 1", "start 1", "commit 2", "commit 3", "commit 4", ""], (name, g)
        assert {r["status"] for r in res.runs} == {"finished"} and len(res.finals) == len(res.runs) == 8
        assert {r["executor"] for r in res.runs} == {"ray"}
        snap = snapshot(tmp_path / name)
        assert snap["integrity"] == [("ok",)] and epoch_gaps(snap) == []
        assert snap["epochs"] == snap_local["epochs"] and snap["finals"] == snap_local["finals"]
        assert snap["weights"] == snap_local["weights"]
        assert not list((tmp_path / name / "checkpoints").glob("*"))
