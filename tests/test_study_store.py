"""Study folder store: schema, foreign files, lock, read API."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from regulab.errors import StudyError
from regulab.study.store import APPLICATION_ID, DB_NAME, SCHEMA_VERSION, Store, open_results, safe_name


def _run(i, seed=0):
    return dict(run_id=i, name=f"a/seed={seed}", arm="a", base_arm="a", seed=seed, group_key="g",
                config={"p": 0.1}, sweep={"p": 0.1})


def test_roundtrip_and_resume_semantics(tmp_path):
    with Store(tmp_path) as st:
        st.init_spec({"x": 1}, "h1")
        st.add_runs([_run(1), _run(2, 1)])
        st.mark_started([1, 2], versions={"torch": "x"}, threads=2, executor="local")
        st.record_epochs([dict(run_id=1, epoch=e, val_acc=e / 10) for e in (1, 2, 3)])
        # resume from a checkpoint at epoch 2: rows after it are dropped and re-recorded in one tx
        st.record_epochs([dict(run_id=1, epoch=2, val_acc=0.9)], discard_after=([1], 2))
        st.finish_runs([dict(run_id=1, best_epoch=2, test_acc=0.7)], {1: ("finished", None),
                       2: ("failed", "diverged")}, wall_seconds=1.0)
    res = open_results(tmp_path)
    assert [e["epoch"] for e in res.epochs_of(1)] == [1, 2]
    assert res.epochs_of(1)[-1]["val_acc"] == 0.9
    assert res.run(1)["status"] == "finished" and res.run(1)["epochs_done"] == 2
    assert res.run(2)["reason"] == "diverged" and res.run(1)["config"] == {"p": 0.1}
    assert res.columns("finals")["test_acc"] == [0.7]
    assert res.meta["schema_version"] == str(SCHEMA_VERSION)
    con = sqlite3.connect(tmp_path / DB_NAME)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_same_spec_resumes_different_spec_refused(tmp_path):
    with Store(tmp_path) as st:
        st.init_spec({"x": 1}, "h1")
    with Store(tmp_path) as st:
        st.init_spec({"x": 1}, "h1")
        with pytest.raises(StudyError, match="different study spec"):
            st.init_spec({"x": 2}, "h2")


def test_foreign_sqlite_refused_and_untouched(tmp_path):
    db = tmp_path / DB_NAME
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(StudyError, match="another application"):
        Store(tmp_path)
    with pytest.raises(StudyError):
        open_results(tmp_path)
    assert db.read_bytes() == before
    db.write_bytes(b"hello")
    with pytest.raises(StudyError, match="not SQLite"):
        Store(tmp_path)


def test_nonempty_foreign_folder_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StudyError, match="must be empty or a regulab study"):
        Store(tmp_path)


def test_second_process_refused(tmp_path):
    with Store(tmp_path):
        code = ("import sys; from regulab.study.store import Store\n"
                "try:\n    Store(sys.argv[1])\nexcept Exception as e:\n    print(e); sys.exit(3)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert out.returncode == 3 and "another regulab process" in out.stdout
    Store(tmp_path).close()  # lock released on close


def test_safe_name():
    assert "/" not in safe_name("a/../b") and safe_name("") == "run"


def test_temp_files_of_a_killed_writer_are_removed_when_the_folder_is_opened(tmp_path):
    with Store(tmp_path) as st:
        st.init_spec({"x": 1}, "h1")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "weights").mkdir()
    dead = [tmp_path / "checkpoints" / ".tmpcjLwiz",  # safetensors' own temp file
            tmp_path / "checkpoints" / "g.safetensors.tmp4242",  # ours
            tmp_path / "weights" / ".tmpAb12Cd"]
    kept = [tmp_path / "checkpoints" / "g.safetensors", tmp_path / "weights" / "0001-a.safetensors"]
    for p in dead + kept:
        p.write_bytes(b"x")
    with Store(tmp_path):
        pass
    assert [p.exists() for p in dead] == [False] * len(dead)
    assert [p.exists() for p in kept] == [True] * len(kept)
