"""Early stopping on scripted metric sequences (Keras 3 parity) and best-weight restoring."""
from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from regulab.regularizers import EarlyStopping, EarlyStoppingRule, EarlyStoppingState


def run(values, **kw):
    es = EarlyStopping(**kw)
    for epoch, v in enumerate(values):
        if es.on_epoch_end(epoch, {kw.get("monitor", "val_loss"): v}):
            break
    return es


class KerasReference:
    """A literal transcription of Keras 3 ``EarlyStopping.on_epoch_end`` (numbers only)."""

    def __init__(self, mode, min_delta, patience, baseline, start_from_epoch):
        self.less = mode == "min"
        self.min_delta = -abs(min_delta) if self.less else abs(min_delta)
        self.patience, self.baseline, self.start = patience, baseline, start_from_epoch
        self.wait, self.stopped_epoch, self.best, self.best_epoch, self.stop = 0, 0, None, 0, False

    def _imp(self, v, ref):
        if ref is None:
            return True
        return (v - self.min_delta < ref) if self.less else (v - self.min_delta > ref)

    def on_epoch_end(self, epoch, current):
        if epoch < self.start:
            return
        self.wait += 1
        if self._imp(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.baseline is None or self._imp(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch, self.stop = epoch, True


def test_patience():
    es = run([1.0, 0.9, 0.95, 0.96, 0.97, 0.8], patience=2)
    assert (es.stop_training_, es.stopped_epoch_, es.best_epoch_, es.best_value_) == (True, 3, 1, 0.9)
    es = run([1.0, 2.0], patience=0)
    assert es.stopped_epoch_ == 1
    es = run([1.0, 0.9, 0.8, 0.7], patience=1)
    assert not es.stop_training_ and es.best_epoch_ == 3 and es.stopped_epoch_ == 0


def test_min_delta():
    values = [1.0, 0.95, 0.92, 0.91, 0.905]
    es = run(values, patience=2, min_delta=0.1)
    assert (es.stopped_epoch_, es.best_epoch_, es.best_value_) == (2, 0, 1.0)
    assert not run(values, patience=2).stop_training_


def test_baseline():
    below = [0.5, 0.4, 0.4]
    with_baseline = run(below, monitor="val_accuracy", patience=2, baseline=0.9)
    without = run(below, monitor="val_accuracy", patience=2)
    assert with_baseline.stopped_epoch_ == 1 and without.stopped_epoch_ == 2
    above = run([0.95, 0.94, 0.96, 0.95], monitor="val_accuracy", patience=2, baseline=0.9)
    assert not above.stop_training_ and above.wait_ == 1 and above.best_epoch_ == 2


def test_start_from_epoch():
    values = [5.0, 4.0, 3.0, 10.0, 10.0, 10.0]
    es = run(values, patience=1, start_from_epoch=3)
    assert (es.stopped_epoch_, es.best_epoch_, es.best_value_) == (4, 3, 10.0)
    es = run(values, patience=1)
    assert (es.stopped_epoch_, es.best_epoch_) == (3, 2)
    es = EarlyStopping(start_from_epoch=2)
    es.on_epoch_end(0, 1.0)
    assert es.best_value_ is None


def test_mode_and_auto():
    values = [0.5, 0.6, 0.55, 0.5]
    assert run(values, mode="max", patience=1).best_epoch_ == 1
    assert run(values, mode="min", patience=1).stopped_epoch_ == 1
    assert EarlyStopping("val_accuracy").rule.mode == "max"
    assert EarlyStopping("val_loss").rule.mode == "min"
    assert EarlyStopping("auc", mode="min").rule.mode == "min"
    assert run(values, monitor="val_accuracy", patience=1).stopped_epoch_ == 2


def test_restore_best_weights_when_stopped_and_when_training_ends():
    for values, epochs in (([3.0, 1.0, 2.0, 2.5, 2.7], 5), ([3.0, 1.0, 2.0], 3)):  # stops / runs out
        model = nn.Linear(1, 1)
        es = EarlyStopping(patience=2, restore_best_weights=True)
        es.on_train_begin(model)
        for epoch in range(epochs):
            with torch.no_grad():
                model.weight.fill_(float(epoch))  # "training": weights record the epoch
            if es.on_epoch_end(epoch, {"val_loss": values[epoch]}):
                break
        es.on_train_end()
        assert model.weight.item() == 1.0 and es.best_epoch_ == 1
    model = nn.Linear(1, 1)
    es = EarlyStopping(patience=1)  # restore off: weights stay as trained
    es.on_train_begin(model)
    with torch.no_grad():
        model.weight.fill_(7.0)
    es.on_epoch_end(0, 1.0)
    es.on_train_end()
    assert model.weight.item() == 7.0


def test_never_raises_to_stop_and_missing_monitor_is_a_clear_error():
    es = run([1.0, 2.0, 3.0, 4.0], patience=0)
    es.on_epoch_end(4, 5.0)  # calls after the stop are harmless: the state is frozen
    assert es.stopped_epoch_ == 1
    with pytest.raises(ValueError, match="EarlyStopping: monitor must be a key of the logs, got 'val_los'; did you mean 'val_loss'"):
        EarlyStopping("val_los").on_epoch_end(0, {"val_loss": 1.0})


def test_matches_keras_reference_on_random_sequences_and_vectorised_state():
    rng = random.Random(0)
    configs = list(itertools.product(["min", "max"], [0.0, 0.05], [0, 1, 3], [None, 0.5], [0, 2]))
    for mode, min_delta, patience, baseline, start in configs:
        seqs = [[round(rng.random(), 2) for _ in range(12)] for _ in range(6)]
        rule = EarlyStoppingRule(mode, min_delta, patience, baseline, start)
        state = EarlyStoppingState.initial(members=len(seqs))
        refs = [KerasReference(mode, min_delta, patience, baseline, start) for _ in seqs]
        for epoch in range(12):
            state, _ = rule.update(state, epoch, torch.tensor([s[epoch] for s in seqs], dtype=torch.float64))
            for ref, s in zip(refs, seqs):
                if not ref.stop:
                    ref.on_epoch_end(epoch, s[epoch])
        assert state.stop.tolist() == [r.stop for r in refs]
        assert state.stopped_epoch.tolist() == [r.stopped_epoch for r in refs]
        assert state.best_epoch.tolist() == [r.best_epoch for r in refs]


def test_improved_mask_drives_per_member_snapshots():
    rule = EarlyStoppingRule("min", patience=5)
    state = EarlyStoppingState.initial(3)
    state, improved = rule.update(state, 0, torch.tensor([1.0, 1.0, 1.0]))
    assert improved.tolist() == [True, True, True]
    state, improved = rule.update(state, 1, torch.tensor([0.5, 2.0, 1.0]))
    assert improved.tolist() == [True, False, False] and state.wait.tolist() == [0, 1, 1]
