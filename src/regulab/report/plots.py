"""The report's figures (matplotlib, Agg canvas, no pyplot: no global figure state).

Every figure takes the :class:`~regulab.report.tables.Analysis` and one colour map
``{name: colour}`` built once by :func:`palette`, so an arm has the same colour in
every figure. Accuracies are drawn in percent; intervals are 95% t-intervals over seeds
unless a caption says otherwise.
"""
from __future__ import annotations

import base64
import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .tables import Analysis, ArmStats

__all__ = ["palette", "learning_curves", "accuracy_dots", "gap_plot", "noise_plot", "sweep_plots",
           "png_base64", "BASELINE_COLOR"]

BASELINE_COLOR = "#333333"
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#393b79", "#e6550d", "#637939", "#7b4173", "#3182bd", "#843c39", "#31a354",
           "#8c6d31", "#756bb1", "#d6616b", "#6baed6"]  # tab10 without grey, then darker tab20b/c
_SWEEP_LABELS = {"p": "dropout p (drop probability)", "input_p": "input dropout p (drop probability)",
                 "n_train": "training-set size n_train (examples, log scale)", "l1": "L1 strength",
                 "l2": "L2 strength", "weight_decay": "decoupled weight decay λ", "max_norm": "max-norm c",
                 "label_smoothing": "label smoothing ε", "input_noise": "input noise σ", "mixup": "mixup α"}


def palette(names, baselines=()) -> dict[str, str]:
    """One colour per name, in order of first appearance; baselines are dark grey.

    Examples:
        >>> palette(["baseline", "dropout", "l2", "dropout"], baselines=["baseline"])
        {'baseline': '#333333', 'dropout': '#1f77b4', 'l2': '#ff7f0e'}
    """
    out: dict[str, str] = {}
    i = 0
    for n in names:
        if n in out:
            continue
        if n in baselines:
            out[n] = BASELINE_COLOR
        else:
            out[n] = _COLORS[i % len(_COLORS)]
            i += 1
    return out


def png_base64(fig: Figure, dpi: int = 100) -> str:
    """The figure as a base64 PNG (for an ``<img src="data:image/png;base64,...">``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _curves(res, an: Analysis, key: str) -> dict[str, tuple[list, list, list]]:
    """arm -> (epochs, mean, sd) of an epoch column over the arm's finished runs."""
    ok = {r["run_id"]: r["arm"] for r in res.runs if r["status"] == "finished"}
    acc: dict[str, dict[int, list]] = {}
    for e in res.epochs:
        arm = ok.get(e["run_id"])
        if arm is not None and e[key] is not None and math.isfinite(e[key]):
            acc.setdefault(arm, {}).setdefault(e["epoch"], []).append(e[key])
    out = {}
    for arm, by_ep in acc.items():
        eps = sorted(by_ep)
        means = [sum(by_ep[t]) / len(by_ep[t]) for t in eps]
        sds = [math.sqrt(sum((v - m) ** 2 for v in by_ep[t]) / (len(by_ep[t]) - 1)) if len(by_ep[t]) > 1 else 0.0
               for t, m in zip(eps, means)]
        out[arm] = (eps, means, sds)
    return out


def learning_curves(an: Analysis, res, colors: dict, metric: str = "acc") -> Figure:
    """Small multiples, one panel per arm: clean training vs validation (mean ± 1 sd over seeds)."""
    keys = ("clean_train_acc", "val_acc") if metric == "acc" else ("clean_train_loss", "val_loss")
    k = 100.0 if metric == "acc" else 1.0
    curves = [_curves(res, an, key) for key in keys]
    arms = [a.arm for a in an.arms]
    ncol = min(4, max(1, len(arms)))
    nrow = math.ceil(len(arms) / ncol)
    fig = _fig(10.5, 0.4 + 2.0 * nrow)
    axes = fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False)
    for ax, arm in zip(axes.flat, arms):
        c = colors[arm]
        for cv, style, label in zip(curves, ("--", "-"), ("clean training", "validation")):
            if arm not in cv:
                continue
            eps, m, sd = cv[arm]
            ax.plot(eps, [v * k for v in m], style, color=c, lw=1.5, label=label)
            ax.fill_between(eps, [(v - s) * k for v, s in zip(m, sd)], [(v + s) * k for v, s in zip(m, sd)],
                            color=c, alpha=0.18, lw=0)
        ax.set_title(arm, fontsize=9, color=c)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for j, ax in enumerate(axes.flat):
        if j >= len(arms):
            ax.set_visible(False)
            axes.flat[j - ncol].tick_params(labelbottom=True)  # the panel above keeps its epoch labels
            axes.flat[j - ncol].set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)" if metric == "acc" else "loss (cross-entropy, nats)", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes.flat:  # the first panel with curves (a running study may have none for some arms)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
            break
    return fig


def _rows(ax, an: Analysis, colors: dict, get, k: float) -> None:
    """Horizontal dot plot: one row per arm, dot = mean, bar = 95% CI; baselines as squares."""
    arms = an.arms
    for i, a in enumerate(arms):
        est = get(a)
        if est is None or est.mean is None:
            continue
        y = len(arms) - 1 - i
        err = [[(est.mean - est.low) * k], [(est.high - est.mean) * k]] if est.has_ci else None
        ax.errorbar([est.mean * k], [y], xerr=err, fmt="s" if a.is_baseline else "o", color=colors[a.arm],
                    ms=7, capsize=3, lw=1.6)
    labels = [a.arm + (" (baseline)" if a.is_baseline and "baseline" not in a.arm else "") for a in reversed(arms)]
    ax.set_yticks(range(len(arms)), labels, fontsize=9)
    for lbl, a in zip(ax.get_yticklabels(), reversed(arms)):
        lbl.set_color(colors[a.arm])
    ax.set_ylim(-0.6, len(arms) - 0.4)
    ax.grid(axis="x", alpha=0.3)


def _baseline_band(ax, an: Analysis, get, k: float) -> None:
    bases = [a for a in an.arms if a.is_baseline and get(a) is not None and get(a).mean is not None]
    if len(bases) != 1:
        return
    est = get(bases[0])
    ax.axvline(est.mean * k, color=BASELINE_COLOR, ls="--", lw=1, label="baseline mean")
    if est.has_ci:
        ax.axvspan(est.low * k, est.high * k, color=BASELINE_COLOR, alpha=0.08, lw=0, label="baseline 95% CI")
    ax.legend(fontsize=8, loc="lower right")


def _hfig(an: Analysis) -> Figure:
    return _fig(10.5, 1.0 + 0.38 * len(an.arms))


def _arm_panel(an: Analysis, colors: dict, get, k: float):
    """(figure, axes) of one dot-and-CI row per arm of ``get(arm)·k``, with the baseline band."""
    fig = _hfig(an)
    ax = fig.add_subplot()
    _rows(ax, an, colors, get, k)
    _baseline_band(ax, an, get, k)
    return fig, ax


def accuracy_dots(an: Analysis, colors: dict) -> Figure:
    """Final test accuracy per arm (mean, 95% CI), the baseline marked."""
    fig, ax = _arm_panel(an, colors, lambda a: a.test_acc, 100)
    lo, hi = ax.get_xlim()
    ax.set_xlim(max(lo, 0.0), min(hi, 100.0))  # intervals from few seeds can reach past 0 or 100 %
    ax.set_xlabel("test accuracy at the best-validation epoch (%; dot = mean over seeds, bar = 95% CI)")
    return fig


def gap_plot(an: Analysis, colors: dict) -> Figure:
    """Generalization gap per arm: clean training accuracy − test accuracy, in points."""
    fig, ax = _arm_panel(an, colors, lambda a: a.acc_gap, 100)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("generalization gap: clean training accuracy − test accuracy "
                  "(percentage points; smaller = less overfitting)")
    return fig


def noise_plot(an: Analysis, colors: dict) -> Figure:
    """Training noise per arm: std of the minibatch losses within an epoch, averaged over epochs."""
    fig, ax = _arm_panel(an, colors, lambda a: a.noise, 1)
    ax.set_xlabel("training noise: std of minibatch losses within an epoch (nats; mean over epochs, 95% CI)")
    return fig


def sweep_plots(an: Analysis, colors: dict, metric: str = "test_acc") -> list[tuple[str, Figure]]:
    """Metric vs each swept value (≥ 2 values): one line per arm family, with 95% CI bands."""
    keys = list(dict.fromkeys(k for a in an.arms for k in a.sweep))
    out = []
    for key in keys:
        lines: dict[str, list[ArmStats]] = {}
        for a in an.arms:
            if key not in a.sweep:
                continue
            rest = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in a.sweep.items() if k != key)
            lines.setdefault(f"{a.base_arm} {rest}".strip(), []).append(a)
        if not any(len({a.sweep[key] for a in arms}) >= 2 for arms in lines.values()):
            continue
        fig = _fig(10.5, 4.2)
        ax = fig.add_subplot()
        for label, arms in lines.items():
            arms = sorted((a for a in arms if getattr(a, metric).mean is not None), key=lambda a: a.sweep[key])
            if not arms:
                continue
            c = colors.get(label) or colors.get(arms[0].base_arm) or colors[arms[0].arm]
            xs = [a.sweep[key] for a in arms]
            ests = [getattr(a, metric) for a in arms]
            ax.plot(xs, [e.mean * 100 for e in ests], "o-", color=c, lw=1.8, label=label)
            base = next((b for b in an.arms if b.arm == arms[0].baseline), None)
            if key != "n_train" and base is not None and getattr(base, metric).mean is not None:
                ax.axhline(getattr(base, metric).mean * 100, color=c, ls=":", lw=1.4, label=f"{base.arm} (mean)")
            ci = [(x, e) for x, e in zip(xs, ests) if e.has_ci]
            if ci:
                ax.fill_between([x for x, _ in ci], [e.low * 100 for _, e in ci], [e.high * 100 for _, e in ci],
                                color=c, alpha=0.15, lw=0)
        if key == "n_train":
            ax.set_xscale("log")
        ticks = sorted({a.sweep[key] for arms in lines.values() for a in arms})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(_SWEEP_LABELS.get(key, key))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing finished yet: no lines to name
            ax.legend(fontsize=8, loc="best")
        out.append((key, fig))
    return out
