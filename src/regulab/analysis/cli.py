"""``regulab mc DIR``: MC dropout vs weight scaling vs the ensemble of an arm's seeds.

Reads a finished study folder: for one arm with dropout it rebuilds each
seed's model from the run's stored config and best weights (safetensors),
reloads the same data split, and reports test error for T = 1…T_max MC
passes (mean ± sd over repeats; Srivastava et al. Fig. 11), the ensemble of
the arm's seeds, expected calibration error, predictive entropy and mutual
information. ``--out`` saves the plots as PNG.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import StudyError, did_you_mean

DEFAULT_TS = "1,2,3,5,10,20,30,50,75,100"


def register(subparsers) -> None:
    p = subparsers.add_parser("mc", help="MC dropout vs weight scaling vs seed ensemble for a study arm",
                              description=__doc__.split("\n\n")[1])
    p.add_argument("dir", metavar="DIR", help="study folder")
    p.add_argument("--arm", help="arm to analyse (default: the first arm with dropout)")
    p.add_argument("--T", dest="Ts", default=DEFAULT_TS, metavar="T,T,…",
                   help=f"numbers of MC passes to average (default {DEFAULT_TS})")
    p.add_argument("--repeats", type=int, default=5, help="independent groups of passes for the sd (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC dropout masks (default 0)")
    p.add_argument("--out", metavar="FOLDER", help="save mc_curve.png and reliability.png here")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=run)


def _ts(text: str) -> list[int]:
    try:
        ts = sorted({int(t) for t in text.replace(" ", "").split(",") if t})
    except ValueError:
        ts = []
    if not ts or ts[0] < 1:
        raise StudyError(f"mc: --T must be positive integers like 1,10,100, got {text!r}")
    return ts


def _dropout_of(cfg: dict) -> float:
    a = cfg.get("arm", {})
    return max(float(a.get("p", 0) or 0), float(a.get("input_p", 0) or 0))


def load_arm(folder, arm: str | None = None, *, require_dropout: bool = True):
    """``(arm, models, split, runs)`` for the finished runs of ``arm`` (default: first arm with dropout).

    Each model is the run's ordinary module with its best weights, in eval mode.
    """
    import torch
    from safetensors.torch import load_file

    from .. import data
    from ..models import build
    from ..study.store import open_results

    res = open_results(folder)
    weights = {f["run_id"]: f["weights"] for f in res.finals if f.get("weights")}
    runs = [r for r in res.runs if r["status"] == "finished" and r["run_id"] in weights]
    arms = sorted({r["arm"] for r in runs})
    if not runs:
        raise StudyError(f"mc: DIR must hold finished runs with weights, got none in {str(folder)!r}")
    with_dropout = [a for a in arms if any(_dropout_of(r["config"]) > 0 for r in runs if r["arm"] == a)]
    if arm is None:
        if not with_dropout:
            raise StudyError(f"mc: the study must have an arm with dropout (p > 0), got arms {arms}")
        arm = with_dropout[0]
    elif arm not in arms:
        hint = did_you_mean(arm, arms)
        raise StudyError(f"mc: --arm must be one of {arms}, got {arm!r}" + (f"; {hint}" if hint else ""))
    elif require_dropout and arm not in with_dropout:
        raise StudyError(f"mc: --arm must name an arm with dropout (p > 0), got {arm!r} (MC averaging equals "
                         f"weight scaling without dropout)")
    runs = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
    cfg = runs[0]["config"]
    d = cfg["dataset"]
    split = data.load(d["name"], n_train=cfg.get("n_train", d.get("n_train")), val_fraction=d["val_fraction"],
                      seed=d["seed"], standardize=d["standardize"])
    models = []
    for r in runs:
        c = r["config"]
        md = build(c["model"]["kind"], c["model"], split.input_shape, split.num_classes)
        m = md.make(float(c["arm"].get("p", 0.0)), float(c["arm"].get("input_p", 0.0)))
        path = Path(folder) / weights[r["run_id"]]
        try:
            state = load_file(str(path))
        except Exception as e:
            raise StudyError(f"mc: weights of run {r['name']!r} must be readable, got {type(e).__name__}: {e}") from None
        m.load_state_dict({k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v for k, v in state.items()})
        models.append(m.eval())
    return arm, models, split, runs


def run(args) -> int:
    from .mc import mc_report

    ts = _ts(args.Ts)
    if args.repeats < 1:
        raise StudyError(f"mc: --repeats must be an integer >= 1, got {args.repeats}")
    arm, models, split, runs = load_arm(args.dir, args.arm)
    rep = mc_report(models[0], split.x_test, split.y_test, Ts=ts, repeats=args.repeats,
                    members=models if len(models) > 1 else (), seed=args.seed)
    doc = {"arm": arm, "seeds": [r["seed"] for r in runs], "mc_seed": runs[0]["seed"],
           "test_examples": int(split.y_test.numel()), **rep.to_dict()}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in rep.figures().items():
            fig.savefig(out / f"{name}.png", dpi=110)
        doc["figures"] = sorted(str(out / f"{n}.png") for n in ("mc_curve", "reliability"))
    print(json.dumps(doc, indent=2) if args.json else _text(doc))
    return 0


def _text(doc: dict) -> str:
    lines = [f"arm {doc['arm']}: {len(doc['seeds'])} seed(s), {doc['test_examples']} test examples; "
             f"MC passes on seed {doc['mc_seed']}"]
    lines.append(f"{'predictor':<22}{'error %':>9}{'ECE':>8}{'entropy':>9}{'MI':>8}")
    for k, e in doc["error"].items():
        mi = doc["mutual_information"].get(k)
        lines.append(f"{k:<22}{100 * e:>9.2f}{doc['ece'][k]:>8.3f}{doc['entropy'][k]:>9.3f}"
                     f"{'' if mi is None else f'{mi:.3f}':>8}")
    lines.append("MC error by T (mean ± sd over repeats): " + ", ".join(
        f"T={t}: {100 * m:.2f}±{100 * s:.2f}" for t, m, s in zip(doc["Ts"], doc["mc_error_mean"], doc["mc_error_sd"])))
    w = doc["within_sd_T"]
    if w is not None:
        lines.append(f"MC averaging stays within one sd of weight scaling from T = {w}")
    else:
        gap = 100 * (doc["mc_error_mean"][-1] - doc["error"]["weight scaling"])
        lines.append(f"MC averaging does not stay within one sd of weight scaling over these T: at T={doc['Ts'][-1]} "
                     f"it is {abs(gap):.2f} points {'below' if gap < 0 else 'above'} it")
    if "ensemble_members" in doc:
        lines.append("ensemble error by members: " + ", ".join(
            f"{k}: {100 * e:.2f}" for k, e in zip(doc["ensemble_members"], doc["ensemble_error_mean"])))
    for f in doc.get("figures", []):
        lines.append(f"saved {f}")
    return "\n".join(lines)
