"""Pure analysis functions: variance shift, co-adaptation, sparsity, MC dropout, calibration.

Plotting helpers import matplotlib lazily and return ``Figure`` objects.
"""
from __future__ import annotations

from .calibration import calibration_bins, expected_calibration_error, plot_reliability
from .coadaptation import ablation_sensitivity, coadaptation, compare_models, plot_coadaptation
from .mc import (MCCurve, MCReport, ensemble_curve, error_curve, first_T_within_sd, mc_report, mc_sample_probs,
                 mutual_information,
                 plot_mc, predict_probs, predictive_entropy)
from .sparsity import hidden_activations, plot_first_layer_weights, plot_sparsity, sparsity_stats
from .variance_shift import VarianceShift, closed_form_ratio, measured_ratio, variance_shift

__all__ = [
    "VarianceShift", "closed_form_ratio", "measured_ratio", "variance_shift",
    "ablation_sensitivity", "coadaptation", "compare_models", "plot_coadaptation",
    "hidden_activations", "sparsity_stats", "plot_sparsity", "plot_first_layer_weights",
    "MCCurve", "predict_probs", "mc_sample_probs", "error_curve", "ensemble_curve", "predictive_entropy",
    "mutual_information", "first_T_within_sd", "plot_mc", "MCReport", "mc_report",
    "calibration_bins", "expected_calibration_error", "plot_reliability",
]
