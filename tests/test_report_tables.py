"""Report statistics and verdicts on synthetic study folders written through the store's own API.

``make_study`` is shared by the other report tests (imported from this module).
"""
import csv
import json
import re

import pytest
from scipy import stats

from regulab.analysis.stats import holm
from regulab.report import write_report
from regulab.report.tables import analyse, table_rows
from regulab.report.verdicts import verdicts
from regulab.study.store import Store, open_results

OFF = {"p": 0.0, "l2": 0.0, "max_norm": None, "augment": [], "early_stopping": None}
VERSIONS = {"regulab": "0.1.0", "torch": "2.x", "numpy": "2.x", "python": "3.11", "machine": "x86_64"}


def arm(name, acc, *, base=None, cfg=None, sweep=None, n_train=None, train_acc=None, noise=0.1, fail=()):
    """One arm: ``acc`` is the test accuracy per seed (its length sets the seeds)."""
    return dict(arm=name, base=base or name, cfg={**OFF, **(cfg or {})}, sweep=sweep or {}, n_train=n_train,
                acc=acc, train_acc=train_acc or [min(1.0, a + 0.3) for a in acc], noise=noise, fail=set(fail))


def make_study(d, arms, epochs=4, spec_extra=None):
    """Write a finished study folder whose numbers are exactly the ones given."""
    spec = {"name": "synthetic study", "seeds": max(len(a["acc"]) for a in arms), "epochs": epochs,
            "batch_size": 10, "selection": "val_accuracy", "sweep": [],
            "dataset": {"name": "digits", "n_train": None, "val_fraction": 0.1, "seed": 0, "standardize": True},
            "model": {"kind": "mlp", "widths": [8], "activation": "relu", "residual": True, "batchnorm": False},
            "optimizer": {"name": "adam", "lr": 0.01, "schedule": "constant"}, **(spec_extra or {})}
    runs, rows, finals, statuses = [], [], [], {}
    for a in arms:
        for seed, acc in enumerate(a["acc"]):
            rid = len(runs) + 1
            runs.append(dict(run_id=rid, name=f"{a['arm']}/seed={seed}", arm=a["arm"], base_arm=a["base"], seed=seed,
                             group_key=f"g{a['n_train']}", sweep=a["sweep"],
                             config={"arm": a["cfg"], "seed": seed, "n_train": a["n_train"], "sweep": a["sweep"]}))
            tr = a["train_acc"][seed]
            for t in range(1, epochs + 1):
                f = t / epochs
                rows.append(dict(run_id=rid, epoch=t, train_loss=2.0 - f, train_noise=a["noise"] * (1 + 0.01 * seed),
                                 clean_train_loss=2.0 - 1.5 * f * tr, clean_train_acc=f * tr,
                                 val_loss=2.0 - 1.5 * f * acc, val_acc=f * acc, lr=0.01, epoch_time=0.5))
            if seed in a["fail"]:
                statuses[rid] = ("failed", "diverged: non-finite loss at epoch 2 (train loss nan)")
                continue
            statuses[rid] = ("finished", None)
            finals.append(dict(run_id=rid, best_epoch=epochs, stopped_epoch=epochs, test_loss=2.0 - 1.5 * acc,
                               test_acc=acc, best_val_loss=2.0 - 1.5 * acc, best_val_acc=acc,
                               train_loss_at_best=2.0 - 1.5 * tr, train_acc_at_best=tr, weights=None))
    with Store(d) as st:
        st.init_spec(spec)
        st.add_runs(runs)
        st.mark_started([r["run_id"] for r in runs], versions=VERSIONS, threads=1, executor="local")
        st.record_epochs(rows)
        st.finish_runs(finals, statuses, wall_seconds=3.0)
    return d


STANDARD = [
    arm("baseline", [0.60, 0.62, 0.61], train_acc=[0.91, 0.93, 0.92], noise=0.1),
    arm("dropout p=0.3", [0.63, 0.64, 0.632], cfg={"p": 0.3}, train_acc=[0.80, 0.81, 0.80], noise=0.18),
    arm("l2", [0.61, 0.60, 0.625], cfg={"l2": 1e-4}),
    arm("<script>alert(1)</script>", [0.50, 0.53, 0.49], cfg={"l2": 0.1}, fail=[2]),
]


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("std"), STANDARD)


def test_paired_statistics_match_scipy_and_holm(standard):
    an = analyse(open_results(standard))
    assert an.baseline == "baseline" and an.arm("baseline").is_baseline
    base = STANDARD[0]["acc"]
    raw = []
    for spec_arm in STANDARD[1:]:
        a = an.arm(spec_arm["arm"])
        seeds = [s for s in range(3) if s not in spec_arm["fail"]]
        ref = stats.ttest_rel([spec_arm["acc"][s] for s in seeds], [base[s] for s in seeds])
        assert a.acc_vs_base.p == pytest.approx(ref.pvalue, rel=1e-9)
        assert a.acc_vs_base.seeds == tuple(seeds)
        raw.append(ref.pvalue)
    assert [an.arm(s["arm"]).p_holm for s in STANDARD[1:]] == pytest.approx(holm(raw))
    d = an.arm("dropout p=0.3")
    assert d.acc_vs_base.diff.mean == pytest.approx(0.024)
    assert d.noise_ratio == pytest.approx(1.8, rel=1e-6)
    assert d.acc_gap.mean == pytest.approx((0.80 + 0.81 + 0.80 - 0.63 - 0.64 - 0.632) / 3)
    assert d.test_acc.mean == pytest.approx(0.634)
    assert d.epochs_to_best.mean == 4 and d.epoch_time.mean == 0.5


def test_verdict_sentences(standard):
    vs = {v.arm: v for v in verdicts(analyse(open_results(standard)))}
    good = vs["dropout p=0.3"]
    assert good.tone == "better"
    assert re.fullmatch(r"dropout p=0\.3: \+2\.4 points test accuracy \(95% CI \+\d\.\d…\+\d\.\d, p=0\.\d+ vs "
                        r"baseline\); training loss 1\.8x noisier; gap 31 → 17 points", good.text), good.text
    assert vs["l2"].tone == "same" and "no significant difference in test accuracy" in vs["l2"].text
    assert vs["baseline"].text.startswith("baseline: 61.0 % test accuracy (95% CI")
    bad = vs["<script>alert(1)</script>"]
    assert "1 of 3 runs excluded (diverged: non-finite loss at epoch 2" in bad.text


def test_failed_runs_are_excluded_and_listed(standard):
    an = analyse(open_results(standard))
    a = an.arm("<script>alert(1)</script>")
    assert a.seeds == [0, 1] and a.test_acc.n == 2 and len(a.failed) == 1
    assert [e["name"] for e in an.excluded] == ["<script>alert(1)</script>/seed=2"]
    assert any("excluded" in n for n in an.notes)


def test_one_seed_has_no_interval(tmp_path):
    d = make_study(tmp_path / "s", [arm("baseline", [0.6]), arm("dropout", [0.65], cfg={"p": 0.5})])
    an = analyse(open_results(d))
    v = {x.arm: x.text for x in verdicts(an)}
    assert v["dropout"] == ("dropout: +5.0 points test accuracy vs baseline (1 seed: no confidence interval or "
                            "p-value); training loss about as noisy; gap 30 → 30 points")
    assert "(1 seed: no confidence interval)" in v["baseline"]
    row = table_rows(an)[1]
    assert row["p"] is None and row["diff_acc_pts_low"] is None and row["diff_acc_pts_mean"] == pytest.approx(5.0)
    assert any("one finished seed" in n for n in an.notes)


def test_missing_baseline(tmp_path):
    d = make_study(tmp_path / "s", [arm("dropout", [0.6, 0.62], cfg={"p": 0.5}), arm("l2", [0.6, 0.6], cfg={"l2": 1})])
    an = analyse(open_results(d))
    assert an.baseline is None and all(a.acc_vs_base is None for a in an.arms)
    assert any("No baseline arm" in n for n in an.notes)
    assert verdicts(an)[0].text.endswith("no baseline to compare with")


def test_baseline_found_by_settings_and_per_n_train(tmp_path):
    arms = [arm(f"plain n_train={n}", [0.5 + k, 0.52 + k], base="plain", sweep={"n_train": n}, n_train=n)
            for n, k in ((100, 0.0), (400, 0.1))]
    arms += [arm(f"dropout p={p:g} n_train={n}", [0.55 + k, 0.56 + k], base="dropout", cfg={"p": p},
                 sweep={"p": p, "n_train": n}, n_train=n) for p in (0.1, 0.5) for n, k in ((100, 0.0), (400, 0.1))]
    an = analyse(open_results(make_study(tmp_path / "s", arms)))
    assert an.baseline == "plain"
    assert an.arm("dropout p=0.5 n_train=400").baseline == "plain n_train=400"
    assert an.arm("dropout p=0.1 n_train=100").acc_vs_base.diff.mean == pytest.approx(0.045)
    from regulab.report.plots import palette, sweep_plots

    names = [a.arm for a in an.arms] + ["dropout", "plain", "dropout p=0.1", "dropout p=0.5"]
    figs = dict(sweep_plots(an, palette(names, ["plain"])))
    assert set(figs) == {"n_train", "p"}
    ax = figs["p"].axes[0]
    assert ax.get_xlabel().startswith("dropout p") and ax.get_ylabel() == "test accuracy (%)"
    assert {ln.get_label() for ln in ax.get_lines()} == {"dropout n_train=100", "dropout n_train=400",
                                                         "plain n_train=100 (mean)", "plain n_train=400 (mean)"}
    assert figs["n_train"].axes[0].get_xscale() == "log"


def test_csv_and_json_agree(standard):
    path = write_report(standard)
    assert path == standard / "report.html" and path.is_file()
    with open(standard / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((standard / "results.json").read_text())
    assert [r["arm"] for r in rows] == [a["arm"] for a in doc["arms"]] == [a["arm"] for a in STANDARD]
    for r, j in zip(rows, doc["arms"]):
        for k, v in j.items():
            assert r[k] == ("" if v is None else str(v)), k
    assert doc["baseline"] == "baseline" and len(doc["excluded_runs"]) == 1
    assert len(doc["runs"]) == 11 and doc["study"]["versions"]["torch"] == "2.x"
    assert not list(standard.glob(".*.tmp"))  # atomic writes leave no temp files
