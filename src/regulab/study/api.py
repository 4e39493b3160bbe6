"""``regulab.Study(spec).run()``: plan, train (resuming), store, summarise.

Examples:
    >>> import tempfile, regulab
    >>> spec = {"epochs": 2, "seeds": 2, "dataset": {"name": "digits", "n_train": 200},
    ...         "model": {"kind": "mlp", "widths": [16]}, "arms": {"baseline": {}, "dropout": {"p": 0.2}}}
    >>> res = regulab.Study(spec, out=tempfile.mkdtemp(), quiet=True).run()
    >>> sorted({r["status"] for r in res.runs}), len(res.finals)
    (['finished'], 4)
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

from ..errors import SpecError, StudyError, first_line
from .plan import plan
from .spec import Spec, load_spec, parse_spec, spec_hash
from .store import Results, Store, disk_full, open_results

__all__ = ["Study", "load_data", "preflight", "summary_rows"]

_DATA_CACHE: dict = {}


def load_data(spec: Spec, n_train: int | None):
    """The dataset split for ``n_train`` (cached in this process)."""
    from .. import data

    d = spec.dataset
    key = (d.name, n_train, d.val_fraction, d.seed, d.standardize)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = data.load(d.name, n_train=n_train, val_fraction=d.val_fraction, seed=d.seed,
                                     standardize=d.standardize)
    return _DATA_CACHE[key]


class Study:
    """A study: ``Study(spec, out=...).run()`` trains every unfinished run and returns :class:`Results`.

    Args:
        spec: a :class:`Spec`, a spec dict, or the path of a TOML file.
        out: the study folder (created; re-running resumes and never recomputes finished runs).
        executor: ``"local"`` (in-process) or ``"ray"``.
        address: Ray address (``auto`` or ``HOST:PORT``); None starts a local Ray instance.
        quiet: no progress output.
        threads: torch threads (default: the current setting locally, 1 per Ray task).
    """

    def __init__(self, spec, *, out: str | os.PathLike = "regulab-study", executor: str = "local",
                 address: str | None = None, quiet: bool = False, threads: int | None = None) -> None:
        if isinstance(spec, (str, Path)):
            spec = load_spec(spec)
        elif isinstance(spec, dict):
            spec = parse_spec(spec)
        if executor not in ("local", "ray"):
            raise SpecError(f"study: executor must be one of 'local', 'ray', got {executor!r}")
        self.spec, self.out, self.executor, self.address = spec, Path(out), executor, address
        self.quiet, self.threads = quiet, threads

    def run(self) -> Results:
        spec = self.spec
        groups = plan(spec)
        if self.threads:
            torch.set_num_threads(self.threads)
        preflight(spec, groups)  # bad data or model: one-line error before the folder is touched
        try:
            self._run(spec, groups)
        except Exception as e:
            if not disk_full(e):
                raise
            raise StudyError(f"{self.out}: the disk is full ({first_line(e)}); every committed epoch is kept: "
                             "free some space, then re-run the same command to resume") from None
        return open_results(self.out)

    def _run(self, spec: Spec, groups) -> None:
        with Store(self.out) as store:
            store.init_spec(spec.model_dump(mode="json"), spec_hash(spec))
            store.add_runs([r.row(g.key) for g in groups for r in g.runs])
            status = store.statuses()
            todo = [g for g in groups if any(status[r.run_id] not in ("finished", "failed") for r in g.runs)]
            n_runs = sum(len(g.runs) for g in groups)
            prog = _Progress(self.quiet, n_runs, n_runs - sum(len(g.runs) for g in todo), spec.epochs,
                             concurrent=self.executor == "ray")
            with prog:
                if self.executor == "ray":
                    from .executor import run_ray

                    run_ray(todo, spec, lambda n: load_data(spec, n), store, address=self.address,
                            threads=self.threads or 1, progress=prog)
                else:
                    from .executor import run_local

                    run_local(todo, spec, lambda n: load_data(spec, n), store, progress=prog)


def preflight(spec: Spec, groups) -> None:
    """Load every dataset split and build the model once, checking it on two training examples.

    Runs before the study folder is created or opened, so a typo in a dataset name or a broken
    model factory is a one-line :class:`SpecError`/:class:`DatasetError` and re-running with the
    fix starts the study (instead of meeting a folder that holds the broken spec).
    """
    from ..models import build

    kind = spec.model.kind
    data = None
    for n in dict.fromkeys(g.n_train for g in groups):
        data = load_data(spec, n)
    if data is None:
        return
    from .augment import check_ops

    for arm_name, arm in spec.arms.items():
        check_ops(arm_name, arm.augment, data.input_shape, data.name)
    x = data.x_train[:2]
    with torch.random.fork_rng(devices=[]):
        md = build(kind, spec.model.model_dump(), data.input_shape, data.num_classes)
        try:
            model = md.make(0.0, 0.0)
        except SpecError:
            raise
        except (Exception, SystemExit) as e:  # the user's factory raised or exited
            raise SpecError(f"spec.model.kind: {kind} must build a model, got {type(e).__name__}: "
                            f"{first_line(e)}") from None
        model.eval()
        try:
            with torch.no_grad():
                out = model(x)
        except (Exception, SystemExit) as e:
            raise SpecError(f"spec.model.kind: {kind} must accept inputs of shape {tuple(x.shape)} "
                            f"({data.name}), got {type(e).__name__}: {first_line(e)}") from None
    want = (len(x), data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(f"spec.model.kind: {kind} must output {data.num_classes} class scores per example "
                        f"({data.name} has {data.num_classes} classes), i.e. shape {want}, got {got}")


class _Progress:
    """rich progress bars on a terminal, plain log lines otherwise, nothing when quiet.

    Executors call :meth:`for_group` when a group starts (its ``on_epoch(epoch, seconds)``) and
    :meth:`group_done` when its runs are finished. ``concurrent`` (Ray: groups train at once)
    gives each running group its own epochs bar instead of one shared bar.
    """

    def __init__(self, quiet: bool, n_runs: int, done: int, epochs: int, *, concurrent: bool = False,
                 console=None) -> None:
        self.quiet, self.n_runs, self.done, self.epochs = quiet, n_runs, done, epochs
        self.concurrent, self.console = concurrent, console
        self.rich = not quiet and (console is not None or sys.stderr.isatty())
        self.bar = None
        self.group_bars: dict[str, int] = {}

    def __enter__(self):
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=False, console=self.console)
            self.bar.start()
            self.t_runs = self.bar.add_task("runs", total=self.n_runs, completed=self.done)
            self.t_epochs = None if self.concurrent else self.bar.add_task("epochs", total=self.epochs)
        elif not self.quiet:
            print(f"regulab study: {self.n_runs} runs, {self.done} already done", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def for_group(self, group):
        n, t0 = len(group.runs), time.perf_counter()
        what = f"{n} runs stacked" if group.stacked else f"{n} run"
        if self.bar is not None and not self.concurrent:
            self.bar.reset(self.t_epochs, total=self.epochs, description=f"epochs ({what})")
            self.group_bars[group.key] = self.t_epochs

        def on_epoch(epoch: int, dt: float) -> None:
            if self.bar is not None:
                if group.key not in self.group_bars:  # concurrent: its own bar from its first epoch
                    self.group_bars[group.key] = self.bar.add_task(f"epochs of group {group.key} ({what})",
                                                                   total=self.epochs)
                self.bar.update(self.group_bars[group.key], completed=epoch)
            elif not self.quiet and (epoch == 1 or epoch % 10 == 0 or epoch == self.epochs):
                where = f"group {group.key}" if self.concurrent else "group"
                print(f"regulab study: {where} of {what}, epoch {epoch}/{self.epochs} "
                      f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        return on_epoch

    def group_done(self, group) -> None:
        self.done += len(group.runs)
        if self.bar is not None:
            task = self.group_bars.pop(group.key, None)
            if self.concurrent and task is not None:
                self.bar.remove_task(task)
            self.bar.update(self.t_runs, completed=self.done)
        elif not self.quiet:
            print(f"regulab study: {self.done}/{self.n_runs} runs done", file=sys.stderr, flush=True)


def summary_rows(res: Results) -> list[dict]:
    """Per arm: runs, finished, mean and sd of test accuracy over seeds, mean best epoch."""
    finals = {f["run_id"]: f for f in res.finals}
    arms: dict[str, list] = {}
    for r in res.runs:
        arms.setdefault(r["arm"], []).append(r)
    out = []
    for arm, runs in arms.items():
        accs = [finals[r["run_id"]]["test_acc"] for r in runs if r["run_id"] in finals and r["status"] == "finished"]
        eps = [finals[r["run_id"]]["best_epoch"] for r in runs if r["run_id"] in finals]
        out.append(dict(arm=arm, runs=len(runs), finished=len(accs),
                        failed=sum(r["status"] == "failed" for r in runs),
                        mean=statistics.fmean(accs) if accs else None,
                        sd=statistics.stdev(accs) if len(accs) > 1 else None,
                        best_epoch=statistics.fmean(eps) if eps else None))
    return out
