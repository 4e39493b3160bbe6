"""MC dropout versus weight scaling versus an explicit ensemble.

Weight scaling is the ordinary eval-mode prediction of a dropout network
(Srivastava et al. 2014). MC dropout averages the softmax of T stochastic
passes with dropout on and BatchNorm in eval (Gal & Ghahramani 2016);
Srivastava's Fig. 11 finds it matches weight scaling at about T = 50. An
explicit ensemble averages independently trained members (e.g. the seeds
of one study arm). All curves are computed from stored probability tensors,
so one set of passes answers every T.

Uncertainty: predictive entropy H[E_t p_t] and mutual information
H[E_t p_t] − E_t H[p_t] (the part due to the model's randomness).

Examples:
    >>> import torch
    >>> s = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]])  # (T=2, N=1, C=2)
    >>> round(float(mutual_information(s)), 4)
    0.1017
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._validate import POS_INT, check, register

__all__ = ["predict_probs", "mc_sample_probs", "error_curve", "ensemble_curve", "entropy",
           "predictive_entropy", "mutual_information", "first_T_within_sd", "MCCurve", "plot_mc",
           "MCReport", "mc_report"]

_SAMPLES = register("mc_sample_probs", "samples", POS_INT)
_REPEATS = register("error_curve", "repeats", POS_INT)


def predict_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Weight-scaling prediction: softmax of the eval-mode output, (N, C). Training flags restored."""
    states = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            return torch.softmax(model(x).double(), -1)
    finally:
        for m, t in states.items():
            m.training = t


def mc_sample_probs(model: nn.Module, x: torch.Tensor, samples: int, *, seed: int = 0) -> torch.Tensor:
    """Softmax of ``samples`` stochastic passes under :func:`regulab.mc_dropout`: (samples, N, C).

    Dropout (including functional dropout) stays on while BatchNorm stays in
    eval. ``seed`` seeds the masks; torch's global RNG is restored.
    """
    from ..mc import mc_dropout

    check("mc_sample_probs", "samples", samples, _SAMPLES)
    rng = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with mc_dropout(model), torch.no_grad():
            return torch.stack([torch.softmax(model(x).double(), -1) for _ in range(samples)])
    finally:
        torch.set_rng_state(rng)


def _error(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (probs.argmax(-1) != y).double().mean(-1)


@dataclass
class MCCurve:
    """Test error of MC averaging for each T: mean and sd over repeats, beside weight scaling."""

    Ts: list[int]
    mean: torch.Tensor  # (len(Ts),)
    sd: torch.Tensor  # (len(Ts),)
    weight_scaling: float | None = None


def error_curve(sample_probs: torch.Tensor, y: torch.Tensor, Ts: Sequence[int], *, repeats: int = 1,
                weight_scaling: torch.Tensor | None = None) -> MCCurve:
    """Error of averaging the first T passes, for each T, in ``repeats`` disjoint groups of passes.

    Args:
        sample_probs: (repeats·T_max, N, C) softmax outputs of stochastic passes.
        y: (N,) labels.
        Ts: the T values (each <= T_max).
        weight_scaling: optional (N, C) eval-mode probabilities for reference.
    """
    check("error_curve", "repeats", repeats, _REPEATS)
    t_max = sample_probs.shape[0] // repeats
    Ts = [int(t) for t in Ts]
    if not Ts or min(Ts) < 1 or max(Ts) > t_max:
        raise ValueError(f"error_curve: Ts must lie in [1, {t_max}] ({sample_probs.shape[0]} passes / "
                         f"{repeats} repeats), got {Ts[:3]}...")
    groups = sample_probs[: repeats * t_max].reshape(repeats, t_max, *sample_probs.shape[1:])  # (R, T, N, C)
    csum = groups.cumsum(1)  # (R, T, N, C): averaging would not change the argmax
    idx = torch.tensor(Ts) - 1
    errs = _error(csum[:, idx], y)  # (R, len(Ts))
    sd = errs.std(0) if repeats > 1 else torch.zeros(len(Ts), dtype=torch.float64)
    ws = float(_error(weight_scaling, y)) if weight_scaling is not None else None
    return MCCurve(Ts, errs.mean(0), sd, ws)


def ensemble_curve(member_probs: torch.Tensor, y: torch.Tensor, *, orders: int = 10, seed: int = 0) -> MCCurve:
    """Error of averaging k of M members' probabilities for k = 1..M, mean/sd over random member orders.

    Args:
        member_probs: (M, N, C) eval-mode probabilities of independently trained members.
    """
    m = member_probs.shape[0]
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(m, generator=g) for _ in range(orders)]
    errs = torch.stack([_error(member_probs[p].cumsum(0), y) for p in perms])  # (orders, M)
    return MCCurve(list(range(1, m + 1)), errs.mean(0), errs.std(0) if orders > 1 else torch.zeros(m))


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over the last dim."""
    p = p.double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1)


def predictive_entropy(sample_probs: torch.Tensor) -> torch.Tensor:
    """H[mean_t p_t] per example, from (T, N, C) samples: (N,)."""
    return entropy(sample_probs.mean(0))


def mutual_information(sample_probs: torch.Tensor) -> torch.Tensor:
    """H[mean_t p_t] − mean_t H[p_t] per example (BALD), from (T, N, C) samples: (N,)."""
    return predictive_entropy(sample_probs) - entropy(sample_probs).mean(0)


def first_T_within_sd(curve: MCCurve, reference: float | None = None) -> int | None:
    """Smallest T from which on the MC error stays within one sd of the reference (weight scaling).

    With ``sd == 0`` (one repeat) the criterion is "error ≤ reference". None if never.
    """
    ref = curve.weight_scaling if reference is None else reference
    ok = [(float(m) - ref) <= float(s) + 1e-12 and (ref - float(m)) <= float(s) + 1e-12 if float(s) > 0
          else float(m) <= ref + 1e-12 for m, s in zip(curve.mean, curve.sd)]
    for k in range(len(ok)):
        if all(ok[k:]):
            return curve.Ts[k]
    return None


def plot_mc(curve: MCCurve, ensemble: MCCurve | None = None, title: str = "MC dropout vs weight scaling"):
    """Fig. 11 analogue: MC test error vs T (mean ± sd), weight scaling line, ensemble vs members."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    t = curve.Ts
    ax.plot(t, 100 * curve.mean.numpy(), label="MC dropout (mean over repeats)")
    ax.fill_between(t, 100 * (curve.mean - curve.sd).numpy(), 100 * (curve.mean + curve.sd).numpy(), alpha=0.25)
    if curve.weight_scaling is not None:
        ax.axhline(100 * curve.weight_scaling, color="k", ls="--", lw=1, label="weight scaling (eval)")
    if ensemble is not None:
        ax.plot(ensemble.Ts, 100 * ensemble.mean.numpy(), marker="o", ms=3, label="ensemble of seeds (x = members)")
    ax.set(xlabel="T (passes averaged)", ylabel="test error (%)", title=title)
    if max(t) / max(min(t), 1) > 20:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    return fig




@dataclass
class MCReport:
    """Weight scaling vs MC dropout vs ensemble on one test set (see :func:`mc_report`)."""

    curve: MCCurve
    ensemble: MCCurve | None
    within_sd_T: int | None
    error: dict[str, float]
    ece: dict[str, float]
    entropy: dict[str, float]
    mutual_information: dict[str, float]
    probs: dict[str, torch.Tensor]
    y: torch.Tensor

    def to_dict(self) -> dict:
        c = self.curve
        out = {"Ts": c.Ts, "mc_error_mean": c.mean.tolist(), "mc_error_sd": c.sd.tolist(),
               "within_sd_T": self.within_sd_T, "error": self.error, "ece": self.ece,
               "entropy": self.entropy, "mutual_information": self.mutual_information}
        if self.ensemble is not None:
            out["ensemble_members"] = self.ensemble.Ts
            out["ensemble_error_mean"] = self.ensemble.mean.tolist()
        return out

    def figures(self) -> dict:
        """``{"mc_curve": Figure, "reliability": Figure}``."""
        from .calibration import plot_reliability

        return {"mc_curve": plot_mc(self.curve, self.ensemble), "reliability": plot_reliability(self.probs, self.y)}


def mc_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, Ts: Sequence[int] = (1, 2, 5, 10, 20, 50, 100),
              repeats: int = 5, members: Sequence[nn.Module] = (), seed: int = 0, n_bins: int = 15) -> MCReport:
    """Test error, ECE, entropy and mutual information of weight scaling, MC dropout and an ensemble.

    Args:
        model: a trained model with dropout (MC passes use :func:`regulab.mc_dropout`).
        x, y: test inputs and labels.
        Ts: numbers of MC passes to average; ``repeats`` disjoint groups give the sd.
        members: independently trained models (e.g. every seed of the arm) for the ensemble.
    """
    from .calibration import expected_calibration_error

    t_max = max(Ts)
    ws = predict_probs(model, x)
    s = mc_sample_probs(model, x, repeats * t_max, seed=seed)  # (R·T, N, C)
    curve = error_curve(s, y, Ts, repeats=repeats, weight_scaling=ws)
    first = s[:t_max]
    probs = {"weight scaling": ws, f"MC T={t_max}": first.mean(0)}
    ent = {"weight scaling": float(entropy(ws).mean()), f"MC T={t_max}": float(predictive_entropy(first).mean())}
    mi = {f"MC T={t_max}": float(mutual_information(first).mean())}
    ens = None
    if members:
        mp = torch.stack([predict_probs(m, x) for m in members])  # (M, N, C)
        ens = ensemble_curve(mp, y, seed=seed)
        key = f"ensemble of {len(members)}"
        probs[key] = mp.mean(0)
        ent[key] = float(predictive_entropy(mp).mean())
        mi[key] = float(mutual_information(mp).mean())
    err = {k: float(_error(p, y)) for k, p in probs.items()}
    ece = {k: expected_calibration_error(p, y, n_bins) for k, p in probs.items()}
    return MCReport(curve, ens, first_T_within_sd(curve), err, ece, ent, mi, probs, y)
