"""Train the MNIST-1D reference MLP with and without regulab.nn.Dropout; print both test accuracies.

The reference MLP (40-100-100-10 ReLU, residual second layer, Adam lr 1e-2,
batch 100) reaches 100% train accuracy early and then overfits: a good place
to see what dropout does. The data is generated locally by the mnist1d package.

Run: ``.venv/bin/python examples/mnist1d_dropout.py [--steps 6000] [--p 0.3]``
"""
from __future__ import annotations

import argparse

import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

import regulab


class MLP(nn.Module):
    def __init__(self, p: float = 0.0, width: int = 100) -> None:
        super().__init__()
        self.linear1, self.linear2, self.linear3 = nn.Linear(40, width), nn.Linear(width, width), nn.Linear(width, 10)
        self.drop1, self.drop2 = regulab.nn.Dropout(p), regulab.nn.Dropout(p)

    def forward(self, x):
        h = self.drop1(self.linear1(x).relu())  # (B, 100)
        h = self.drop2(h + self.linear2(h).relu())  # residual second layer
        return self.linear3(h)


def train(p: float, data: dict, steps: int, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"])
    xt, yt = torch.tensor(data["x_test"], dtype=torch.float32), torch.tensor(data["y_test"])
    model = MLP(p)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (100,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (float((model(x).argmax(1) == y).float().mean()), float((model(xt).argmax(1) == yt).float().mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--p", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = make_dataset(get_dataset_args())  # 4000 train / 1000 test, length 40, no download
    for p in (0.0, args.p):
        train_acc, test_acc = train(p, data, args.steps, args.seed)
        label = "without dropout" if p == 0 else f"with Dropout(p={p})"
        print(f"MNIST-1D reference MLP {label:>22}: train acc {train_acc:6.1%}  test acc {test_acc:6.1%}")


if __name__ == "__main__":
    main()
