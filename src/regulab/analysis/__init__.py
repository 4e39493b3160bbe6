"""Pure analysis functions: variance shift, co-adaptation, sparsity, MC dropout, calibration.

Plotting helpers import matplotlib lazily and return ``Figure`` objects.
"""
from __future__ import annotations

from .variance_shift import VarianceShift, closed_form_ratio, measured_ratio, variance_shift

__all__ = ["VarianceShift", "closed_form_ratio", "measured_ratio", "variance_shift"]
