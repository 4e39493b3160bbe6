"""Variance shift: what dropout placed before BatchNorm does to its statistics.

Li et al. 2019, "Understanding the disharmony between dropout and batch
normalization by variance shift". BatchNorm's running variance is gathered
in training, *with* dropout on; at test time dropout is off and the variance
of BatchNorm's input is smaller. For dropout with retain probability
``q = 1 - p`` directly before BatchNorm, on inputs of mean ``c`` and
variance ``v``::

    Var_test / Var_train = v / ((1/q)(c² + v) - c²)        (= q when c = 0)

A weight layer between the two pushes the ratio toward 1 as its fan-in
grows. The advice: put dropout after the last BatchNorm.

Examples:
    >>> round(closed_form_ratio(0.5, mean=0.0, var=1.0), 6)
    0.5
    >>> round(closed_form_ratio(0.2, mean=1.0, var=1.0), 4)
    0.6667
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._validate import PROB_OPEN_RIGHT, POS_INT, check, check_p, register
from ..errors import RegulabError

__all__ = [
    "closed_form_ratio",
    "channel_moments",
    "measured_ratio",
    "VarianceShift",
    "variance_shift",
]

_REPEATS = register("variance_shift", "repeats", POS_INT)
register("closed_form_ratio", "p", PROB_OPEN_RIGHT)


def closed_form_ratio(p, mean=0.0, var=1.0):
    """Var_test/Var_train behind dropout(p) → BatchNorm for inputs of the given mean/variance.

    Works elementwise on floats or tensors (one value per channel). Holds for
    Bernoulli dropout with inverted scaling and for Gaussian dropout with
    σ² = p/(1-p) (same second moment); not for alpha dropout.
    """
    q = 1.0 - check_p("closed_form_ratio", p, PROB_OPEN_RIGHT)
    c2 = mean * mean
    return var / ((c2 + var) / q - c2)


def channel_moments(x: torch.Tensor, channel_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance over every other dim, as BatchNorm reduces.

    Shape:
        x: (N, C, *) with ``channel_dim=1``; a 1-D tensor is one channel.
    Returns:
        (mean, var), each of shape (C,), in float64.
    """
    x = x.detach().double()
    if x.dim() < 2:
        x = x.reshape(-1, 1)  # (N, 1)
        channel_dim = 1
    x = x.movedim(channel_dim, -1).reshape(-1, x.shape[channel_dim])  # (N*, C)
    return x.mean(0), x.var(0, unbiased=False)


def measured_ratio(x_test: torch.Tensor, x_train: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Per-channel Var(x_test)/Var(x_train); NaN where the training variance is ~0.

    ``x_train`` may hold several stochastic passes stacked along dim 0.
    """
    _, v_test = channel_moments(x_test, channel_dim)
    _, v_train = channel_moments(x_train, channel_dim)
    out = v_test / v_train
    out[v_train <= 1e-12 * v_train.abs().max().clamp_min(1e-300)] = float("nan")
    return out


@dataclass
class VarianceShift:
    """Result of :func:`variance_shift`.

    ``measured`` and ``closed_form`` are means over channels; ``per_channel``
    holds the measured ratio of each channel.
    """

    p: float
    measured: float
    closed_form: float | None
    per_channel: torch.Tensor
    dropout: str = ""
    batchnorm: str = ""

    def __str__(self) -> str:
        cf = "n/a" if self.closed_form is None else f"{self.closed_form:.3f}"
        return (f"Var_test/Var_train at {self.batchnorm or 'BatchNorm'} input: measured {self.measured:.3f}, "
                f"closed form {cf} (dropout {self.dropout or ''} p={self.p:g})")


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _bernoulli_like(m: nn.Module) -> bool:
    return "alpha" not in type(m).__name__.lower()


def _named(model: nn.Module, name, pred, what: str) -> tuple[str, nn.Module]:
    mods = dict(model.named_modules())
    if name is not None:
        if name not in mods:
            raise RegulabError(f"variance_shift: {what} must be a submodule name, got {name!r}")
        return name, mods[name]
    for n, m in mods.items():
        if pred(m):
            return n, m
    raise RegulabError(f"variance_shift: model must contain a {what} module, got none")


def variance_shift(model_or_pair, data: torch.Tensor, *, dropout: str | None = None,
                   batchnorm: str | None = None, repeats: int = 8, seed: int = 0) -> VarianceShift:
    """Measure Var_test/Var_train at a BatchNorm input behind a dropout, beside the closed form.

    Args:
        model_or_pair: a model (its first dropout-family module and the first
            BatchNorm it reaches are used unless named) or a pair
            ``(dropout_module, batchnorm_module)`` applied directly in sequence.
        data: the model's input, or the dropout's input for a pair.
        dropout, batchnorm: qualified submodule names (model only).
        repeats: stochastic passes pooled for the training variance.
        seed: seeds the dropout masks (torch's global RNG is restored afterwards).

    Returns:
        :class:`VarianceShift`; the closed form uses the per-channel mean and
        variance of the dropout's input (exact only when nothing sits between).

    Examples:
        >>> torch.manual_seed(0) and None
        >>> r = variance_shift((nn.Dropout(0.5), nn.BatchNorm1d(8)), torch.randn(4000, 8))
        >>> abs(r.measured - 0.5) < 0.03 and abs(r.closed_form - 0.5) < 0.03
        True
    """
    from ..nn.base import is_dropout_module

    check("variance_shift", "repeats", repeats, _REPEATS)
    if isinstance(model_or_pair, (tuple, list)):
        if len(model_or_pair) != 2:
            raise RegulabError(f"variance_shift: model_or_pair must be a model or a (dropout, batchnorm) pair, "
                               f"got a sequence of length {len(model_or_pair)}")
        model = nn.Sequential(*model_or_pair)
        dname, dmod = "0", model[0]
        bname, bmod = "1", model[1]
    else:
        model = model_or_pair
        dname, dmod = _named(model, dropout, is_dropout_module, "dropout")
        bname, bmod = (_named(model, batchnorm, _is_bn, "batchnorm") if batchnorm is not None else (None, None))
    p = float(getattr(dmod, "p", 0.0))

    seen: dict[str, list[torch.Tensor]] = {}
    order: list[str] = []

    def grab(name):
        def hook(mod, args):
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, []).append(args[0].detach().clone())
                order.append(name)
        return hook

    targets = {n: m for n, m in model.named_modules() if n == dname or _is_bn(m)}
    handles = [m.register_forward_pre_hook(grab(n)) for n, m in targets.items()]
    states = {m: m.training for m in model.modules()}
    rng = torch.get_rng_state()
    try:
        model.eval()
        with torch.no_grad():
            model(data)
            off = {n: v[0] for n, v in seen.items()}
            first_order = list(order)
            seen.clear()
            dmod.train(True)
            torch.manual_seed(seed)
            for _ in range(repeats):
                model(data)
    finally:
        for h in handles:
            h.remove()
        for m, t in states.items():
            m.training = t
        torch.set_rng_state(rng)
    if bname is None:  # the first BatchNorm after the dropout whose input the dropout changes
        after = first_order[first_order.index(dname) + 1:] if dname in first_order else []
        for n in after:
            if n != dname and n in seen and not torch.equal(seen[n][0], off[n]):
                bname = n
                break
        if bname is None:
            raise RegulabError(f"variance_shift: dropout {dname!r} must feed a BatchNorm, got none downstream")
    per = measured_ratio(off[bname], torch.cat(seen[bname], 0))
    closed = None
    if _bernoulli_like(dmod) and 0.0 < p < 1.0:
        c, v = channel_moments(off[dname])
        closed = float(torch.nanmean(closed_form_ratio(p, c, v)))
    return VarianceShift(p, float(torch.nanmean(per)), closed, per, dname, bname)
