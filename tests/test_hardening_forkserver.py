"""A warm fork server for the fault tests: `regulab study` as real, killable child processes.

A cold ``regulab study`` spends seconds importing torch and compiling kernels before its first
epoch, which would make dozens of kill/resume cycles far too slow for CI. The server (this file
run as a script) imports everything once, runs one warm-up study, then for each request forks a
child that runs ``regulab.cli.main(argv)`` exactly as the console script does, with its own
stdout/stderr. The *server* sends the signal (SIGKILL, SIGINT) after a delay, so the child is
killed from outside at an arbitrary instruction, and reports exit code, signal and the phase the
child was in.

Hooks installed in the child only (never in the code under test):

* phases: ``startup``, ``epoch`` (training between commits), ``sqlite`` (inside a write
  transaction), ``checkpoint``/``weights`` (safetensors temp file written, not yet renamed),
  ``report`` (writing report files), ``done``; kept in shared memory for the server to read;
* ``slow``: seconds slept inside each commit window (widens the windows random kills can hit);
* ``kill``: ``{"at": "sqlite"|"save"|"weights"|"report", "nth": k}``: SIGKILL itself at the k-th
  statement inside a write transaction / k-th safetensors temp file (any, or best weights only) /
  k-th report file;
* ``fail``: same keys plus ``times``: raise the error a full disk gives there instead
  (``sqlite3.OperationalError('database or disk is full')`` / ``OSError(ENOSPC)``).

Also the snapshot used to compare study databases (:func:`snapshot`). This module holds no tests.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
PHASE_BYTES = 32


# --- client side (used by the tests) ---------------------------------------------------------
class ForkServer:
    """Start the server, warm it up with ``warm_argv``, then ``run(argv, ...)`` per attempt."""

    def __init__(self, warm_argv: list[str], cwd: Path, timeout: float = 600) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(HERE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=cwd, env=env)
        self.timeout = timeout
        self.warm = self._ask({"argv": warm_argv, "inproc": True})
        assert self.warm.get("rc") == 0, f"warm-up failed: {self.warm}"

    def _ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fork server died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, argv: list[str], *, kill_after: float | None = None, sig: int = signal.SIGKILL,
            wait_phase: str | None = None, hooks: dict | None = None, timeout: float = 300) -> dict:
        """One child. ``kill_after`` seconds after start (or after ``wait_phase`` is first seen),
        the server sends ``sig`` unless the child has ended. Returns rc (None if killed by a
        signal), signal, phase at the end, stdout, stderr, wall."""
        return self._ask({"argv": [str(a) for a in argv], "kill_after": kill_after, "sig": int(sig),
                          "wait_phase": wait_phase, "hooks": hooks or {}, "timeout": timeout})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if not f.closed:
                f.close()


RUN_KEY = ("run_id", "name", "arm", "base_arm", "seed", "group_key", "config", "sweep", "status", "reason",
           "epochs_done", "versions", "threads", "executor")  # not: started_at, finished_at, wall_seconds
EPOCH_KEY = ("run_id", "epoch", "train_loss", "train_noise", "clean_train_loss", "clean_train_acc", "val_loss",
             "val_acc", "lr", "active")  # not: epoch_time


def snapshot(study_dir: Path) -> dict:
    """Everything that must not depend on interruptions: tables (minus wall-clock columns),
    weight files, and the integrity checks (which must pass)."""
    db = Path(study_dir) / "study.sqlite"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchall()
        fk = con.execute("PRAGMA foreign_key_check").fetchall()
        snap = {
            "integrity": [tuple(r) for r in integrity],
            "foreign_keys": [tuple(r) for r in fk],
            "spec": con.execute("SELECT spec_json, spec_hash FROM spec").fetchall(),
            "runs": con.execute(f"SELECT {', '.join(RUN_KEY)} FROM runs ORDER BY run_id").fetchall(),
            "epochs": con.execute(f"SELECT {', '.join(EPOCH_KEY)} FROM epochs ORDER BY run_id, epoch").fetchall(),
            "finals": con.execute("SELECT * FROM finals ORDER BY run_id").fetchall(),
        }
    finally:
        con.close()
    wdir = Path(study_dir) / "weights"
    snap["weights"] = {p.name: _weights(p) for p in sorted(wdir.glob("*.safetensors"))} if wdir.is_dir() else {}
    return snap


def _weights(path: Path) -> tuple:
    """Metadata and tensors of a safetensors file (its header's key order varies between
    processes, so the bytes of equal files may differ)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = sorted((f.metadata() or {}).items())
        tensors = sorted((k, str(f.get_tensor(k).dtype), tuple(f.get_tensor(k).shape),
                          f.get_tensor(k).numpy().tobytes()) for k in f.keys())
    return meta, tensors


def epoch_gaps(snap: dict) -> list[str]:
    """Runs whose epoch rows are not exactly 1..epochs_done (missing or extra epochs)."""
    by_run: dict[int, list[int]] = {}
    for row in snap["epochs"]:
        by_run.setdefault(row[0], []).append(row[1])
    bad = []
    for r in snap["runs"]:
        rid, done = r[0], r[RUN_KEY.index("epochs_done")]
        eps = by_run.get(rid, [])
        if eps != list(range(1, done + 1)):
            bad.append(f"run {rid}: epochs {eps[:3]}...{eps[-3:]} ({len(eps)}) vs epochs_done {done}")
    return bad


def leftovers(study_dir: Path) -> list[str]:
    """Temporary files a killed writer left in the study folder."""
    return sorted(str(p.relative_to(study_dir)) for p in Path(study_dir).rglob("*") if ".tmp" in p.name)


# --- server side -----------------------------------------------------------------------------
def _set_phase(shm, name: str) -> None:
    shm[:PHASE_BYTES] = name.encode()[:PHASE_BYTES].ljust(PHASE_BYTES, b"\0")


def _get_phase(shm) -> str:
    return bytes(shm[:PHASE_BYTES]).rstrip(b"\0").decode()


def _install_hooks(shm, hooks: dict) -> None:
    import errno

    import regulab.report as report
    import regulab.study.cli as study_cli
    import regulab.study.executor as executor

    slow = float(hooks.get("slow", 0.0))
    kill, fail = hooks.get("kill"), hooks.get("fail")
    counts = {"sqlite": 0, "save": 0, "weights": 0, "report": 0}
    state = {"training": False}

    def event(kind: str) -> None:
        counts[kind] += 1
        n = counts[kind]
        if kill and kill["at"] == kind and kill["nth"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        if fail and fail["at"] == kind and fail["nth"] <= n < fail["nth"] + fail.get("times", 10**9):
            if kind == "sqlite":
                raise sqlite3.OperationalError("database or disk is full")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class Hooked(sqlite3.Connection):
        def _hook(self, sql: str) -> None:
            head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if head == "BEGIN":
                _set_phase(shm, "sqlite")
            elif self.in_transaction and head not in ("COMMIT", "ROLLBACK"):
                event("sqlite")
                if slow:
                    time.sleep(slow)

        def _after(self, sql: str) -> None:
            if sql.lstrip().upper().startswith(("COMMIT", "ROLLBACK")):
                _set_phase(shm, "epoch" if state["training"] else "startup")

        def execute(self, sql, *args):
            self._hook(sql)
            cur = super().execute(sql, *args)
            self._after(sql)
            return cur

        def executemany(self, sql, *args):
            self._hook(sql)
            cur = super().executemany(sql, *args)
            self._after(sql)
            return cur

    real_connect = sqlite3.connect

    def connect(*args, **kw):
        kw.setdefault("factory", Hooked)
        return real_connect(*args, **kw)

    sqlite3.connect = connect

    real_save = executor.save_file

    def save_file(tensors, filename, metadata=None):
        phase = "weights" if f"{os.sep}weights{os.sep}" in str(filename) else "checkpoint"
        _set_phase(shm, phase)
        if fail and fail["at"] == "save":
            event("save")
            real_save(tensors, filename, metadata=metadata)
        else:
            real_save(tensors, filename, metadata=metadata)
            event("save")  # the temp file exists, the rename has not happened
            if phase == "weights":
                event("weights")
        if slow:
            time.sleep(slow)
        _set_phase(shm, "epoch")

    executor.save_file = save_file

    real_job_run = executor.GroupJob.run

    def job_run(self):
        state["training"] = True
        _set_phase(shm, "epoch")
        return real_job_run(self)

    executor.GroupJob.run = job_run

    real_write = report.atomic_write_text

    def atomic_write_text(path, text):
        _set_phase(shm, "report")
        event("report")
        if slow:
            time.sleep(slow)
        real_write(path, text)

    report.atomic_write_text = atomic_write_text

    real_after = study_cli._after_study

    def after_study(d):
        state["training"] = False
        _set_phase(shm, "report")
        real_after(d)
        _set_phase(shm, "done")

    study_cli._after_study = after_study



def sigint_default() -> None:
    """``preexec_fn`` for a child the test interrupts: SIGINT back at its default disposition.

    A suite started in the background (``make test &``, nohup, some CI runners) runs with SIGINT
    ignored, and exec keeps an ignored signal ignored: Python then installs no KeyboardInterrupt
    handler and ``regulab study`` (rightly) keeps ignoring it, so the test's Ctrl-C would be lost.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def _child(argv: list[str], shm, hooks: dict, out_fd: int, err_fd: int) -> None:
    import traceback

    rc = 98
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _set_phase(shm, "startup")
        _install_hooks(shm, hooks)
        from regulab.cli import main

        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - report it like the interpreter would, as exit 1
        traceback.print_exc()
        rc = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc if isinstance(rc, int) else 1)


def _attempt(msg: dict) -> dict:
    import mmap

    shm = mmap.mmap(-1, PHASE_BYTES)
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(msg["argv"], shm, msg.get("hooks") or {}, out_fd, err_fd)
        os.close(out_fd)
        os.close(err_fd)
        kill_after, wait_phase = msg.get("kill_after"), msg.get("wait_phase")
        limit = t0 + float(msg.get("timeout") or 300)
        start = None if wait_phase else t0
        sent = False
        timeline: dict[str, float] = {}  # phase -> first seen (seconds after the fork)
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                break
            now = time.monotonic()
            timeline.setdefault(_get_phase(shm), now - t0)
            if start is None and _get_phase(shm) == wait_phase:
                start = now
            if kill_after is not None and not sent and start is not None and now >= start + kill_after:
                phase_at_signal = _get_phase(shm)
                os.kill(pid, msg.get("sig", signal.SIGKILL))
                sent = True
            if now > limit:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"rc": None, "signal": None, "timeout": True, "phase": _get_phase(shm),
                        "stderr": err_path.read_text(errors="replace")}
            time.sleep(0.002)
        wall = time.monotonic() - t0
        res = {"rc": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
               "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
               "sent": sent, "phase": _get_phase(shm), "wall": wall, "timeline": timeline,
               "stdout": out_path.read_text(errors="replace"), "stderr": err_path.read_text(errors="replace")}
        if sent:
            res["phase_at_signal"] = phase_at_signal
    return res


def _inproc(msg: dict) -> dict:
    """The warm-up: run in the server itself so every later child starts warm."""
    import contextlib
    import io

    from regulab.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(msg["argv"])
    return {"rc": rc, "wall": time.monotonic() - t0, "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve() -> None:
    import torch

    torch.set_num_threads(1)
    import regulab.cli  # noqa: F401
    import regulab.report  # noqa: F401
    import regulab.study.api  # noqa: F401
    import regulab.study.executor  # noqa: F401

    for line in sys.stdin:
        msg = json.loads(line)
        res = _inproc(msg) if msg.get("inproc") else _attempt(msg)
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
