"""``regulab doctor``: find train/eval mistakes and risky dropout placements in a model.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from regulab.doctor import diagnose
    >>> diagnose(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)), torch.randn(8, 4))[0].code
    'dropout-on-logits'
"""
from __future__ import annotations

from .diagnose import DoctorError, diagnose
from .findings import Finding, findings_to_json, format_findings, has_errors

__all__ = ["diagnose", "Finding", "DoctorError", "format_findings", "findings_to_json", "has_errors"]
