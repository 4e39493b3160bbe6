"""``regulab report DIR``: write report.html, results.csv and results.json for a study folder.

The report is derived from the study's database alone, so it can be rebuilt at any time,
also while the study is still running (unfinished runs are listed and left out).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import StudyError

__all__ = ["register", "run", "print_summary", "after_study"]


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write report.html, results.csv and results.json for a study",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", nargs="?", default="regulab-study", help="study folder (default: ./regulab-study)")
    p.add_argument("--quiet", action="store_true", help="print only the report's path")
    p.set_defaults(func=run)


def run(args) -> int:
    from . import _write

    d = Path(args.dir)
    if not d.is_dir():
        raise StudyError(f"report: DIR must be a study folder, got {str(d)!r} (no such folder); "
                         "run `regulab study --out DIR` first")
    path, rep = _write(d)
    if not args.quiet:
        print_summary(rep)
    print(f"report: {path.resolve()}")
    return 0


def after_study(study_dir, *, table: bool = False) -> Path | None:
    """Called by ``regulab study`` at the end: write the report, print the verdicts and its path.

    A failure here never turns a finished study into an error: the study's results are safe in
    its database, and the message says how to retry.
    """
    from . import _write

    try:
        path, rep = _write(study_dir)
    except Exception as e:  # noqa: BLE001 - report after a finished study: tell, don't crash
        print(f"report: could not be written ({type(e).__name__}: {e}); retry with "
              f"`regulab report {study_dir}`", file=sys.stderr)
        return None
    print_summary(rep, table=table)
    print(f"report: {path.resolve()}")
    return path


def _f(v, k: float = 100.0) -> str:
    return "—" if v is None else f"{v * k:.1f}".replace("-", "−")


def _table(an):
    from rich.table import Table

    from .verdicts import fmt_p, signed

    t = Table(title=an.title, title_justify="left")
    for col in ("arm", "seeds", "test acc %", "95% CI", "Δ vs baseline", "p (Holm)", "gap pts", "noise ×"):
        t.add_column(col, justify="left" if col == "arm" else "right", no_wrap=col != "arm")
    for a in an.arms:
        e, d = a.test_acc, a.acc_vs_base.diff if a.acc_vs_base else None
        t.add_row(
            a.arm + (" (baseline)" if a.is_baseline and "baseline" not in a.arm else ""),
            f"{len(a.seeds)}" + (f" (+{len(a.failed)} excl.)" if a.failed else ""),
            _f(e.mean), f"{_f(e.low)}…{_f(e.high)}" if e.has_ci else "—",
            "—" if d is None or d.mean is None else signed(100 * d.mean),
            "—" if a.p_holm is None else fmt_p(a.p_holm),
            _f(a.acc_gap.mean),
            "—" if a.noise_ratio is None else f"{a.noise_ratio:.2f}",
            style="bold green" if a.significant and d.mean > 0 else "red" if a.significant else None)
    return t


def print_summary(rep, *, table: bool = True, file=None) -> None:
    """Print the summary table (rich) and one verdict line per arm of a built report."""
    from rich.console import Console

    an, vs = rep.analysis, rep.verdicts
    console = Console(file=file or sys.stdout, soft_wrap=True)
    if not console.is_terminal:  # a pipe or a log file: room for the whole table
        console.width = max(console.width, 130)
    if table:
        console.print(_table(an))
    for n in an.notes:
        console.print(f"note: {n}", markup=False, highlight=False)
    console.print("verdicts:", highlight=False)
    for v in vs:
        console.print(f"  {v.text}", markup=False, highlight=False)
