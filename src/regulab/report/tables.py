"""Per-arm statistics of a study and their flat table form (``results.csv`` / ``results.json``).

:func:`analyse` reads a :class:`~regulab.study.store.Results` and returns an :class:`Analysis`:
one :class:`ArmStats` per arm (arm names include swept values), each compared with the
baseline trained on the same data (same ``n_train``), paired by seed, p-values Holm-adjusted
across arms. Only *finished* runs count; failed and unfinished runs are listed, not used.

Units: accuracies are fractions in the store; the table form reports them in percent
(``*_pct``) and differences in percentage points (``*_pts``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..analysis.stats import Estimate, PairedTest, holm, mean_ci, pair_by_seed, paired_test, ratio

__all__ = ["ArmStats", "Analysis", "analyse", "table_rows", "arm_settings", "is_off", "ALPHA"]

ALPHA = 0.05  # family-wise error rate of the comparisons with the baseline (Holm)


@dataclass
class ArmStats:
    arm: str
    base_arm: str
    sweep: dict
    n_train: int | None
    config: dict
    seeds: list[int]                  # seeds of the finished runs
    runs: int
    failed: list[dict]                # {"name", "seed", "status", "reason"} of excluded runs
    test_acc: Estimate
    test_loss: Estimate
    train_acc: Estimate               # clean (eval-mode) training accuracy at the best epoch
    acc_gap: Estimate                 # clean train acc − test acc (fraction)
    loss_gap: Estimate                # val loss − clean train loss at the best epoch
    noise: Estimate                   # per run: mean over epochs of the std of minibatch losses
    epochs_to_best: Estimate
    epoch_time: Estimate              # seconds per epoch of the run's training group
    group_size: int
    baseline: str | None = None       # the arm this one is compared with (None for baselines)
    is_baseline: bool = False
    acc_vs_base: PairedTest | None = None
    loss_vs_base: PairedTest | None = None
    p_holm: float | None = None
    noise_ratio: float | None = None  # arm / baseline, same seeds, over the epochs both trained
    base_gap: Estimate | None = None
    per_seed: dict = field(default_factory=dict)   # seed -> finals row
    noise_curve: dict = field(default_factory=dict)  # seed -> [train_noise per epoch]

    @property
    def significant(self) -> bool | None:
        return None if self.p_holm is None else self.p_holm < ALPHA


@dataclass
class Analysis:
    title: str
    setup: dict
    arms: list[ArmStats]
    baseline: str | None              # base arm used as baseline (None: no baseline arm)
    excluded: list[dict]              # failed / unfinished runs
    notes: list[str]

    def arm(self, name: str) -> ArmStats:
        return next(a for a in self.arms if a.arm == name)


def is_off(arm_cfg: dict) -> bool:
    """True when an arm config turns every regularizer off (the baseline).

    Examples:
        >>> is_off({"p": 0.0, "augment": [], "max_norm": None}), is_off({"p": 0.3})
        (True, False)
    """
    return not any(v for v in arm_cfg.values())


def arm_settings(arm_cfg: dict) -> str:
    """The arm's non-default settings in one line.

    Examples:
        >>> arm_settings({"p": 0.3, "l2": 0.0, "augment": ["shift"], "early_stopping": {"patience": 5}})
        'p=0.3, augment=shift, early_stopping(patience=5)'
        >>> arm_settings({"p": 0.0})
        'no regularization'
    """
    parts = []
    for k, v in arm_cfg.items():
        if not v:
            continue
        if isinstance(v, dict):
            inner = ", ".join(f"{a}={b}" for a, b in v.items() if b is not None and a in ("patience", "monitor"))
            parts.append(f"{k}({inner})")
        elif isinstance(v, list):
            parts.append(f"{k}={'+'.join(map(str, v))}")
        else:
            parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts) or "no regularization"


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _noise_ratio(arm: dict, base: dict) -> float | None:
    """Training-noise ratio arm/baseline over the seeds and epochs both trained, so an arm that stops
    early is not compared on epochs the baseline trained and it did not (noise falls as loss falls).

    Examples:
        >>> _noise_ratio({0: [2.0, 1.0]}, {0: [1.0, 0.5, 0.1]})
        2.0
    """
    num, den = [], []
    for s in sorted(set(arm) & set(base)):
        k = min(len(arm[s]), len(base[s]))
        num.append(_mean(arm[s][:k]))
        den.append(_mean(base[s][:k]))
    if not num or None in num or None in den:
        return None
    return ratio(sum(num), sum(den))


def _find_baseline(runs: list[dict]) -> str | None:
    bases = list(dict.fromkeys(r["base_arm"] for r in runs))
    if "baseline" in bases:
        return "baseline"
    for b in bases:
        if all(is_off(r["config"].get("arm", {})) for r in runs if r["base_arm"] == b):
            return b
    return None


def _setup(res, groups: dict) -> dict:
    spec = res.spec
    versions = [r["versions"] for r in res.runs if r.get("versions")]
    started = [r["started_at"] for r in res.runs if r.get("started_at")]
    finished = [r["finished_at"] for r in res.runs if r.get("finished_at")]
    return {
        "name": spec.get("name", "study"), "folder": str(res.study_dir),
        "dataset": spec.get("dataset", {}), "model": spec.get("model", {}), "optimizer": spec.get("optimizer", {}),
        "epochs": spec.get("epochs"), "batch_size": spec.get("batch_size"), "seeds": spec.get("seeds"),
        "selection": spec.get("selection"), "sweep": spec.get("sweep", []),
        "versions": versions[0] if versions else {},
        "threads": sorted({r["threads"] for r in res.runs if r.get("threads")}),
        "executor": sorted({r["executor"] for r in res.runs if r.get("executor")}),
        "groups": len(groups), "runs": len(res.runs),
        "wall_seconds": (max(finished) - min(started)) if started and finished else None,
    }


def analyse(res) -> Analysis:
    """Statistics per arm of a study's :class:`Results` (see the module docstring)."""
    finals = {f["run_id"]: f for f in res.finals}
    per_run_epochs: dict[int, list[dict]] = {}
    for e in res.epochs:
        per_run_epochs.setdefault(e["run_id"], []).append(e)
    groups: dict[str, int] = {}
    for r in res.runs:
        groups[r["group_key"]] = groups.get(r["group_key"], 0) + 1
    by_arm: dict[str, list[dict]] = {}
    for r in res.runs:
        by_arm.setdefault(r["arm"], []).append(r)

    arms, excluded = [], []
    for name, runs in by_arm.items():
        ok = [r for r in runs if r["status"] == "finished" and r["run_id"] in finals]
        bad = [dict(name=r["name"], arm=name, seed=r["seed"], status=r["status"],
                    reason=r["reason"] or ("not finished yet" if r["status"] != "failed" else "failed"))
               for r in runs if r not in ok]
        excluded += bad
        fin = {r["seed"]: finals[r["run_id"]] for r in ok}
        eps = {r["seed"]: per_run_epochs.get(r["run_id"], []) for r in ok}
        best = {s: next((e for e in eps[s] if e["epoch"] == f["best_epoch"]), {}) for s, f in fin.items()}
        col = (lambda key: [f[key] for f in fin.values()])
        acc_gap = [f["train_acc_at_best"] - f["test_acc"] for f in fin.values()
                   if f["train_acc_at_best"] is not None and f["test_acc"] is not None]
        loss_gap = [best[s].get("val_loss") - f["train_loss_at_best"] for s, f in fin.items()
                    if best[s].get("val_loss") is not None and f["train_loss_at_best"] is not None]
        first = runs[0]
        arms.append(ArmStats(
            arm=name, base_arm=first["base_arm"], sweep=first["sweep"], n_train=first["config"].get("n_train"),
            config=first["config"].get("arm", {}), seeds=sorted(fin), runs=len(runs), failed=bad,
            test_acc=mean_ci(col("test_acc")).clipped(0.0, 1.0), test_loss=mean_ci(col("test_loss")),
            train_acc=mean_ci(col("train_acc_at_best")).clipped(0.0, 1.0),
            acc_gap=mean_ci(acc_gap), loss_gap=mean_ci(loss_gap),
            noise=mean_ci([_mean(e["train_noise"] for e in eps[s]) for s in fin]),
            epochs_to_best=mean_ci(col("best_epoch")),
            epoch_time=mean_ci([_mean(e["epoch_time"] for e in eps[s]) for s in fin]),
            group_size=groups[first["group_key"]], per_seed=fin,
            noise_curve={s: [e["train_noise"] for e in eps[s]] for s in fin}))

    base_name = _find_baseline(res.runs)
    notes = []
    if base_name is None:
        notes.append("No baseline arm (an arm named 'baseline' or one with every regularizer off): "
                     "arms are described but not compared.")
    for a in arms:
        if a.base_arm != base_name:
            continue
        same = [b for b in arms if b.base_arm == base_name and b.n_train == a.n_train]
        a.is_baseline = a is (next((b for b in same if is_off(b.config)), same[0]))
    for a in arms:
        if base_name is None or a.is_baseline:
            continue
        base = next((b for b in arms if b.is_baseline and b.n_train == a.n_train), None)
        if base is None:
            continue
        a.baseline, a.base_gap = base.arm, base.acc_gap
        for metric, attr in (("test_acc", "acc_vs_base"), ("test_loss", "loss_vs_base")):
            seeds, x, y = pair_by_seed({s: f[metric] for s, f in a.per_seed.items()},
                                       {s: f[metric] for s, f in base.per_seed.items()})
            setattr(a, attr, paired_test(x, y, seeds=seeds))
        a.noise_ratio = _noise_ratio(a.noise_curve, base.noise_curve)
    compared = [a for a in arms if a.acc_vs_base is not None]
    for a, p in zip(compared, holm([a.acc_vs_base.p for a in compared])):
        a.p_holm = p
    if excluded:
        notes.append(f"{len(excluded)} run(s) excluded from every statistic (failed or unfinished); "
                     "see 'Excluded runs'.")
    if any(a.test_acc.n == 1 for a in arms):
        notes.append("Arms with one finished seed have no confidence interval and no p-value.")
    return Analysis(res.spec.get("name", "study"), _setup(res, groups), arms, base_name, excluded, notes)


def _num(v, k: float = 1.0, nd: int = 6):
    return None if v is None or not math.isfinite(v) else round(v * k, nd)


def table_rows(an: Analysis) -> list[dict]:
    """One flat dict per arm (the rows of ``results.csv``; ``results.json`` holds the same)."""
    rows = []
    for a in an.arms:
        d = a.acc_vs_base.diff if a.acc_vs_base else None
        row = {"arm": a.arm, "base_arm": a.base_arm, "settings": arm_settings(a.config),
               "sweep": ";".join(f"{k}={v}" for k, v in a.sweep.items()), "n_train": a.n_train,
               "runs": a.runs, "finished": len(a.seeds), "excluded": len(a.failed),
               "is_baseline": a.is_baseline, "baseline": a.baseline}
        for key, est, k in (("test_acc_pct", a.test_acc, 100), ("test_loss", a.test_loss, 1),
                            ("gap_acc_pts", a.acc_gap, 100), ("gap_loss", a.loss_gap, 1)):
            row.update({f"{key}_mean": _num(est.mean, k), f"{key}_low": _num(est.low, k),
                        f"{key}_high": _num(est.high, k)})
        row.update({
            "diff_acc_pts_mean": _num(d.mean, 100) if d else None,
            "diff_acc_pts_low": _num(d.low, 100) if d else None,
            "diff_acc_pts_high": _num(d.high, 100) if d else None,
            "diff_test_loss_mean": _num(a.loss_vs_base.diff.mean) if a.loss_vs_base else None,
            "p": _num(a.acc_vs_base.p, nd=8) if a.acc_vs_base else None,
            "p_holm": _num(a.p_holm, nd=8), "significant": a.significant,
            "train_noise_mean": _num(a.noise.mean), "noise_ratio": _num(a.noise_ratio, nd=4),
            "epochs_to_best_mean": _num(a.epochs_to_best.mean, nd=2),
            "epoch_time_s_mean": _num(a.epoch_time.mean, nd=4), "group_size": a.group_size,
        })
        rows.append(row)
    return rows
