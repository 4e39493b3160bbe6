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
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .plan import Group
from .spec import Spec
from .store import Store, safe_name

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
    """One group, trained in this process and committed to ``store``."""

    def __init__(self, group: Group, spec: Spec, data, store: Store, progress=None) -> None:
        self.group, self.spec, self.data, self.store, self.progress = group, spec, data, store, progress
        self.ckpt = store.dir / "checkpoints" / f"{group.key}.safetensors"
        self.ids = [r.run_id for r in group.runs]

    def run(self) -> None:
        t0 = time.perf_counter()
        trainer = _make_trainer(self.group, self.spec, self.data)
        self._resume(trainer)
        self.store.mark_started(self.ids, versions=_versions(), threads=torch.get_num_threads(), executor="local")
        finals = trainer.run(on_commit=lambda rows, st: self._commit(trainer, rows, st),
                             on_epoch=self.progress)
        self._finish(trainer, finals, time.perf_counter() - t0)

    def _resume(self, trainer) -> None:
        if self.ckpt.exists():
            try:
                tensors = load_file(str(self.ckpt))
                with open(self.ckpt, "rb") as f:  # metadata: the JSON state and the rows of that commit
                    n = int.from_bytes(f.read(8), "little")
                    meta = json.loads(f.read(n))["__metadata__"]
                info, rows, st = json.loads(meta["state"]), json.loads(meta["rows"]), json.loads(meta["statuses"])
                trainer.load_state(tensors, info)
            except Exception:  # unreadable or foreign checkpoint: start the group again
                self.ckpt.unlink(missing_ok=True)
                trainer.__init__(self.group, self.spec, self.data)
            else:
                self.store.record_epochs(rows, {int(k): tuple(v) for k, v in st.items()},
                                         discard_after=(self.ids, info["epoch"]))
                return
        self.store.reset_runs(self.ids)

    def _commit(self, trainer, rows: list[dict], statuses: dict) -> None:
        tensors, info = trainer.state()
        meta = {"state": json.dumps(info), "rows": json.dumps(rows),
                "statuses": json.dumps({str(k): list(v) for k, v in statuses.items()})}
        if tensors:  # empty: a user model whose state safetensors can't hold restarts when interrupted
            atomic_save(tensors, self.ckpt, meta)  # 1. checkpoint, durable
        self.store.record_epochs(rows, statuses)  # 2. then the rows, one transaction

    def _finish(self, trainer, finals: list[dict], wall: float) -> None:
        write_finals(self.store, trainer.runs, finals, [trainer.member_weights(m) for m in range(len(finals))], wall)
        self.ckpt.unlink(missing_ok=True)


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
    for g in groups:
        GroupJob(g, spec, load_data(g.n_train), store, progress(g) if progress else None).run()


def _ray_train(group: Group, spec_json: dict, threads: int):
    """Ray task: train one group from scratch; return rows, statuses, finals and weights."""
    from .._malloc import retain_freed_memory

    retain_freed_memory()  # a worker of this job: as the local `regulab study` process
    torch.set_num_threads(threads)
    from .api import load_data
    from .spec import parse_spec

    spec = parse_spec(spec_json)
    trainer = _make_trainer(group, spec, load_data(spec, group.n_train))
    rows, statuses = [], {}

    def collect(r, st):
        rows.extend(r)
        statuses.update(st)
        _test_worker_crash(group.key)

    t0 = time.perf_counter()
    finals = trainer.run(on_commit=collect)
    weights = [trainer.member_weights(m) for m in range(len(finals))]
    return trainer.runs, rows, statuses, finals, weights, time.perf_counter() - t0


def _test_worker_crash(key: str) -> None:
    """Test hook: with ``REGULAB_TEST_RAY_CRASH_DIR`` set, the first attempt of each group's task
    SIGKILLs its own worker after its first commit point (mid-task), as an OOM kill or a lost node
    would; the marker file it leaves makes the retry run through. Unset: does nothing."""
    folder = os.environ.get("REGULAB_TEST_RAY_CRASH_DIR")
    if not folder:
        return
    try:
        os.close(os.open(Path(folder) / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def run_ray(groups: list[Group], spec: Spec, store: Store, *, address: str | None = None,
            threads: int = 1, progress=None) -> None:
    """Groups become Ray tasks (max_retries=2); the driver writes every result to SQLite."""
    import ray

    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        started_here = True
    try:
        task = ray.remote(num_cpus=threads, max_retries=2, retry_exceptions=True)(_ray_train)
        spec_json = spec.model_dump(mode="json")
        refs = {task.remote(g, spec_json, threads): g for g in groups}
        for g in groups:
            store.reset_runs([r.run_id for r in g.runs])
            store.mark_started([r.run_id for r in g.runs], versions=_versions(), threads=threads, executor="ray")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            g = refs[done[0]]
            runs, rows, statuses, finals, weights, wall = ray.get(done[0])
            store.record_epochs(rows, statuses)
            write_finals(store, runs, finals, weights, wall)
            if progress:
                progress(g)
    finally:
        if started_here:
            ray.shutdown()
