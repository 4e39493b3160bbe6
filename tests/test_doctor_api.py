"""diagnose(): contract details (no side effects, inputs, failures) and the Finding type."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regulab.doctor import DoctorError, Finding, diagnose, findings_to_json, format_findings, has_errors


def _bn_net():
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.Linear(16, 2))


def test_model_and_rng_untouched():
    net, x = _bn_net().train(), torch.randn(64, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    diagnose(net, x)
    assert torch.equal(torch.rand(3), expected)  # global RNG restored
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_deterministic_results():
    x = torch.randn(64, 8)
    a = diagnose(_bn_net(), x)
    torch.manual_seed(0)
    net = _bn_net()
    torch.manual_seed(0)
    assert [f.to_dict() for f in diagnose(net, x)] == [f.to_dict() for f in diagnose(net, x)]
    assert a[0].code == "dropout-before-batchnorm"


def test_tuple_input_and_kwargs_free_forward():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, a, b):
            return self.fc(F.dropout(a + b, 0.5, training=True))

    (f,) = diagnose(Two(), (torch.randn(8, 4), torch.randn(8, 4)))
    assert f.code == "functional-dropout-training"


def test_forward_failure_is_one_line_doctor_error():
    with pytest.raises(DoctorError, match=r"forward must accept the example input of shape \(3, 5\), got RuntimeError"):
        diagnose(nn.Linear(4, 2), torch.randn(3, 5))


def test_not_a_module():
    with pytest.raises(DoctorError, match="model must be a torch.nn.Module, got int"):
        diagnose(3, torch.randn(2))


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="diagnose: seed must be an integer >= 0"):
        diagnose(nn.Linear(2, 2), torch.randn(2, 2), seed=bad)


def test_dropout_never_active_after_train():
    class Stuck(nn.Sequential):
        def train(self, mode=True):
            self.training = mode
            for m in self:
                m.train(False)  # bug: children always eval
            return self

    findings = diagnose(nn.Sequential(nn.Linear(4, 4), Stuck(nn.ReLU(), nn.Dropout(0.3)), nn.Linear(4, 2)),
                        torch.randn(16, 4))
    assert [f.code for f in findings] == ["dropout-never-active"] and findings[0].where == "1"


def test_forward_warning_reported_as_info():
    findings = diagnose(nn.Sequential(nn.Linear(4, 4), nn.Dropout2d(0.2), nn.Linear(4, 2)), torch.randn(16, 4))
    assert any(f.code == "forward-warning" and f.severity == "info" for f in findings)


def test_track_running_stats_false_is_info():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 2))
    assert [(f.code, f.severity) for f in diagnose(net, torch.randn(16, 4))] == [("batchnorm-batch-stats", "info")]


def test_finding_formatting_and_json():
    fs = [Finding("warning", "w", "a", "m1", "f1"), Finding("error", "e", "", "m2", "f2", {"x": 1.0})]
    text = format_findings(fs)
    assert text.splitlines()[0].startswith("error [e] <model>: m2")
    assert text.splitlines()[-1] == "2 findings: 1 error, 1 warning, 0 info"
    doc = json.loads(findings_to_json(fs))
    assert doc["errors"] == 1 and doc["findings"][0]["details"] == {"x": 1.0}
    assert has_errors(fs) and not has_errors(fs[:1])
    with pytest.raises(ValueError, match="Finding: severity must be one of 'error', 'warning', 'info', got 'bad'"):
        Finding("bad", "c", "", "m", "f")
