"""Executors: train groups in-process (with checkpoints) or as Ray tasks.

Commit protocol of a group (local executor), at each commit point:

1. the group's training state is written to ``checkpoints/<group>.safetensors`` (tensors,
   with the JSON state and the epoch rows of this commit in its metadata) atomically:
   temp file + fsync + ``os.replace``;
2. one SQLite transaction records those epoch rows and status changes.

On resume, a group with a checkpoint at epoch E drops its rows after E and re-inserts the
checkpoint's rows in one transaction, then continues from E; without a checkpoint its runs
restart from scratch. At the end: best weights (safetensors, atomic), then one transaction
with the final metrics and statuses, then the checkpoint is removed.

The Ray executor keeps the same protocol: its tasks stream each commit point back to the
driver, which writes it here, so checkpoints serve retries, resumes and either executor.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import RegulabError, StudyError, first_line
from .plan import Group
from .spec import Spec
from .store import Store, disk_full, safe_name

__all__ = ["GroupJob", "run_local", "run_ray", "atomic_save"]


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically (temp + fsync + os.replace + directory fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # temp files of a writer that was killed (the folder has one writer: the lock holder's)
    for stale in path.parent.glob(path.name + ".tmp*"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: leave no partial temp file behind
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _make_trainer(group: Group, spec: Spec, data):
    if group.stacked:
        from .trainer_stacked import StackedTrainer

        return StackedTrainer(group, spec, data)
    from .trainer_run import RunTrainer

    return RunTrainer(group, spec, data)


def weights_file(run) -> str:
    return f"weights/{run.run_id:04d}-{safe_name(run.name)}.safetensors"


class GroupJob:
    """One group's commit protocol on ``store``; :meth:`run` trains it in this process.

    The Ray driver uses the same protocol with the training done by a task (:func:`run_ray`):
    :meth:`checkpoint` to resume, :meth:`begin`, :meth:`commit` per commit point, :meth:`finish`.
    """

    def __init__(self, group: Group, spec: Spec, store: Store, data=None, progress=None) -> None:
        self.group, self.spec, self.data, self.store, self.progress = group, spec, data, store, progress
        self.ckpt = store.dir / "checkpoints" / f"{group.key}.safetensors"
        self.ids = [r.run_id for r in group.runs]

    def run(self) -> None:
        t0 = time.perf_counter()
        ck = self.checkpoint()
        trainer, resumed = _trainer(self.group, self.spec, self.data, ck)
        self.begin(ck if resumed else None, "local")
        finals = trainer.run(on_commit=lambda rows, st: self.commit(*trainer.state(), rows, st),
                             on_epoch=self.progress)
        self.finish(trainer.runs, finals, [trainer.member_weights(m) for m in range(len(finals))],
                    time.perf_counter() - t0)

    def checkpoint(self) -> tuple[dict[str, torch.Tensor], dict, list[dict], dict] | None:
        """The group's last commit point, ``(tensors, state, rows, statuses)``; None without a
        readable one. A trainer loads the first two; :meth:`begin` stores the last two."""
        if not self.ckpt.exists():
            return None
        try:
            tensors = load_file(str(self.ckpt))
            with open(self.ckpt, "rb") as f:  # metadata: the JSON state and the rows of that commit
                n = int.from_bytes(f.read(8), "little")
                meta = json.loads(f.read(n))["__metadata__"]
            info, rows, st = json.loads(meta["state"]), json.loads(meta["rows"]), json.loads(meta["statuses"])
            return tensors, info, rows, {int(k): tuple(v) for k, v in st.items()}
        except Exception:  # unreadable: the group starts again
            return None

    def begin(self, resumed_from, executor: str, threads: int | None = None) -> None:
        """The store side of a (re)start: resumed from a :meth:`checkpoint`, its rows are
        re-inserted and any later ones dropped; None: the runs restart from scratch."""
        if resumed_from is not None:
            _, info, rows, st = resumed_from
            self.store.record_epochs(rows, st, discard_after=(self.ids, int(info["epoch"])))
        else:
            self.ckpt.unlink(missing_ok=True)
            self.store.reset_runs(self.ids)
        self.store.mark_started(self.ids, versions=_versions(), executor=executor,
                                threads=torch.get_num_threads() if threads is None else threads)

    def commit(self, tensors: dict[str, torch.Tensor], info: dict, rows: list[dict], statuses: dict) -> None:
        meta = {"state": json.dumps(info), "rows": json.dumps(rows),
                "statuses": json.dumps({str(k): list(v) for k, v in statuses.items()})}
        if tensors:  # empty: a user model whose state safetensors can't hold restarts when interrupted
            atomic_save(tensors, self.ckpt, meta)  # 1. checkpoint, durable
        self.store.record_epochs(rows, statuses)  # 2. then the rows, one transaction

    def finish(self, runs: list, finals: list[dict], weights: list[dict], wall: float) -> None:
        write_finals(self.store, runs, finals, weights, wall)
        self.ckpt.unlink(missing_ok=True)


def _trainer(group: Group, spec: Spec, data, ck) -> tuple:
    """``(trainer, resumed)``: a new trainer, at the checkpoint ``ck`` when it loads (a damaged
    one, or one of other runs, leaves a fresh trainer: the group starts again)."""
    trainer = _make_trainer(group, spec, data)
    if ck is None:
        return trainer, False
    try:
        trainer.load_state(ck[0], ck[1])
    except Exception:
        return _make_trainer(group, spec, data), False
    return trainer, True


def write_finals(store: Store, runs: list, finals: list[dict], weights: list[dict], wall: float) -> None:
    """Best weights (one safetensors file per run), then final metrics and statuses in one transaction."""
    statuses, rows = {}, []
    for run, f, w in zip(runs, finals, weights):
        if f.get("failed"):
            statuses[run.run_id] = ("failed", f["failed"])
            continue
        rel = weights_file(run)
        atomic_save(w, store.dir / rel, {"run": run.name, "arm": run.arm, "seed": str(run.seed)})
        rows.append({**f, "weights": rel})
        statuses[run.run_id] = ("finished", None)
    store.finish_runs(rows, statuses, wall)


def _versions() -> dict:
    from ._common import versions

    return versions()


def run_local(groups: list[Group], spec: Spec, load_data, store: Store, progress=None) -> None:
    """Train the groups one after the other in this process; ``progress``: see ``api._Progress``.

    A user's model (a per-run group) that raises while training leaves the other groups to train
    to their end; then a :class:`StudyError` names the run, the error and where it was raised (its
    committed epochs are kept: once the model is fixed, the same command resumes it). Errors of
    the machine (a full disk, memory) and of built-in models stop the study at once.
    """
    failed: list[tuple[Group, str]] = []
    for g in groups:
        try:
            GroupJob(g, spec, store, load_data(g.n_train), progress.for_group(g) if progress else None).run()
        except Exception as e:
            if g.stacked or disk_full(e) or isinstance(e, (OSError, MemoryError, sqlite3.Error, RegulabError)):
                raise
            failed.append((g, f"{type(e).__name__}: {first_line(e)}{_raised_at(e)}"))
            continue
        if progress:
            progress.group_done(g)
    if failed:
        g, what = failed[0]
        raise StudyError(_failed(store, f"run {g.runs[0].name} (group {g.key}) raised {what}", len(failed) - 1))


def _failed(store: Store, first: str, more: int) -> str:
    """One line for groups that failed for good while the others trained to their end."""
    also = f" (and {more} more group{'s' * (more != 1)})" if more else ""
    return (f"{store.dir}: {first}{also}; the other groups finished and every committed epoch is kept: "
            "re-run the same command to resume")


def _raised_at(e: BaseException) -> str:
    """`` at FILE:LINE``: the innermost frame outside torch and regulab (the user's code)."""
    skip = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(os.path.dirname(__file__)) + os.sep)
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(skip)]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _ray_train(group: Group, spec_json: dict, data, threads: int, checkpoint):
    """Ray generator task: train one group on ``data`` (the driver's split, so a data file need
    only be on the driver's machine), from ``checkpoint`` (tensors, state) when given.

    Yields ``("start", resumed)``, then ``("epoch", epoch, seconds)`` after each epoch and
    ``("commit", tensors, state, rows, statuses)`` at each commit point, then ``("final", runs,
    finals, weights, wall)``. The driver stores them (:class:`GroupJob`'s protocol), so a
    retried or resumed task continues from its group's last commit point.
    """
    from .._malloc import retain_freed_memory

    retain_freed_memory()  # a worker of this job: as the local `regulab study` process
    torch.set_num_threads(threads)
    from .spec import parse_spec

    t0 = time.perf_counter()
    trainer, resumed = _trainer(group, parse_spec(spec_json), data, checkpoint)
    _test_worker_crash(group.key, "start", trainer.epoch)
    yield "start", resumed
    events = trainer.events()
    while True:
        try:
            kind, *args = next(events)
        except StopIteration as stop:
            finals = stop.value
            break
        if kind == "epoch":
            yield "epoch", *args
            continue
        tensors, info = trainer.state()
        yield "commit", {k: v.clone() for k, v in tensors.items()}, info, *args
        _test_worker_crash(group.key, "commit", trainer.epoch)
    weights = [trainer.member_weights(m) for m in range(len(finals))]
    yield "final", trainer.runs, finals, weights, time.perf_counter() - t0


def _test_worker_crash(key: str, event: str, epoch: int) -> None:
    """Test hook: with ``REGULAB_TEST_RAY_CRASH_DIR`` set, each task attempt appends
    ``"<event> <epoch>"`` to ``<dir>/<key>.log`` at its start and after each commit point, and
    the first attempt of each group SIGKILLs its own worker after its first commit point
    (mid-task), as an OOM kill or a lost node would. Unset: does nothing.

    It kills once the driver has stored that commit (:func:`_test_commit_stored`): a yielded
    commit travels to the driver asynchronously, and a worker killed before it arrives loses
    it (correctly: the retry then starts from the commit before), which would make the test's
    expected resume point a race."""
    folder = os.environ.get("REGULAB_TEST_RAY_CRASH_DIR")
    if not folder:
        return
    log = Path(folder) / f"{key}.log"
    with open(log, "a") as f:
        f.write(f"{event} {epoch}\n")
    if event == "commit" and log.read_text().count("commit") == 1:
        stored, deadline = Path(folder) / f"{key}.stored", time.monotonic() + 120
        while not stored.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)


def _test_commit_stored(key: str) -> None:
    """Test hook, driver side: marks that a commit of group ``key`` is stored (see :func:`_test_worker_crash`)."""
    folder = os.environ.get("REGULAB_TEST_RAY_CRASH_DIR")
    if folder:
        (Path(folder) / f"{key}.stored").touch()


def run_ray(groups: list[Group], spec: Spec, load_data, store: Store, *, address: str | None = None,
            threads: int = 1, progress=None, retries: int = 2) -> None:
    """Groups become Ray generator tasks; the driver stores what they stream back (and shows
    each group's epochs on ``progress``, see ``api._Progress``).

    Each commit point of a task reaches the driver, which writes the checkpoint and the rows
    as the local executor does (:class:`GroupJob`). A task that fails (a lost worker or node,
    an exception) is started again up to ``retries`` times, from its group's last commit point;
    an interrupted study resumes from the same checkpoints, under either executor.
    """
    import ray

    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        task = ray.remote(num_cpus=threads, max_retries=0)(_ray_train)
        spec_json = spec.model_dump(mode="json")
        splits = {n: ray.put(load_data(n)) for n in dict.fromkeys(g.n_train for g in groups)}
        jobs = [GroupJob(g, spec, store) for g in groups]
        attempts = dict.fromkeys(jobs, 0)
        resume_from = {}  # job -> the checkpoint its running attempt was given

        def submit(job: GroupJob):
            attempts[job] += 1
            resume_from[job] = ck = job.checkpoint()
            return task.remote(job.group, spec_json, splits[job.group.n_train], threads, ck and ck[:2])

        on_epoch = {j: progress.for_group(j.group) if progress else None for j in jobs}
        running = {submit(j): j for j in jobs}
        failed: list[tuple[GroupJob, str]] = []  # groups whose every attempt failed, with the last error
        try:
            while running:
                [gen], _ = ray.wait(list(running), num_returns=1)
                job = running[gen]
                try:
                    msg = ray.get(next(gen))
                except ray.exceptions.RayError as e:
                    del running[gen]
                    if attempts[job] > retries:  # given up: the other groups go on to their end
                        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
                        failed.append((job, last[0].strip()))
                        continue
                    running[submit(job)] = job
                    continue
                if msg[0] == "start":
                    job.begin(resume_from[job] if msg[1] else None, "ray", threads)
                elif msg[0] == "epoch":
                    if on_epoch[job] is not None:
                        on_epoch[job](*msg[1:])
                elif msg[0] == "commit":
                    job.commit(*msg[1:])
                    _test_commit_stored(job.group.key)
                else:
                    del running[gen]
                    job.finish(*msg[1:])
                    if progress:
                        progress.group_done(job.group)
        except BaseException:
            # the driver stops early (Ctrl-C, a full disk...): on a cluster it does not own, the
            # running tasks would train on unseen until the driver exits; stop them now
            for gen in running:
                try:
                    ray.cancel(gen)
                except Exception:  # (a lost connection: nothing left to stop from here)
                    pass
            raise
        if failed:
            job, last = failed[0]
            n = len(job.ids)
            what = (f"group {job.group.key} ({n} run{'s' * (n != 1)}) failed in {attempts[job]} Ray task attempts, "
                    f"the last with: {last}")
            raise StudyError(_failed(store, what, len(failed) - 1))
    finally:
        if started_here:
            ray.shutdown()
