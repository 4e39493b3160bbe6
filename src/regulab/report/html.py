"""``report.html``: one self-contained file (inline PNGs, inline CSS/JS, no URL), rendered by Jinja2.

Autoescape is on: arm names and every other value from the study are text, never markup.
Only the HTML fragments returned by report *sections* (see :data:`SECTIONS`) are inserted
as markup; a section must escape what it puts in them (``markupsafe.escape``).

Extension point: :data:`regulab.report.sections.SECTIONS` (see that module), or
``sections=[...]`` passed to :func:`regulab.report.write_report`.
"""
from __future__ import annotations

import datetime as _dt

import jinja2
from markupsafe import Markup

from .plots import png_base64
from .sections import SECTIONS
from .tables import ALPHA, Analysis, arm_settings
from .verdicts import Verdict, fmt_p

__all__ = ["SECTIONS", "Section", "render", "figure_entry", "run_sections"]

Section = tuple  # (title: str, html_fragment: str, figures: list[Figure | (caption, Figure)])

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("regulab.report", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                          lstrip_blocks=True)


def _f(v, nd: int = 1, k: float = 1.0) -> str:
    return "—" if v is None else f"{v * k:.{nd}f}".replace("-", "−")


def _signed(v, nd: int = 1) -> str:
    if v is None:
        return "—"
    s = f"{abs(v):.{nd}f}"
    return ("±" if float(s) == 0 else "+" if v > 0 else "−") + s


_ENV.filters.update(f=_f, signed=_signed, p=lambda v: "—" if v is None else fmt_p(v))


def figure_entry(fid: str, title: str, caption: str, fig) -> dict:
    """A figure as the template wants it (PNG inlined as base64); closes nothing, keeps no state."""
    return {"id": fid, "title": title, "caption": caption, "png": png_base64(fig)}


def run_sections(results, sections) -> list[dict]:
    """Call each section function; keep the ones that apply; report the ones that fail."""
    out = []
    for i, fn in enumerate(sections):
        name = getattr(fn, "__name__", f"section {i}")
        try:
            got = fn(results)
        except Exception as e:  # a broken optional section must not cost the whole report
            out.append({"title": name, "html": Markup(""), "figures": [],
                        "error": f"{type(e).__name__}: {e}"})
            continue
        if got is None:
            continue
        title, fragment, figs = got
        entries = []
        for j, f in enumerate(figs or []):
            caption, fig = f if isinstance(f, tuple) else ("", f)
            entries.append(figure_entry(f"x{i}-{j}", "", caption, fig))
        out.append({"title": title, "html": Markup(fragment or ""), "figures": entries, "error": None})
    return out


def _setup_rows(an: Analysis) -> list[tuple[str, str]]:
    s = an.setup
    d, m, o, v = s["dataset"], s["model"], s["optimizer"], s["versions"]
    model = m.get("kind", "?")
    if model == "mlp":
        model += (f" widths {m.get('widths')}, {m.get('activation')}"
                  + (", residual" if m.get("residual") else "") + (", batchnorm" if m.get("batchnorm") else ""))
    elif model in ("cnn1d", "cnn2d"):
        model += f" channels {m.get('channels')}, kernel {m.get('kernel_size')}, dense {m.get('widths')}"
    opt = f"{o.get('name')} lr {o.get('lr')}, {o.get('schedule')} schedule"
    wall = s.get("wall_seconds")
    swept = sorted({n for sw in s.get("sweep", []) for n in (sw.get("n_train") or [])})
    n_train = f"swept over {', '.join(map(str, swept))}" if swept else (d.get("n_train") or "all")
    return [
        ("data", f"{d.get('name')}; n_train {n_train}; validation fraction "
                 f"{d.get('val_fraction')}; split seed {d.get('seed')}; standardized {d.get('standardize')}"),
        ("model", model), ("optimizer", opt),
        ("training", f"{s['epochs']} epochs, batch size {s['batch_size']}, weights kept at the best "
                     f"{'validation accuracy' if s['selection'] == 'val_accuracy' else 'validation loss'} epoch"),
        ("seeds", f"{s['seeds']} per arm (seed i: same initialisation and data order in every arm)"),
        ("runs", f"{s['runs']} runs in {s['groups']} training group(s) (runs of a group train together, stacked)"),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items() if k != "machine") or "—"),
        ("machine", f"{v.get('machine', '?')}; torch threads {', '.join(map(str, s['threads'])) or '?'}; "
                    f"executor {', '.join(s['executor']) or '?'}"),
        ("wall time", "—" if wall is None else f"{wall / 60:.1f} min"),
        ("study folder", s["folder"]),
    ]


def render(an: Analysis, verdicts: list[Verdict], rows: list[dict], figures: list[dict],
           sweeps: list[dict], extra: list[dict], colors: dict) -> str:
    """The whole page as a string."""
    n_compared = sum(1 for a in an.arms if a.acc_vs_base is not None and a.acc_vs_base.p is not None)
    arm_table = [{"arm": a.arm, "settings": arm_settings(a.config), "color": colors[a.arm],
                  "baseline": a.baseline or ("(baseline)" if a.is_baseline else "—")} for a in an.arms]
    return _ENV.get_template("report.html.j2").render(
        title=an.title, generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), notes=an.notes,
        verdicts=verdicts, rows=rows, colors=colors, figures=figures, sweeps=sweeps, extra=extra,
        excluded=an.excluded, setup=_setup_rows(an), arm_table=arm_table, alpha=ALPHA,
        n_compared=n_compared, has_baseline=an.baseline is not None)
