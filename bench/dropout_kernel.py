"""Dropout forward / forward+backward throughput: regulab vs torch eager, torch.compile, and clone.

Prints one JSON line. Run: ``.venv/bin/python bench/dropout_kernel.py [--quick]``.
Each figure is a median over interleaved repeats in this one process; ratios
are what to quote, the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import regulab  # noqa: E402
from _timing import emit, median_seconds  # noqa: E402

P = 0.5


def saved_bytes_per_element(fn, n: int) -> float:
    """Bytes that autograd keeps for backward, per input element (measured with saved_tensors_hooks)."""
    saved = []
    x = torch.randn(n, requires_grad=True)
    h = x.view_as(x)  # non-leaf input, as inside a network
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(h)
    return sum(t.numel() * t.element_size() for t in saved) / n


def fwd_fns(x: torch.Tensor, compiled) -> dict:
    return {
        "regulab": lambda: regulab.ops.dropout(x, P),
        "torch": lambda: F.dropout(x, P),
        "compiled": lambda: compiled(x),
        "clone": lambda: x.clone(),
    }


def fwdbwd_fns(x: torch.Tensor, g: torch.Tensor) -> dict:
    def step(f):
        def run():
            x.grad = None
            f(x, P).backward(g)
        return run
    return {"regulab": step(regulab.ops.dropout), "torch": step(F.dropout)}


def timm_drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """timm's drop_path formulation (the plain-torch twin of DropPath)."""
    keep = 1 - p
    noise = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * noise.div_(keep)


def variant_speedups(repeats: int) -> dict[str, object]:
    """Dropout-family variants at 2^22 float32 elements vs torch's twin (or the plain torch formulation).

    Timed settled (``median_seconds(settle=True)``): each call follows one of its own, as in a
    loop of that op. The shared-mask variants are one memory-bound pass; regulab writes their
    16 MiB outputs with non-temporal stores, torch with ordinary ones, and in plain alternation
    regulab's call would pay to write back the dirty lines of torch's output just before.
    """
    sigma = (P / (1 - P)) ** 0.5
    shapes = {"Dropout2d": (64, 64, 32, 32), "DropPath": (256, 64, 256), "AlphaDropout": (1 << 22,),
              "GaussianDropout": (1 << 22,)}
    pairs = {
        "Dropout2d": (lambda t: regulab.ops.dropout2d(t, P), lambda t: F.dropout2d(t, P, True)),
        "DropPath": (lambda t: regulab.ops.drop_path(t, P, True), lambda t: timm_drop_path(t, P)),
        "AlphaDropout": (lambda t: regulab.ops.alpha_dropout(t, P), lambda t: F.alpha_dropout(t, P, True)),
        "GaussianDropout": (lambda t: regulab.ops.gaussian_dropout(t, P),
                            lambda t: t * (1 + sigma * torch.randn_like(t))),
    }
    out: dict[str, object] = {"variants_ms": {}, "variants_timing": "settled"}
    for name, (ours, theirs) in pairs.items():
        x = torch.randn(shapes[name])
        t = median_seconds({"regulab": lambda: ours(x), "torch": lambda: theirs(x)}, max(5 * repeats, 9), settle=True)
        out["variants_ms"][name] = {k: round(v * 1e3, 3) for k, v in t.items()}
        out[f"{name}_fwd_speedup_vs_torch"] = round(t["torch"] / t["regulab"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument("--variants-only", action="store_true", help="only the dropout-family variant rows")
    args = ap.parse_args()
    repeats = 5 if args.quick else 11
    if args.variants_only:
        emit("dropout_kernel", {"p": P, "dtype": "float32", "repeats": max(repeats, 5), **variant_speedups(repeats)})
        return
    compiled = torch.compile(lambda t: F.dropout(t, P, True))
    result: dict[str, object] = {"p": P, "dtype": "float32", "repeats": repeats, "sizes": {}}
    for log2 in (20, 22, 24):
        n = 1 << log2
        x = torch.randn(n)
        compiled(x)  # compile outside the timed part
        fwd = median_seconds(fwd_fns(x, compiled), repeats)
        xg, g = torch.randn(n, requires_grad=True), torch.randn(n)
        fb = median_seconds(fwdbwd_fns(xg, g), repeats)
        gbs = {k: 8 * n / v / 1e9 for k, v in fwd.items()}  # read + write, GB/s
        result["sizes"][f"2^{log2}"] = {
            "fwd_melem_per_s": {k: round(n / v / 1e6, 1) for k, v in fwd.items()},
            "fwd_gb_per_s": {k: round(v, 2) for k, v in gbs.items()},
            "fwdbwd_melem_per_s": {k: round(n / v / 1e6, 1) for k, v in fb.items()},
            "fwd_speedup_vs_torch": round(fwd["torch"] / fwd["regulab"], 2),
            "fwd_speedup_vs_compiled": round(fwd["compiled"] / fwd["regulab"], 2),
            "fwdbwd_speedup_vs_torch": round(fb["torch"] / fb["regulab"], 2),
            "fwd_fraction_of_clone": round(fwd["clone"] / fwd["regulab"], 3),
        }
    at22, at24 = result["sizes"]["2^22"], result["sizes"]["2^24"]
    result.update(
        fwd_speedup_vs_torch=at22["fwd_speedup_vs_torch"],
        fwdbwd_speedup_vs_torch=at22["fwdbwd_speedup_vs_torch"],
        fwd_speedup_vs_compiled=at22["fwd_speedup_vs_compiled"],
        fwd_fraction_of_clone=at24["fwd_fraction_of_clone"],
        saved_bytes_per_element=saved_bytes_per_element(lambda t: regulab.ops.dropout(t, P), 1 << 22),
        torch_saved_bytes_per_element=saved_bytes_per_element(lambda t: F.dropout(t, P), 1 << 22),
        **variant_speedups(repeats),
    )
    emit("dropout_kernel", result)


if __name__ == "__main__":
    main()
