"""Study reports: ``report.html`` (self-contained), ``results.csv`` and ``results.json``.

``regulab.report.write_report(study_dir)`` reads a study folder (read-only: safe while a
study runs), computes per-arm statistics (:mod:`regulab.analysis.stats`), draws the
figures and writes the three files into the folder, each atomically (temp file +
``os.replace``). ``regulab report DIR`` does the same from the command line, and
``regulab study`` calls it when a study ends.

Extra sections (MC dropout, co-adaptation, ...) plug in through :data:`SECTIONS`: functions
``(results) -> (title, html_fragment, figures) | None``; see :mod:`regulab.report.sections`.
Importing this package is cheap (no torch, matplotlib or Jinja2 until a report is built).
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .sections import SECTIONS

__all__ = ["write_report", "build_report", "Report", "SECTIONS", "atomic_write_text"]

REPORT_FILES = ("report.html", "results.csv", "results.json")


@dataclass
class Report:
    """Everything a report is made of (before it is written)."""

    analysis: object      # tables.Analysis
    verdicts: list        # list[verdicts.Verdict]
    rows: list[dict]      # results.csv rows
    html: str


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _figures(an, res, colors) -> tuple[list[dict], list[dict]]:
    from . import plots
    from .html import figure_entry

    band = "the band is ±1 sd over seeds"
    figs = [
        ("fig-accuracy", "Test accuracy per arm", "Mean over seeds with its 95% t-interval; the baseline is the "
         "square and the dashed line (shaded: its 95% CI).", plots.accuracy_dots(an, colors)),
        ("fig-gap", "Generalization gap per arm", "Clean (eval-mode) training accuracy − test accuracy at the "
         "best-validation epoch, in percentage points, with 95% CIs.", plots.gap_plot(an, colors)),
        ("fig-curves-acc", "Learning curves: accuracy", f"Dashed: clean training accuracy (eval mode, whole "
         f"training set); solid: validation accuracy; mean over seeds, {band}.",
         plots.learning_curves(an, res, colors, "acc")),
        ("fig-curves-loss", "Learning curves: loss", f"Dashed: clean training loss; solid: validation loss "
         f"(cross-entropy); a rising validation loss is overfitting; {band}.",
         plots.learning_curves(an, res, colors, "loss")),
        ("fig-noise", "Training noise per arm", "Standard deviation of the minibatch losses within an epoch, "
         "averaged over the epochs each run trained (mean over seeds, 95% CI): how much noise the regularizer "
         "adds to the training signal. The ratios in the verdicts compare the same seeds over the epochs both "
         "the arm and the baseline trained.", plots.noise_plot(an, colors)),
    ]
    main = [figure_entry(*f) for f in figs]
    sweeps = [figure_entry(f"fig-sweep-{key}", f"Test accuracy vs {key}",
                           "Mean over seeds; band: 95% t-interval (where ≥ 2 seeds). One line per arm family; "
                           "dotted: the mean of the baseline trained on the same data.",
                           fig) for key, fig in plots.sweep_plots(an, colors)]
    return main, sweeps


def build_report(study_dir, *, sections=None) -> Report:
    """Read the study folder and build the report in memory (nothing is written)."""
    from ..study.store import open_results
    from . import html, plots
    from .tables import analyse, table_rows
    from .verdicts import verdicts

    res = open_results(study_dir)
    an = analyse(res)
    vs = verdicts(an)
    rows = table_rows(an)
    for row, v in zip(rows, vs):
        row["verdict"] = v.text
    lines = [f"{a.base_arm} {' '.join(f'{k}={v}' for k, v in a.sweep.items() if k != key)}".strip()
             for a in an.arms for key in a.sweep]
    names = [a.arm for a in an.arms] + [a.base_arm for a in an.arms] + lines
    baselines = {a.arm for a in an.arms if a.is_baseline} | ({an.baseline} if an.baseline else set())
    colors = plots.palette(names, baselines=baselines)
    main, sweeps = _figures(an, res, colors)
    extra = html.run_sections(res, SECTIONS if sections is None else sections)
    page = html.render(an, vs, rows, main, sweeps, extra, colors)
    return Report(an, vs, rows, page)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _json(rep: Report) -> str:
    an = rep.analysis
    doc = {"study": an.setup, "baseline": an.baseline, "alpha": 0.05, "notes": an.notes,
           "units": {"*_pct": "percent", "*_pts": "percentage points", "*_loss*": "nats (cross-entropy)",
                     "train_noise_mean": "nats", "epoch_time_s_mean": "seconds"},
           "arms": rep.rows, "excluded_runs": an.excluded,
           "runs": [{"arm": a.arm, "seed": s, **f} for a in an.arms for s, f in sorted(a.per_seed.items())]}
    return json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n"


def write_report(study_dir, *, sections=None) -> Path:
    """Write ``report.html``, ``results.csv`` and ``results.json`` into ``study_dir``; return the
    path of ``report.html``. Raises :class:`~regulab.errors.StudyError` for a folder that is not
    a study."""
    return _write(study_dir, sections)[0]


def _write(study_dir, sections=None) -> tuple[Path, Report]:
    d = Path(study_dir)
    rep = build_report(d, sections=sections)
    atomic_write_text(d / "results.csv", _csv(rep.rows))
    atomic_write_text(d / "results.json", _json(rep))
    atomic_write_text(d / "report.html", rep.html)
    return d / "report.html", rep
