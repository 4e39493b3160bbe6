"""Co-adaptation: how much hidden units rely on each other.

Srivastava et al. 2014 argue dropout stops units from co-adapting: each
unit must be useful in many random contexts. Two measurements, both by
zeroing units of a chosen layer with a forward hook at eval time:

* single-unit ablation sensitivity: Δloss_i = loss(unit i zeroed) − loss;
* pairwise co-adaptation over random pairs (i, j):
  Δloss_ij − Δloss_i − Δloss_j, zero for units that act independently;
  large magnitudes mean units that compensate for or amplify each other.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> r = ablation_sensitivity(net, "1", x, y)
    >>> r.d_loss.shape
    torch.Size([8])
    >>> c = coadaptation(net, "1", x, y, pairs=10)
    >>> c.interaction.shape
    torch.Size([10])
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import POS_INT, check, register
from .sparsity import hidden_activations, resolve_layer, sparsity_stats

__all__ = ["AblationResult", "CoadaptationResult", "ablation_sensitivity", "coadaptation",
           "compare_models", "plot_coadaptation"]

_PAIRS = register("coadaptation", "pairs", POS_INT)


@dataclass
class AblationResult:
    """Per-unit change when each unit is zeroed (positive Δloss: the unit helped)."""

    base_loss: float
    base_accuracy: float
    d_loss: torch.Tensor  # (units,)
    d_accuracy: torch.Tensor  # (units,)


@dataclass
class CoadaptationResult:
    pairs: torch.Tensor  # (P, 2) unit indices
    interaction: torch.Tensor  # (P,) Δloss_ij − Δloss_i − Δloss_j
    singles: AblationResult

    def summary(self) -> dict[str, float]:
        i = self.interaction.double()
        d = self.singles.d_loss.double()
        return {"mean_interaction": float(i.mean()), "mean_abs_interaction": float(i.abs().mean()),
                "mean_abs_single": float(d.abs().mean()), "max_single": float(d.max())}


@contextmanager
def _zeroed(model: nn.Module, mod: nn.Module, units: list[int], call: int = 0):
    seen = [0]

    def reset(m, args):
        seen[0] = 0

    def hook(m, args, out):
        seen[0] += 1
        if seen[0] - 1 != call:
            return None  # another use of a shared module
        out = out.clone()
        out[:, units] = 0  # (N, C, *): channel(s) `units` silenced
        return out

    handles = [model.register_forward_pre_hook(reset), mod.register_forward_hook(hook)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _evaluate(model, x, y, loss_fn) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
        loss = float(loss_fn(out, y))
        acc = float((out.argmax(1) == y).double().mean()) if out.dim() == 2 and not y.is_floating_point() else float("nan")
    return loss, acc


@contextmanager
def _eval(model: nn.Module):
    states = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, t in states.items():
            m.training = t


def ablation_sensitivity(model: nn.Module, layer, x: torch.Tensor, y: torch.Tensor, *, loss_fn=None,
                         call: int = 0) -> AblationResult:
    """Zero each unit (output channel) of ``layer`` in turn; return Δloss and Δaccuracy.

    ``loss_fn(output, y)`` defaults to cross-entropy on logits; ``call`` picks
    one use of a module that runs several times per forward.
    """
    loss_fn = loss_fn or F.cross_entropy
    mod = resolve_layer(model, layer)
    n_units = hidden_activations(model, mod, x[:1], call=call).shape[1]
    with _eval(model):
        base = _evaluate(model, x, y, loss_fn)
        rows = []
        for i in range(n_units):
            with _zeroed(model, mod, [i], call):
                rows.append(_evaluate(model, x, y, loss_fn))
    r = torch.tensor(rows, dtype=torch.float64)  # (units, 2)
    return AblationResult(base[0], base[1], r[:, 0] - base[0], r[:, 1] - base[1])


def coadaptation(model: nn.Module, layer, x: torch.Tensor, y: torch.Tensor, *, pairs: int = 200,
                 seed: int = 0, loss_fn=None, singles: AblationResult | None = None,
                 call: int = 0) -> CoadaptationResult:
    """Pairwise co-adaptation scores over ``pairs`` random unit pairs (seeded).

    Returns:
        :class:`CoadaptationResult`; ``summary()`` gives the mean and mean
        absolute interaction and the mean absolute single-unit Δloss.
    """
    check("coadaptation", "pairs", pairs, _PAIRS)
    loss_fn = loss_fn or F.cross_entropy
    mod = resolve_layer(model, layer)
    singles = singles or ablation_sensitivity(model, mod, x, y, loss_fn=loss_fn, call=call)
    n = singles.d_loss.numel()
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(n, generator=g)[:2] for _ in range(pairs)]) if n >= 2 else torch.zeros(0, 2)
    idx = idx.long()
    with _eval(model):
        joint = []
        for i, j in idx.tolist():
            with _zeroed(model, mod, [i, j], call):
                joint.append(_evaluate(model, x, y, loss_fn)[0] - singles.base_loss)
    joint_t = torch.tensor(joint, dtype=torch.float64)
    inter = joint_t - singles.d_loss[idx[:, 0]] - singles.d_loss[idx[:, 1]]
    return CoadaptationResult(idx, inter, singles)


def compare_models(models: dict[str, tuple], x, y, *, pairs: int = 200, seed: int = 0,
                   loss_fn=None) -> dict:
    """Sparsity and co-adaptation side by side for models given as ``{name: (model, layer[, call])}``.

    Returns:
        ``{"models": {name: {...sparsity, ...coadaptation, "loss", "accuracy"}}, "results": {...},
        "activations": {...}, "verdict": str}``. The verdict compares each model
        with the first one (the baseline).
    """
    rows, results, acts = {}, {}, {}
    for name, (model, layer, *rest) in models.items():
        call = rest[0] if rest else 0
        a = hidden_activations(model, layer, x, call=call)
        c = coadaptation(model, layer, x, y, pairs=pairs, seed=seed, loss_fn=loss_fn, call=call)
        rows[name] = {**sparsity_stats(a), **c.summary(), "loss": c.singles.base_loss,
                      "accuracy": c.singles.base_accuracy, "units": a.shape[1]}
        results[name], acts[name] = c, a
    return {"models": rows, "results": results, "activations": acts, "verdict": _verdict(rows)}


def _verdict(rows: dict[str, dict]) -> str:
    names = list(rows)
    if len(names) < 2:
        return "one model: nothing to compare"
    base, out = names[0], []
    b = rows[base]
    for name in names[1:]:
        r = rows[name]
        sp = "higher" if r["fraction_zero"] > b["fraction_zero"] else "not higher"
        co = "lower" if r["mean_abs_interaction"] < b["mean_abs_interaction"] else "not lower"
        out.append(
            f"{name} vs {base}: sparsity (fraction of zero activations) {r['fraction_zero']:.3f} vs "
            f"{b['fraction_zero']:.3f} ({sp}); mean activation {r['mean_activation']:.3f} vs {b['mean_activation']:.3f}; "
            f"mean |pairwise co-adaptation| {r['mean_abs_interaction']:.2e} vs {b['mean_abs_interaction']:.2e} ({co}); "
            f"mean |single-unit Δloss| {r['mean_abs_single']:.2e} vs {b['mean_abs_single']:.2e}")
    return "\n".join(out)


def plot_coadaptation(results: dict[str, CoadaptationResult], bins: int = 40):
    """Histograms of single-unit Δloss and pairwise interaction per model; returns a Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for name, r in results.items():
        ax1.hist(r.singles.d_loss.numpy(), bins=bins, alpha=0.55, label=name)
        ax2.hist(r.interaction.numpy(), bins=bins, alpha=0.55, label=name)
    ax1.set(title="single-unit ablation", xlabel="Δ loss when the unit is zeroed", ylabel="units")
    ax2.set(title="pairwise co-adaptation", xlabel="Δloss(i,j) − Δloss(i) − Δloss(j)", ylabel="pairs")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    return fig
