"""Activation sparsity of hidden layers, and pictures of first-layer weights.

Srivastava et al. 2014 (Fig. 8): with dropout, fewer hidden units are strongly
active and the mean activation drops (~2.0 → ~0.7 in their autoencoder). The
activations are read with a forward hook on any chosen layer of an ordinary
``nn.Module``, in eval mode.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> a = hidden_activations(net, "1", torch.randn(32, 4))
    >>> a.shape
    torch.Size([32, 8])
    >>> s = sparsity_stats(a)
    >>> 0.0 <= s["fraction_zero"] <= 1.0
    True
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import RegulabError

__all__ = ["resolve_layer", "hidden_activations", "sparsity_stats", "plot_sparsity", "plot_first_layer_weights"]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """A submodule given by qualified name or by object (which must belong to ``model``)."""
    mods = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in mods.values()):
            raise RegulabError(f"analysis: layer must be a submodule of the model, got {type(layer).__name__}")
        return layer
    if layer not in mods:
        from ..errors import did_you_mean

        hint = did_you_mean(str(layer), [n for n in mods if n])
        raise RegulabError(f"analysis: layer must be a submodule name, got {layer!r}" + (f"; {hint}" if hint else ""))
    return mods[layer]


def _units(t: torch.Tensor) -> torch.Tensor:
    # (N, C, *spatial) -> (N, C): a conv channel counts as one unit, averaged over positions
    return t if t.dim() == 2 else t.reshape(t.shape[0], t.shape[1], -1).mean(-1)


def hidden_activations(model: nn.Module, layer: str | nn.Module, x: torch.Tensor, *, call: int = 0) -> torch.Tensor:
    """Output of ``layer`` on ``x`` in eval mode, as (N, units) float tensor.

    ``call`` picks which call of a module used several times in one forward
    (e.g. one dropout module shared by every hidden block). The model's
    training flags are restored afterwards.
    """
    mod = resolve_layer(model, layer)
    got: list[torch.Tensor] = []
    h = mod.register_forward_hook(lambda m, a, out: got.append(out.detach().clone()))
    states = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
        for m, t in states.items():
            m.training = t
    if len(got) <= call:
        raise RegulabError(f"analysis: call must be below the number of times the layer runs in one forward "
                           f"({len(got)}), got {call}")
    return _units(got[call]).float()


def sparsity_stats(acts: torch.Tensor, threshold: float = 0.0) -> dict[str, float]:
    """Summary of (N, units) activations.

    Returns:
        ``fraction_zero`` (activations <= ``threshold``), ``mean_activation``
        (over all), ``mean_example_activation_sd`` (spread of the per-example
        mean), ``dead_units`` (fraction of units never above threshold) and
        ``fraction_strong`` (activations above 2× the overall mean).
    """
    a = acts.double()
    mean = float(a.mean())
    per_example = a.mean(1)
    return {
        "fraction_zero": float((a <= threshold).double().mean()),
        "mean_activation": mean,
        "mean_example_activation_sd": float(per_example.std()) if a.shape[0] > 1 else 0.0,
        "dead_units": float((a <= threshold).all(0).double().mean()),
        "fraction_strong": float((a > 2 * mean).double().mean()) if mean > 0 else 0.0,
    }


def plot_sparsity(acts_by_model: dict[str, torch.Tensor], bins: int = 40):
    """Fig. 8 analogue: histograms of per-example mean activation and of all activations.

    Returns:
        a ``matplotlib.figure.Figure`` (save with ``fig.savefig("x.png")``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    hi = max(float(a.max()) for a in acts_by_model.values()) or 1.0
    for name, a in acts_by_model.items():
        s = sparsity_stats(a)
        ax1.hist(a.mean(1).numpy(), bins=bins, alpha=0.55, label=f"{name} (mean {s['mean_activation']:.2f})")
        ax2.hist(a.flatten().numpy(), bins=bins, range=(0, hi), alpha=0.55,
                 label=f"{name} ({s['fraction_zero']:.0%} zero)")
    ax1.set(title="mean activation per example", xlabel="mean activation", ylabel="examples")
    ax2.set(title="activations", xlabel="activation", ylabel="count", yscale="log")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    return fig


def _first_weight(model_or_weight) -> torch.Tensor:
    if isinstance(model_or_weight, torch.Tensor):
        return model_or_weight.detach()
    for m in model_or_weight.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            return w.detach()
    raise RegulabError("analysis: model must have a layer with a 2-D (or larger) weight, got none")


def plot_first_layer_weights(model_or_weight, n: int = 32, image_shape: tuple[int, int] | None = None):
    """Pictures of the first ``n`` units' incoming weights (Srivastava Fig. 7 analogue).

    Square inputs (or ``image_shape``) are drawn as images; 1-D inputs (e.g.
    MNIST-1D's 40 samples) as small line plots.
    """
    from matplotlib.figure import Figure

    w0 = _first_weight(model_or_weight)
    w = w0.float().reshape(w0.shape[0], -1)[:n]  # (n, D)
    d = w.shape[1]
    side = int(math.isqrt(d))
    shape = image_shape or ((side, side) if side * side == d and d >= 16 else None)
    cols = min(8, w.shape[0])
    rows = math.ceil(w.shape[0] / cols)
    fig = Figure(figsize=(1.3 * cols, 1.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    lim = float(w.abs().max()) or 1.0
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= w.shape[0]:
            ax.axis("off")
            continue
        if shape is not None:
            ax.imshow(w[k].reshape(shape).numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
            ax.plot(w[k].numpy(), lw=0.8)
            ax.set_ylim(-lim, lim)
    return fig
