"""Training-step cost of dropout: MLP 784-1024-1024-10, batch 128, SGD.

Step time with dropout (p=0.5 after each hidden layer) over the same model
without dropout, for torch.nn.Dropout and regulab.nn.Dropout. One JSON line.

The floor beside them: in the dropout's places an ``autograd.Function`` that only copies
(forward and backward), the extra pass over the activation and its gradient that any
dropout returning a new tensor makes, with no random numbers and no Python of its own.
"""
from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--repeats", type=int, default=31)
    args = ap.parse_args()
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    steps = {
        "plain": stepper(make(None), x, y),
        "torch_dropout": stepper(make(nn.Dropout), x, y),
        "regulab_dropout": stepper(make(regulab.nn.Dropout), x, y),
        "copy_pass": stepper(make(CopyPass), x, y),
    }
    t = median_seconds(steps, repeats=args.repeats, warmup=5, inner=3)
    emit("train_step", {
        "model": "MLP 784-1024-1024-10, batch 128, SGD, p=0.5 after each hidden layer",
        "repeats": args.repeats,
        "step_ms": {k: round(v * 1e3, 3) for k, v in t.items()},
        "torch_overhead": round(t["torch_dropout"] / t["plain"], 3),
        "regulab_overhead": round(t["regulab_dropout"] / t["plain"], 3),
        "floor_overhead": round(t["copy_pass"] / t["plain"], 3),
    })


if __name__ == "__main__":
    main()
