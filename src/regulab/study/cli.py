"""``regulab study``: run a study from a TOML spec (or the default study) and print a summary.

With no arguments it runs the default study (MNIST-1D, the reference MLP, 11 arms × 3 seeds)
into ``./regulab-study``; re-running the same command resumes and reuses finished runs.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from ..errors import SpecError, did_you_mean

__all__ = ["register", "run", "build_spec"]


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a regularization study (default: MNIST-1D, reference MLP)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", help="study spec (TOML); default: the built-in default study")
    p.add_argument("--dataset", help="dataset name or path (overrides spec dataset.name)")
    p.add_argument("--model", help="mlp, cnn1d, cnn2d, path/to/file.py:factory or package.module:factory")
    p.add_argument("--arms", help="comma-separated subset of the spec's arms to run")
    p.add_argument("--seeds", type=int, help="number of seeds per arm")
    p.add_argument("--epochs", type=int, help="epochs per run")
    p.add_argument("--out", help="study folder (default: ./regulab-study)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address: auto or HOST:PORT (default: a local Ray instance)")
    p.add_argument("--resume", metavar="DIR", help="continue the study in DIR with its stored spec")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for training (default: every core for the local executor, 1 per Ray "
                        "task, which scales out across cores); metrics are reproducible at a given count")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def build_spec(args) -> dict:
    """The spec dict: the stored spec (--resume), the TOML file, or the default; then the flags."""
    import json

    from .spec import DEFAULT_SPEC

    if args.resume:
        from .store import open_results

        data = open_results(args.resume).spec
        if not data:  # stopped before its spec was stored: resuming would run the default study
            raise SpecError(f"study: --resume {args.resume} must name a study folder with a stored spec, got one "
                            "whose study was stopped while starting; re-run the original command instead")
    elif args.spec:
        path = Path(args.spec)
        if not path.is_file():
            raise SpecError(f"study: spec must be an existing TOML file, got {args.spec!r}")
        from .spec import read_toml

        data = read_toml(path)
    else:
        data = json.loads(json.dumps(DEFAULT_SPEC))
    if args.dataset:
        data.setdefault("dataset", {})["name"] = args.dataset
    if args.model:
        data["model"] = {"kind": args.model}
    if args.seeds is not None:
        data["seeds"] = args.seeds
    if args.epochs is not None:
        data["epochs"] = args.epochs
    if args.arms is not None:
        arms = data.get("arms", {"baseline": {}})
        chosen = [a.strip() for a in args.arms.split(",") if a.strip()]
        for a in chosen:
            if a not in arms:
                hint = did_you_mean(a, arms)
                raise SpecError(f"study: --arms must name arms of the spec ({', '.join(arms)}), got {a!r}"
                                + (f"; {hint}" if hint else ""))
        data["arms"] = {a: arms[a] for a in chosen}
        data["sweep"] = [s for s in data.get("sweep", []) if s.get("arm") in (None, *chosen)]
    return data


def run(args) -> int:
    from .._malloc import retain_freed_memory
    from .api import Study

    retain_freed_memory()  # this process is ours: reuse freed activations instead of re-faulting them
    data = build_spec(args)
    out = args.resume or args.out or "regulab-study"
    if args.threads is not None and args.threads < 1:
        raise SpecError(f"study: --threads must be an integer >= 1, got {args.threads}")
    study = Study(data, out=out, executor=args.executor, address=args.address, quiet=args.quiet,
                  threads=args.threads)
    try:
        with _watch_sigint() as seen:
            res = study.run()
            print_summary(res, quiet=args.quiet)
            _after_study(res.study_dir)
            if seen:  # a Ctrl-C that landed in a finalizer is swallowed by Python: still report it
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        # Ctrl-C: the open transaction rolled back, every committed epoch is kept
        resume = f"regulab study --resume {out}" if _has_spec(out) else "the same command"
        print(f"regulab study: interrupted; progress so far is saved in {out}; resume with: {resume}",
              file=sys.stderr)
        return 130
    return 0


@contextlib.contextmanager
def _watch_sigint():
    """Within: SIGINT raises KeyboardInterrupt as usual and is also recorded in the yielded list."""
    seen: list = []

    def on_sigint(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # e.g. started with nohup: keep ignoring
            raise ValueError
        old = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread, or SIGINT ignored: leave signals alone
        yield seen
        return
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, old)


def _has_spec(out) -> bool:
    """Whether ``--resume out`` can work: the folder's database holds the study's spec."""
    from .store import open_results

    try:
        return bool(open_results(out).spec)
    except Exception:  # noqa: BLE001 - no (readable) study there yet
        return False


def print_summary(res, quiet: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    from .api import summary_rows

    table = Table(title=res.spec.get("name", "study"))
    for col, just in (("arm", "left"), ("runs", "right"), ("test accuracy (mean ± sd)", "right"),
                      ("best epoch", "right"), ("failed", "right")):
        table.add_column(col, justify=just)
    for r in summary_rows(res):
        acc = "—" if r["mean"] is None else f"{100 * r['mean']:.1f} ± {100 * (r['sd'] or 0):.1f} %"
        be = "—" if r["best_epoch"] is None else f"{r['best_epoch']:.0f}"
        table.add_row(r["arm"], str(r["runs"]), acc, be, str(r["failed"]))
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(f"study folder: {res.study_dir.resolve()}")


def _after_study(study_dir) -> None:
    """Hook: write the study report (report.html, results.csv/json); print its verdicts and path."""
    try:
        from ..report.cli import after_study
    except ImportError:
        return
    after_study(study_dir)
