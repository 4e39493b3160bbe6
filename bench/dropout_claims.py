"""Dropout claims on MNIST-1D, measured: doctor zoo, MC vs weight scaling, sparsity, co-adaptation.

Trains the MNIST-1D reference MLP (40-100-100-10 ReLU, residual second layer,
Adam 1e-2, batch 100) with the study engine: a baseline arm and dropout arms,
several seeds each. Then:

* doctor zoo: broken models caught / false alarms on clean ones (tests/zoo);
* MC dropout: test error for T = 1…100 passes (mean ± sd over repeats) vs
  weight scaling and vs the ensemble of the arm's seeds; ECE, entropy, MI;
* sparsity and co-adaptation of each hidden layer, per seed, baseline vs dropout.

Prints one JSON line. Usage: ``.venv/bin/python bench/dropout_claims.py [--epochs N] [--seeds N] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def zoo_result() -> dict:
    from regulab.doctor import diagnose

    out = {}
    for kind in ("broken", "clean"):
        spec = importlib.util.spec_from_file_location(f"_zoo_{kind}", ROOT / "tests" / "zoo" / f"{kind}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out[kind] = mod
    caught, missed = 0, []
    for name, (shape, codes) in out["broken"].BROKEN.items():
        got = {f.code for f in diagnose(getattr(out["broken"], name)(), torch.randn(shape))}
        if codes <= got:
            caught += 1
        else:
            missed.append(name)
    alarms = []
    for name, shape in out["clean"].CLEAN.items():
        fs = [f for f in diagnose(getattr(out["clean"], name)(), torch.randn(shape)) if f.severity != "info"]
        if fs:
            alarms.append(name)
    return {"broken": len(out["broken"].BROKEN), "caught": caught, "missed": missed,
            "clean": len(out["clean"].CLEAN), "false_alarms": len(alarms), "false_alarm_models": alarms}


def mean_sd(xs: list[float]) -> list[float]:
    return [statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--p", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--out", help="study folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import regulab
    from regulab.analysis import compare_models, mc_report
    from regulab.analysis.cli import load_arm

    t0 = time.perf_counter()
    result: dict = {"bench": "dropout_claims", "dataset": "mnist1d", "epochs": args.epochs, "seeds": args.seeds}
    result["zoo"] = zoo_result()

    out = Path(args.out or tempfile.mkdtemp(prefix="regulab-claims-"))
    arms = {"baseline": {}, **{f"dropout p={p:g}": {"p": p} for p in args.p}}
    spec = {"name": "dropout claims", "seeds": args.seeds, "epochs": args.epochs, "batch_size": 100,
            "dataset": {"name": "mnist1d"},
            "model": {"kind": "mlp", "widths": [100, 100], "activation": "relu", "residual": True},
            "optimizer": {"name": "adam", "lr": 1e-2}, "arms": arms}
    regulab.Study(spec, out=out, quiet=True, threads=1).run()
    result["train_seconds"] = round(time.perf_counter() - t0, 1)

    loaded = {a: load_arm(out, a) if a != "baseline" else None for a in arms}
    base_models = load_arm(out, "baseline", require_dropout=False)[1]
    split = next(v for v in loaded.values() if v is not None)[2]
    x, y = split.x_test, split.y_test

    Ts = [1, 2, 3, 5, 10, 20, 30, 50, 75, 100]
    result["mc"] = {}
    for arm, v in loaded.items():
        if v is None:
            continue
        _, models, _, _ = v
        rep = mc_report(models[0], x, y, Ts=Ts, repeats=args.repeats, members=models)
        d = rep.to_dict()
        result["mc"][arm] = {
            "weight_scaling_error": d["error"]["weight scaling"],
            "mc_error_mean": dict(zip(map(str, Ts), [round(e, 4) for e in d["mc_error_mean"]])),
            "mc_error_sd": dict(zip(map(str, Ts), [round(e, 4) for e in d["mc_error_sd"]])),
            "within_one_sd_from_T": d["within_sd_T"],
            "first_T_within_one_sd": _first_within(d),
            "ensemble_error": d["error"][f"ensemble of {len(models)}"],
            "ece": d["ece"], "entropy": d["entropy"], "mutual_information": d["mutual_information"]}
    result["test_error_by_arm"] = {a: mean_sd([float(_err(m, x, y)) for m in ms]) for a, ms in
                                   [("baseline", base_models)] + [(a, v[1]) for a, v in loaded.items() if v]}

    result["layers"] = {}
    for call, layer_name in ((0, "hidden1"), (1, "hidden2")):
        per_arm: dict[str, dict[str, list[float]]] = {}
        for arm in arms:
            models = base_models if arm == "baseline" else loaded[arm][1]
            rows = [compare_models({arm: (m, "dropout", call)}, x, y, pairs=args.pairs)["models"][arm]
                    for m in models]
            for r in rows:  # interaction relative to single-unit effects: controls for overall loss scale
                r["relative_interaction"] = r["mean_abs_interaction"] / r["mean_abs_single"]
            per_arm[arm] = {k: mean_sd([r[k] for r in rows]) for k in
                            ("fraction_zero", "mean_activation", "dead_units", "mean_abs_interaction",
                             "mean_interaction", "mean_abs_single", "relative_interaction", "loss", "accuracy")}
        b = per_arm["baseline"]
        verdict = {arm: {"higher_sparsity": r["fraction_zero"][0] > b["fraction_zero"][0],
                         "lower_mean_activation": r["mean_activation"][0] < b["mean_activation"][0],
                         "lower_coadaptation": r["mean_abs_interaction"][0] < b["mean_abs_interaction"][0],
                         "lower_relative_coadaptation": r["relative_interaction"][0] < b["relative_interaction"][0]}
                   for arm, r in per_arm.items() if arm != "baseline"}
        result["layers"][layer_name] = {"by_arm": per_arm, "verdict_vs_baseline": verdict}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["study_dir"] = str(out)
    print(json.dumps(result))


def _err(model, x, y) -> float:
    from regulab.analysis import predict_probs

    return float((predict_probs(model, x).argmax(1) != y).double().mean())


def _first_within(d: dict) -> int | None:
    ws = d["error"]["weight scaling"]
    for t, m, s in zip(d["Ts"], d["mc_error_mean"], d["mc_error_sd"]):
        if abs(m - ws) <= s:
            return t
    return None


if __name__ == "__main__":
    sys.exit(main())
