"""Is eval deterministic? If not, which module makes it random, and how?

Two eval passes on the same input must agree. When they don't, the culprits
are (a) modules whose output differs although their inputs were identical
(the randomness starts inside them), and (b) modules seen calling dropout
with ``training=True``, attention with ``dropout_p > 0`` or a random-number
function during eval. Only the innermost of these is reported: a parent is
random *because of* its child.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.base import is_dropout_module
from .findings import Finding
from .trace import Call, PassRecord

__all__ = ["same", "max_abs_diff", "check_determinism"]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """True when two lists of tensors agree (floats up to rounding)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point() or x.is_complex():
            if not torch.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True):
                return False
        elif not torch.equal(x, y):
            return False
    return True


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    diffs = [float((x.double() - y.double()).abs().max()) for x, y in zip(a, b)
             if x.shape == y.shape and x.numel() and (x.is_floating_point() or x.is_complex())]
    return max(diffs, default=float("nan"))


def _descendant(child: str, parent: str) -> bool:
    return child != parent and (parent == "" or child.startswith(parent + "."))


def _evidence(rec: PassRecord, mods: dict[str, nn.Module]) -> dict[str, list[Call]]:
    ev: dict[str, list[Call]] = {}
    for c in rec.calls:
        if c.module in mods and is_dropout_module(mods[c.module]):
            continue  # a dropout layer left in training mode is reported by the mode checks
        hit = (c.kind in ("dropout", "regulab-dropout") and c.training and (c.p or 0) > 0) or (
            c.kind == "attention" and (c.p or 0) > 0) or c.kind == "random"
        if hit:
            ev.setdefault(c.module, []).append(c)
    return ev


def _finding(name: str, mod: nn.Module, calls: list[Call], diff: float) -> Finding:
    cls = type(mod).__name__
    where = f"{cls}.forward" if name else f"the model's own forward ({cls})"
    drop = [c for c in calls if c.kind in ("dropout", "regulab-dropout")]
    attn = [c for c in calls if c.kind == "attention"]
    rand = sorted({c.name for c in calls if c.kind == "random"})
    d = {"max_abs_diff": diff}
    if drop:
        c = drop[0]
        return Finding(
            "error", "functional-dropout-training", name,
            f"{where} calls {c.name}(p={c.p if c.p is not None else '?'}) with training=True during eval, so dropout stays on after "
            f"model.eval(); two eval passes differ by up to {diff:.3g}",
            "pass training=self.training (F.dropout's default is training=True), or use a dropout layer "
            "(regulab.nn.Dropout / torch.nn.Dropout) that follows train()/eval()", {**d, "p": c.p, "func": c.name})
    if attn:
        c = attn[0]
        return Finding(
            "error", "attention-dropout-eval", name,
            f"{where} calls F.scaled_dot_product_attention(dropout_p={c.p:g}) during eval: attention weights "
            f"are dropped at inference; two eval passes differ by up to {diff:.3g}",
            "pass dropout_p=self.p if self.training else 0.0 (nn.MultiheadAttention does this itself)",
            {**d, "dropout_p": c.p})
    if rand:
        return Finding(
            "error", "random-in-eval", name,
            f"{where} draws random numbers ({', '.join(rand)}) in eval mode: it ignores self.training; "
            f"two eval passes differ by up to {diff:.3g}",
            "make the noise conditional (`if self.training:`), or build it from a regulab.nn dropout layer",
            {**d, "random_ops": rand})
    return Finding(
        "error", "eval-nondeterministic", name,
        f"{where} returns different outputs for the same input in eval mode (up to {diff:.3g} apart): it is "
        f"random or stateful and ignores self.training",
        "make any randomness conditional on self.training and keep forward free of state that changes "
        "between calls", d)


def check_determinism(model: nn.Module, rec1: PassRecord, rec2: PassRecord) -> tuple[list[Finding], set[str]]:
    """Findings for eval non-determinism, and the set of culprit module names."""
    mods = dict(model.named_modules())
    random_out = not same(rec1.outputs, rec2.outputs)
    diff = max_abs_diff(rec1.outputs, rec2.outputs) if random_out else 0.0
    ev = _evidence(rec1, mods)
    if not random_out:  # random draws that never reach the output are harmless
        ev = {n: cs for n, cs in ev.items() if any(c.kind != "random" for c in cs)}
    sources = set(ev)
    if random_out:
        second = {(m.name, m.index): m for m in rec2.modules}
        for m1 in rec1.modules:
            m2 = second.get((m1.name, m1.index))
            if m2 is None or m1.outputs is None or m2.outputs is None:
                continue
            if same(m1.inputs, m2.inputs) and not same(m1.outputs, m2.outputs):
                sources.add(m1.name)
    inner = {s for s in sources if not any(_descendant(t, s) for t in sources)}
    findings = []
    for name in sorted(inner, key=lambda n: list(mods).index(n) if n in mods else 0):
        if name in mods and is_dropout_module(mods[name]):
            continue  # reported by the train/eval mode checks
        findings.append(_finding(name, mods.get(name, model), ev.get(name, []), diff))
    if random_out and not inner:
        findings.append(_finding("", model, [], diff))
    return findings, inner
