"""Risky dropout placements: before BatchNorm, on the logits, on the input, extreme p.

Each dropout *site* (a dropout-family module, or a functional dropout call
inside some other module's forward) is switched on alone, with the rest of
the model in eval mode, on the seeded example input. What changes tells
where its output goes: a BatchNorm whose input changes is reached by it
(variance shift, Li et al. 2019); a model output equal to the site's own
output means the dropout is the last op (dropout on the logits).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..analysis.variance_shift import channel_moments, closed_form_ratio, measured_ratio
from ..nn.base import is_dropout_module
from .determinism import same
from .findings import Finding
from .trace import PassRecord, run_pass

__all__ = ["Site", "find_sites", "check_placement"]


@dataclass
class Site:
    """One place where dropout happens in training."""

    where: str  # module the finding is about
    label: str  # human name: "drop (Dropout)" or "F.dropout in block.forward"
    p: float
    seq: int  # position in the eval pass's event order
    input: torch.Tensor | None
    module: nn.Module | None = None  # set for dropout-family modules
    call_index: int | None = None  # set for functional calls
    bernoulli: bool = True  # closed form applies (not alpha dropout)


def find_sites(model: nn.Module, rec: PassRecord) -> list[Site]:
    mods = dict(model.named_modules())
    sites: list[Site] = []
    for mc in rec.modules:
        m = mods.get(mc.name)
        if m is None or mc.index != 0 or not is_dropout_module(m):
            continue
        p = float(getattr(m, "p", 0.0) or 0.0)
        if p > 0:
            cls = type(m).__name__
            sites.append(Site(mc.name, f"{mc.name} ({cls})", p, mc.seq, mc.inputs[0] if mc.inputs else None,
                              module=m, bernoulli="alpha" not in cls.lower()))
    for c in rec.calls_of("dropout"):
        if c.module in mods and is_dropout_module(mods[c.module]):
            continue
        if (c.p or 0) > 0:
            owner = f"{type(mods.get(c.module, model)).__name__}.forward"
            sites.append(Site(c.module, f"{c.name}(p={c.p:g}) in {c.module or '<model>'} ({owner})", float(c.p),
                              c.seq, c.input, call_index=c.index, bernoulli="alpha" not in c.name))
    return sorted(sites, key=lambda s: s.seq)


def _site_output(site: Site, rec: PassRecord) -> torch.Tensor | None:
    if site.module is not None:
        outs = [mc.outputs for mc in rec.modules if mc.name == site.where and mc.index == 0]
        return outs[0][0] if outs and outs[0] else None
    calls = rec.calls_of("dropout")
    return calls[site.call_index].output if site.call_index < len(calls) else None


def _on_pass(model, inputs, site: Site, seed: int) -> PassRecord:
    torch.manual_seed(seed)
    return run_pass(model, inputs, enable_call=site.call_index, enable_module=site.module)


def _bn_input(rec: PassRecord, index: int) -> torch.Tensor | None:
    bns = rec.calls_of("batchnorm")
    return bns[index].input if index < len(bns) else None


def check_placement(model: nn.Module, inputs: tuple, rec: PassRecord, *, seed: int = 0,
                    repeats: int = 8) -> list[Finding]:
    """Findings for each dropout site; ``rec`` is a plain eval pass of ``model`` on ``inputs``."""
    out: list[Finding] = []
    first_input = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    for k, site in enumerate(find_sites(model, rec)):
        d = {"p": site.p}
        if site.p >= 1.0:
            out.append(Finding("error", "dropout-p-one", site.where,
                               f"{site.label} has p=1: in training its output is all zeros and nothing "
                               f"behind it learns", "use p < 1 (0.1-0.5 is usual), or remove the layer", d))
        elif site.p > 0.8:
            out.append(Finding("warning", "dropout-p-high", site.where,
                               f"{site.label} has p={site.p:g}: {site.p:.0%} of units are dropped in training "
                               f"(Srivastava et al. use p=0.5 for hidden and 0.2 for input units)",
                               "use p <= 0.5; if you meant the retain probability, pass p = 1 - keep", d))
        if (site.p > 0.5 and first_input is not None and site.input is not None
                and site.input.shape == first_input.shape and torch.equal(site.input, first_input)):
            out.append(Finding("warning", "input-dropout-high", site.where,
                               f"{site.label} drops {site.p:.0%} of the model's *input* features in training",
                               "use p around 0.1-0.2 on inputs (0.5 is for hidden units)", d))
        on = _on_pass(model, inputs, site, seed + 1000 * k)
        s_out = _site_output(site, on)
        if (s_out is not None and on.outputs and not same(on.outputs[:1], rec.outputs[:1])
                and s_out.numel() == on.outputs[0].numel() and torch.equal(s_out.flatten(), on.outputs[0].flatten())):
            out.append(Finding("warning", "dropout-on-logits", site.where,
                               f"{site.label} is the last op producing the model's output: it zeroes logits "
                               f"in training, which the loss cannot undo",
                               "remove it or move it before the last Linear layer (dropout on the features "
                               "that feed the classifier)", d))
        out.extend(_batchnorm_findings(model, inputs, rec, on, site, seed + 1000 * k, repeats))
    return out


def _batchnorm_findings(model, inputs, rec: PassRecord, on: PassRecord, site: Site, seed: int,
                        repeats: int) -> list[Finding]:
    reached = [c for c in rec.calls_of("batchnorm") if c.seq > site.seq and c.input is not None
               and (x := _bn_input(on, c.index)) is not None and not same([x], [c.input])]
    if not reached:
        return []
    bn = reached[0]
    xs = [_bn_input(on, bn.index)]
    for r in range(1, repeats):
        xs.append(_bn_input(_on_pass(model, inputs, site, seed + r), bn.index))
    ratio = float(torch.nanmean(measured_ratio(bn.input, torch.cat(xs, 0))))
    closed = None
    if site.bernoulli and site.p < 1.0 and site.input is not None and site.input.is_floating_point():
        c, v = channel_moments(site.input)
        closed = float(torch.nanmean(closed_form_ratio(site.p, c, v)))
    bn_name = bn.module or "<model>"
    more = f"; it also reaches {len(reached) - 1} later BatchNorm call(s)" if len(reached) > 1 else ""
    cf = (f"closed form for dropout directly before BatchNorm v/((1/q)(c²+v)−c²) = {closed:.3f}"
          if closed is not None else "no closed form for this dropout type")
    return [Finding(
        "warning", "dropout-before-batchnorm", site.where,
        f"{site.label} feeds BatchNorm {bn_name}: Var_test/Var_train at its input is {ratio:.3f} measured on "
        f"the seeded input ({cf}); BatchNorm's running variance is learnt with dropout on, so at test time "
        f"it normalises with the wrong variance{more}",
        "move dropout after the last BatchNorm (e.g. right before the classifier), or drop one of the two "
        "(Li et al. 2019)",
        {"p": site.p, "batchnorm": bn_name, "variance_ratio": ratio, "closed_form": closed,
         "reached_batchnorms": sorted({c.module for c in reached})})]
