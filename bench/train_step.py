"""Training-step cost of dropout: MLP 784-1024-1024-10, batch 128, SGD.

Step time with dropout (p=0.5 after each hidden layer) over the same model
without dropout, for torch.nn.Dropout and regulab.nn.Dropout. One JSON line.

The floor beside them: in the dropout's places an ``autograd.Function`` that only copies
(forward and backward), the extra pass over the activation and its gradient that any
dropout returning a new tensor makes, with no random numbers and no Python of its own.

Trials: two identical models differ by up to ±3-5% in one process, for the whole run (where
their weights, activations and gradients sit in memory: cache sets, 4 KiB aliasing, huge
pages). So the benchmark builds every model afresh for each of ``--trials`` trials (in a
rotated order), times them interleaved (medians of ``--repeats`` rounds), and reports the
median over trials of each ratio. A second model without dropout is the null control:
``null_overhead`` is what a ratio of two identical models reads, ~1.00.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import regulab  # noqa: E402
from _timing import emit, median_seconds  # noqa: E402


class _Copy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clone()


class CopyPass(nn.Module):
    """The floor: a dropout's extra pass (a copy each way), nothing else."""

    def __init__(self, p: float) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Copy.apply(x)


def make(drop: type[nn.Module] | None) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for fan_in, fan_out in [(784, 1024), (1024, 1024)]:
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        if drop is not None:
            layers.append(drop(0.5))
    layers.append(nn.Linear(1024, 10))
    return nn.Sequential(*layers)


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=7, help="fresh sets of models (default 7)")
    ap.add_argument("--repeats", type=int, default=11, help="interleaved rounds per trial (default 11)")
    args = ap.parse_args()
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    kinds = {"plain": None, "plain_again": None, "torch_dropout": nn.Dropout,
             "regulab_dropout": regulab.nn.Dropout, "copy_pass": CopyPass}
    names = list(kinds)
    ratios: dict[str, list[float]] = {k: [] for k in names}
    step_ms: dict[str, list[float]] = {k: [] for k in names}
    for trial in range(args.trials):
        order = names[trial % len(names):] + names[:trial % len(names)]
        steps = {k: stepper(make(kinds[k]), x, y) for k in order}
        t = median_seconds(steps, repeats=args.repeats, warmup=3, inner=3)
        for k in names:
            ratios[k].append(t[k] / t["plain"])
            step_ms[k].append(t[k] * 1e3)
        del steps
    over = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
    emit("train_step", {
        "model": "MLP 784-1024-1024-10, batch 128, SGD, p=0.5 after each hidden layer",
        "trials": args.trials,
        "repeats": args.repeats,
        "step_ms": {k: round(statistics.median(v), 3) for k, v in step_ms.items()},
        "torch_overhead": over["torch_dropout"],
        "regulab_overhead": over["regulab_dropout"],
        "floor_overhead": over["copy_pass"],
        "null_overhead": over["plain_again"],
        "regulab_overhead_trials": [round(r, 3) for r in ratios["regulab_dropout"]],
    })


if __name__ == "__main__":
    main()
