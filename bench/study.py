"""Benchmark: the standard study in regulab vs a plain PyTorch loop and a torch.func ensemble.

Standard study: MNIST-1D, reference MLP 40-100-100-10 (ReLU, residual 2nd layer), Adam lr 1e-2,
batch 100, 8 arms x 3 seeds = 24 runs, the same epochs for every run; per epoch every run is
evaluated on the training and validation sets, and once on the test set at the end.

* regulab: the stacked trainer (all 24 runs as one batched model), timed end to end, at ``--threads``
  (default: all cores, as ``regulab study``).
* (a) loop: one run at a time, nn.Sequential + DataLoader + nn.Dropout + torch.optim.Adam.
* (b) vmap: torch.func stacked ensemble (functional_call + vmap(randomness="different") + grad),
  torch.optim.Adam on the stacked parameters.

Each competitor is timed at one thread and at regulab's thread count, and its faster time is used
(a loop of small ops is often faster on one thread). The competitors do the same work per epoch (same arms, same evaluations) and are timed on fewer
epochs and scaled per epoch to the regulab epoch count (stated in the JSON). Timings are medians of
``--repeats`` interleaved rounds. ``gemm_fraction`` = regulab's achieved matmul GFLOP/s (forward +
backward 6·B·Σ(in·out) per member step, plus 2·N·Σ(in·out) per member per evaluated example)
divided by this machine's torch.mm 1024x1024 float32 GFLOP/s.

Run: ``python bench/study.py [--epochs 10] [--repeats 3] [--threads N]``; prints one JSON line.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import emit  # noqa: E402

ARMS = {"baseline": {}, "dropout p=0.1": {"p": 0.1}, "dropout p=0.3": {"p": 0.3}, "l2": {"l2": 1e-4},
        "weight decay": {"weight_decay": 0.05}, "dropout+max-norm": {"p": 0.3, "max_norm": 2.0},
        "input noise": {"input_noise": 0.3}, "label smoothing": {"label_smoothing": 0.1}}
SEEDS = 3
DIMS = [(40, 100), (100, 100), (100, 10)]
B = 100


def _arm(a: dict) -> dict:
    return {"p": 0.0, "l2": 0.0, "weight_decay": 0.0, "max_norm": None, "input_noise": 0.0,
            "label_smoothing": 0.0, **a}


# -- regulab ------------------------------------------------------------------------------------
def regulab_study(data, epochs: int):
    from regulab.study.plan import plan
    from regulab.study.spec import parse_spec
    from regulab.study.trainer_stacked import StackedTrainer

    spec = parse_spec({"epochs": epochs, "seeds": SEEDS, "batch_size": B, "arms": ARMS,
                       "optimizer": {"name": "adam", "lr": 1e-2}})
    group = plan(spec)[0]

    def run():
        StackedTrainer(group, spec, data).run()
    return run


# -- (a) plain loop -----------------------------------------------------------------------------
class _Residual(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        return x + torch.relu(self.lin(x))


def _plain_model(p: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Dropout(p), _Residual(100), nn.Dropout(p),
                         nn.Linear(100, 10))


def plain_loop(data, epochs: int):
    ds = torch.utils.data.TensorDataset(data.x_train, data.y_train)

    @torch.no_grad()
    def evaluate(model, x, y):
        model.eval()
        logits = model(x)
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()

    def run():
        for name, a in ARMS.items():
            a = _arm(a)
            for seed in range(SEEDS):
                torch.manual_seed(seed)
                model = _plain_model(a["p"])
                opt = (torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=a["weight_decay"])
                       if a["weight_decay"] else torch.optim.Adam(model.parameters(), lr=1e-2))
                loader = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True)
                weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
                for _ in range(epochs):
                    model.train()
                    for x, y in loader:
                        if a["input_noise"]:
                            x = x + a["input_noise"] * torch.randn_like(x)
                        loss = F.cross_entropy(model(x), y, label_smoothing=a["label_smoothing"])
                        if a["l2"]:
                            loss = loss + a["l2"] * sum((w * w).sum() for w in weights)
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        if a["max_norm"]:
                            with torch.no_grad():
                                for w in weights:
                                    w.copy_(torch.renorm(w, 2, 0, a["max_norm"]))
                    evaluate(model, data.x_train, data.y_train)
                    evaluate(model, data.x_val, data.y_val)
                evaluate(model, data.x_test, data.y_test)
    return run


# -- (b) torch.func stacked ensemble ------------------------------------------------------------
def vmap_ensemble(data, epochs: int):
    arms = [_arm(a) for a in ARMS.values() for _ in range(SEEDS)]
    M = len(arms)
    col = lambda k, d=0.0: torch.tensor([float(a[k] if a[k] is not None else d) for a in arms])  # noqa: E731
    p, l2, wd, sigma, eps, c = (col("p"), col("l2"), col("weight_decay"), col("input_noise"),
                                col("label_smoothing"), col("max_norm", 1e30))

    def forward(params, x, p_m, training: bool):
        h = torch.relu(x @ params["0.weight"].T + params["0.bias"])
        if training:
            h = h * (torch.rand_like(h) >= p_m) / (1 - p_m)
        h = h + torch.relu(h @ params["3.lin.weight"].T + params["3.lin.bias"])
        if training:
            h = h * (torch.rand_like(h) >= p_m) / (1 - p_m)
        return h @ params["5.weight"].T + params["5.bias"]

    def loss_fn(params, x, y, p_m, l2_m, sigma_m, eps_m):
        x = x + sigma_m * torch.randn_like(x)
        logits = forward(params, x, p_m, True)
        lp = torch.log_softmax(logits, -1)
        nll = -lp.gather(1, y.unsqueeze(1)).mean()
        loss = (1 - eps_m) * nll + eps_m * (-lp.mean(-1)).mean()
        w = [params["0.weight"], params["3.lin.weight"], params["5.weight"]]
        return loss + l2_m * sum((wi * wi).sum() for wi in w)

    step_grad = vmap(grad(loss_fn), in_dims=(0, 0, 0, 0, 0, 0, 0), randomness="different")
    eval_fn = vmap(lambda params, x: forward(params, x, torch.zeros(()), False), in_dims=(0, None))
    n = len(data.y_train)

    def run():  # (the plain forward above is written out: functional_call adds nothing here)
        models = []
        for i in range(M):
            torch.manual_seed(i % SEEDS)
            models.append(_plain_model(0.0))
        params, _ = stack_module_state(models)
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        opt = torch.optim.Adam(params.values(), lr=1e-2)
        wnames = ["0.weight", "3.lin.weight", "5.weight"]
        for _ in range(epochs):
            perm = torch.stack([torch.randperm(n) for _ in range(M)])
            for s in range(math.ceil(n / B)):
                idx = perm[:, s * B:(s + 1) * B]
                g = step_grad(params, data.x_train[idx], data.y_train[idx], p, l2, sigma, eps)
                for k, v in params.items():
                    v.grad = g[k]
                with torch.no_grad():
                    for k in wnames:
                        params[k].mul_(1 - 1e-2 * wd.view(-1, 1, 1))
                opt.step()
                with torch.no_grad():
                    for k in wnames:
                        w = params[k]
                        norms = w.norm(dim=2, keepdim=True)
                        w.mul_(torch.where(norms > c.view(-1, 1, 1), c.view(-1, 1, 1) / (norms + 1e-7), 1.0))
            with torch.no_grad():
                for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
                    logits = eval_fn(params, x)
                    F.cross_entropy(logits.reshape(-1, 10), y.repeat(M))
        with torch.no_grad():
            eval_fn(params, data.x_test)
    return run


def gemm_gflops(repeats: int = 20) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        torch.mm(a, b)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t0)
    return 2 * 1024 ** 3 / statistics.median(ts) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10, help="regulab epochs")
    ap.add_argument("--competitor-epochs", type=int, default=2, help="epochs timed for (a) and (b), scaled")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch threads for regulab (default: all cores, as `regulab study`)")
    args = ap.parse_args()
    from regulab.data import load

    data = load("mnist1d")
    E, Ec, T = args.epochs, args.competitor_epochs, args.threads
    # each competitor at its fastest thread count: one thread, or as many as regulab gets
    counts = sorted({1, T})
    fns = {("regulab", T): regulab_study(data, E)}
    for t in counts:
        fns[("loop", t)], fns[("vmap", t)] = plain_loop(data, Ec), vmap_ensemble(data, Ec)
    torch.set_num_threads(T)
    fns[("regulab", T)]()  # warm-up: numba compilation, allocator
    times = {k: [] for k in fns}
    gemm = []
    for _ in range(args.repeats):
        for (name, t), f in fns.items():
            torch.set_num_threads(t)
            t0 = time.perf_counter()
            f()
            times[(name, t)].append(time.perf_counter() - t0)
        torch.set_num_threads(T)
        gemm.append(gemm_gflops())
    med = {k: statistics.median(v) for k, v in times.items()}
    per_threads = {f"{name}@{t}": round(v * (E / Ec if name != "regulab" else 1), 3) for (name, t), v in med.items()}
    loop_s = min(med[("loop", t)] for t in counts) * E / Ec
    vmap_s = min(med[("vmap", t)] for t in counts) * E / Ec
    reg_s = med[("regulab", T)]
    M, n = len(ARMS) * SEEDS, len(data.y_train)
    steps = math.ceil(n / B) * E
    macs = sum(i * o for i, o in DIMS)
    flops = M * (6 * B * macs * steps + 2 * macs * (E * (n + len(data.y_val)) + len(data.y_test)))
    gflops = flops / reg_s / 1e9
    g = statistics.median(gemm)
    emit("study", {
        "runs": M, "epochs": E, "competitor_epochs_timed": Ec, "competitors_scaled_per_epoch": True,
        "regulab_threads": T, "competitors_at_best_of_threads": counts, "seconds_by_threads": per_threads,
        "regulab_s": round(reg_s, 3), "loop_s": round(loop_s, 3), "vmap_s": round(vmap_s, 3),
        "speedup_vs_loop": round(loop_s / reg_s, 2), "speedup_vs_vmap": round(vmap_s / reg_s, 2),
        "regulab_gflops": round(gflops, 2), "gemm_gflops": round(g, 2), "gemm_fraction": round(gflops / g, 3),
        "repeats": args.repeats, "targets": {"speedup_vs_loop": 10, "speedup_vs_vmap": 2, "gemm_fraction": 0.35},
    })


if __name__ == "__main__":
    main()
