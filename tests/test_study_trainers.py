"""Stacked training agrees with separate per-run training."""
from __future__ import annotations

import statistics

import pytest
import torch

from regulab.study.api import load_data
from regulab.study.plan import Group, expand
from regulab.study.spec import parse_spec
from regulab.study.trainer_run import RunTrainer
from regulab.study.trainer_stacked import StackedTrainer

DET_ARMS = {"baseline": {}, "l2": {"l2": 1e-3}, "l1": {"l1": 1e-4}, "wd": {"weight_decay": 0.1},
            "maxnorm": {"max_norm": 1.0}, "ls": {"label_smoothing": 0.2},
            "es": {"early_stopping": {"patience": 0, "min_delta": 5.0}}}


def _spec(arms, **kw):
    return parse_spec({"epochs": 3, "seeds": 2, "batch_size": 64,
                       "dataset": {"name": "digits", "n_train": 300},
                       "model": {"kind": "mlp", "widths": [32, 32]}, "arms": arms, **kw})


def _stacked_vs_runs(spec):
    runs = expand(spec)
    data = load_data(spec, runs[0].n_train)
    rows_s = []
    st = StackedTrainer(Group("g", runs, True), spec, data)
    fin_s = st.run(on_commit=lambda r, s: rows_s.extend(r))
    rows_r, fin_r = [], []
    for r in runs:
        rt = RunTrainer(Group("g", [r], False), spec, data)
        fin_r += rt.run(on_commit=lambda rr, s: rows_r.extend(rr))
    key = lambda row: (row["run_id"], row["epoch"])  # noqa: E731
    return sorted(rows_s, key=key), sorted(rows_r, key=key), fin_s, fin_r


@pytest.mark.parametrize("opt", ["adam", "sgd", "momentum", "nesterov"])
def test_deterministic_parts_match_per_run_training(opt):
    spec = _spec(DET_ARMS, optimizer={"name": opt, "lr": 0.01 if opt == "adam" else 0.05, "schedule": "cosine"})
    rows_s, rows_r, fin_s, fin_r = _stacked_vs_runs(spec)
    assert [(r["run_id"], r["epoch"]) for r in rows_s] == [(r["run_id"], r["epoch"]) for r in rows_r]
    for a, b in zip(rows_s, rows_r):
        for k in ("train_loss", "train_noise", "clean_train_loss", "val_loss", "clean_train_acc", "val_acc", "lr"):
            assert a[k] == pytest.approx(b[k], rel=2e-4, abs=2e-5), (a["run_id"], a["epoch"], k)
    for a, b in zip(fin_s, fin_r):
        assert a["best_epoch"] == b["best_epoch"] and a["stopped_epoch"] == b["stopped_epoch"]
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=2e-3)
    es = [f for f, r in zip(fin_s, expand(spec)) if r.arm == "es"]
    assert all(f["stopped_epoch"] < spec.epochs for f in es)  # early stopping froze these members


def test_stochastic_parts_agree_statistically():
    arms = {"drop": {"p": 0.3, "input_p": 0.1, "input_noise": 0.2, "augment": ["flip"], "mixup": 0.2}}
    spec = _spec(arms, seeds=6, epochs=8, batch_size=50)
    _, _, fin_s, fin_r = _stacked_vs_runs(spec)
    acc_s = [f["test_acc"] for f in fin_s]
    acc_r = [f["test_acc"] for f in fin_r]
    # 6 seeds each; seed-to-seed sd is ~1-2 points here; the means must agree within ~3 sd/sqrt(6)*sqrt(2)
    assert abs(statistics.fmean(acc_s) - statistics.fmean(acc_r)) < 0.04, (acc_s, acc_r)
    assert statistics.fmean(acc_s) > 0.8


def test_diverging_member_fails_alone():
    spec = _spec({"ok": {}, "boom": {"l2": 1e38}}, seeds=1, epochs=2)
    runs = expand(spec)
    rows, statuses = [], {}
    st = StackedTrainer(Group("g", runs, True), spec, load_data(spec, 300))
    fin = {f["run_id"]: f for f in st.run(on_commit=lambda r, s: (rows.extend(r), statuses.update(s)))}
    assert fin[1]["failed"] is None and fin[1]["test_acc"] > 0.5
    assert fin[2]["failed"].startswith("diverged") and statuses[2][0] == "failed"
    assert max(r["epoch"] for r in rows if r["run_id"] == 1) == 2


ES_ARMS = {"min": {"early_stopping": {"patience": 1, "min_delta": 0.05}},
           "acc": {"early_stopping": {"monitor": "val_accuracy", "patience": 2}},
           "base": {"early_stopping": {"patience": 1, "baseline": 0.6, "start_from_epoch": 1}},
           "max": {"early_stopping": {"mode": "max", "patience": 2}}}


def test_resume_at_every_epoch_continues_early_stopping_exactly():
    import json

    spec = _spec({"baseline": {}, **ES_ARMS}, epochs=8, checkpoint_every=0.0)
    runs = expand(spec)
    data = load_data(spec, runs[0].n_train)
    rows, states = [], []

    def commit(r, s, trainer):
        rows.extend(r)
        tensors, info = trainer.state()
        states.append(({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(info))))

    ref = StackedTrainer(Group("g", runs, True), spec, data)
    fin = ref.run(on_commit=lambda r, s: commit(r, s, ref))
    stopped = sorted(f["stopped_epoch"] for f in fin)
    assert stopped[0] < spec.epochs and len(set(stopped)) > 3  # early stopping acted, at different epochs
    for tensors, info in states[:-1]:
        st = StackedTrainer(Group("g", runs, True), spec, data)
        st.load_state(tensors, info)
        more = []
        assert st.run(on_commit=lambda r, s: more.extend(r)) == fin
        assert [r | {"epoch_time": 0} for r in more] == [r | {"epoch_time": 0} for r in rows if r["epoch"] > info["epoch"]]


def test_batchnorm_members_keep_their_best_running_stats_and_resume_exactly():
    """BatchNorm: test metrics and saved weights use the running statistics of the best epoch, as a
    per-run model's state_dict does; a resumed group continues with the statistics it had."""
    import json

    arms = {"baseline": {}, "es": {"early_stopping": {"patience": 2, "min_delta": 5.0}}}
    spec = _spec(arms, epochs=6, checkpoint_every=0.0, optimizer={"name": "sgd", "lr": 1.0},
                 model={"kind": "mlp", "widths": [32, 32], "batchnorm": True})
    runs = expand(spec)
    data = load_data(spec, runs[0].n_train)
    states = []

    def commit(trainer):
        tensors, info = trainer.state()
        states.append(({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(info))))

    st = StackedTrainer(Group("g", runs, True), spec, data)
    fin_s = st.run(on_commit=lambda r, s: commit(st))
    by_id = {r.run_id: m for m, r in enumerate(st.runs)}
    # best before last (noisy at this rate), and a member frozen early: best and live statistics differ
    assert any(f["best_epoch"] < f["stopped_epoch"] == spec.epochs for f in fin_s)
    assert any(f["stopped_epoch"] < spec.epochs for f in fin_s)
    for r in runs:
        rt = RunTrainer(Group("g", [r], False), spec, data)
        (fin_r,) = rt.run()
        (fin,) = [f for f in fin_s if f["run_id"] == r.run_id]
        assert fin["best_epoch"] == fin_r["best_epoch"] and fin["stopped_epoch"] == fin_r["stopped_epoch"]
        assert fin["test_loss"] == pytest.approx(fin_r["test_loss"], rel=1e-4)
        w_s, w_r = st.member_weights(by_id[r.run_id]), rt.member_weights()
        assert sorted(w_s) == sorted(w_r) and "norms.0.running_var" in w_s
        for k in w_r:
            assert w_s[k] == pytest.approx(w_r[k], rel=1e-3, abs=1e-4), k
    for tensors, info in states[:-1]:
        again = StackedTrainer(Group("g", runs, True), spec, data)
        again.load_state(tensors, info)
        assert again.run() == fin_s


@pytest.mark.parametrize("opt", ["adam", "momentum"])
def test_per_run_trainer_resumes_at_every_epoch_exactly(opt):
    """A per-run group (the trainer of user models) checkpoints like a stacked one: continuing
    from any commit point reproduces the uninterrupted run's rows, finals and best weights."""
    import json

    arms = {"drop": {"p": 0.3, "input_noise": 0.1, "augment": ["flip"]},
            "es": {"early_stopping": {"patience": 1, "min_delta": 0.05}}}
    spec = _spec(arms, seeds=1, epochs=5, checkpoint_every=0.0,
                 optimizer={"name": opt, "lr": 0.01 if opt == "adam" else 0.1},
                 model={"kind": "mlp", "widths": [32, 32], "batchnorm": True})
    data = load_data(spec, expand(spec)[0].n_train)
    for r in expand(spec):
        rows, states = [], []

        def commit(rr, trainer):
            rows.extend(rr)
            tensors, info = trainer.state()
            states.append(({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(info))))

        ref = RunTrainer(Group("g", [r], False), spec, data)
        fin = ref.run(on_commit=lambda rr, s: commit(rr, ref))
        assert len(states) == fin[0]["stopped_epoch"]  # one commit point per epoch, the last at the end
        for tensors, info in states[:-1]:
            rt = RunTrainer(Group("g", [r], False), spec, data)
            rt.load_state(tensors, info)
            more = []
            assert rt.run(on_commit=lambda rr, s: more.extend(rr)) == fin
            assert [x | {"epoch_time": 0} for x in more] == [x | {"epoch_time": 0} for x in rows if x["epoch"] > info["epoch"]]
            w, w_ref = rt.member_weights(), ref.member_weights()
            assert w.keys() == w_ref.keys() and all(torch.equal(w[k], w_ref[k]) for k in w)
