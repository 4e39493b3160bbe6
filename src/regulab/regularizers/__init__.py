"""Regularizers beside dropout: penalties, weight decay, constraints, label smoothing,
input noise, data augmentation, mixup/cutmix and early stopping.

Everything is a function of tensors whose strength may be a number or an ``(M,)`` tensor,
one value per member of a stacked study (weights ``(M, out, in)``, activations
``(M, B, ...)``), plus thin classes for ordinary models. :data:`REGULARIZERS` lists every
public name with its kind and its convention in one line.

Examples:
    >>> from regulab.regularizers import REGULARIZERS
    >>> REGULARIZERS["L2"].convention
    'l2·Σw² on weights only (Keras; no ½ factor, = torch weight_decay 2·l2 under SGD)'
"""
from __future__ import annotations

from typing import NamedTuple

from .augment import Augment, additive_noise, random_scale, random_shift, time_mask
from .augment_image import cutout, horizontal_flip, random_crop, random_translate
from .constraints import Constraint, MaxNorm, NonNeg, UnitNorm, max_norm_, non_neg_, unit_norm_
from .decay import DecoupledWeightDecay, coupled_decay_, decoupled_decay_
from .early_stopping import EarlyStopping, EarlyStoppingRule, EarlyStoppingState
from .mixing import MixResult, cutmix, mixup, sample_beta
from .noise import GaussianNoise, gaussian_noise
from .penalties import L1, L1L2, L2, l1_penalty, l1l2_penalty, l2_penalty, param_groups_weight_decay, select_parameters
from .smoothing import LabelSmoothingCrossEntropy, label_smoothing_cross_entropy

__all__ = [
    "REGULARIZERS", "RegularizerInfo", "AUGMENTATIONS",
    "L1", "L2", "L1L2", "l1_penalty", "l2_penalty", "l1l2_penalty", "select_parameters", "param_groups_weight_decay",
    "coupled_decay_", "decoupled_decay_", "DecoupledWeightDecay",
    "Constraint", "MaxNorm", "UnitNorm", "NonNeg", "max_norm_", "unit_norm_", "non_neg_",
    "label_smoothing_cross_entropy", "LabelSmoothingCrossEntropy",
    "gaussian_noise", "GaussianNoise",
    "random_shift", "random_scale", "additive_noise", "time_mask", "Augment",
    "random_crop", "horizontal_flip", "random_translate", "cutout",
    "mixup", "cutmix", "MixResult", "sample_beta",
    "EarlyStopping", "EarlyStoppingRule", "EarlyStoppingState",
]


class RegularizerInfo(NamedTuple):
    """One registry row: the object, its kind, its convention in one line."""

    obj: object
    kind: str
    convention: str


def _entries():
    yield L1, "penalty", "l1·Σ|w| on weights only (Keras L1)"
    yield L2, "penalty", "l2·Σw² on weights only (Keras; no ½ factor, = torch weight_decay 2·l2 under SGD)"
    yield L1L2, "penalty", "l1·Σ|w| + l2·Σw² on weights only (Keras L1L2)"
    yield l1_penalty, "penalty", "strength·Σ|w| of tensors; (M,) strength -> (M,) per-member penalty"
    yield l2_penalty, "penalty", "strength·Σw² of tensors; (M,) strength -> (M,) per-member penalty"
    yield l1l2_penalty, "penalty", "l1·Σ|w| + l2·Σw² of tensors, per member when a strength is (M,)"
    yield param_groups_weight_decay, "decay", "optimizer groups: weight_decay on weights, 0 on biases/norm/1-D (timm)"
    yield coupled_decay_, "decay", "coupled decay: grad += λ·w (torch weight_decay; = (λ/2)·Σw² penalty)"
    yield decoupled_decay_, "decay", "decoupled decay: w ← w − lr·λ·w, apart from the gradient step (AdamW)"
    yield DecoupledWeightDecay, "decay", "decoupled decay as an optimizer pre-step hook; Adam + it == AdamW exactly"
    yield MaxNorm, "constraint", "after each step, each unit's incoming weights rescaled to L2 norm <= c (Srivastava 2014)"
    yield UnitNorm, "constraint", "after each step, each unit's incoming weights rescaled to L2 norm 1 (Keras UnitNorm)"
    yield NonNeg, "constraint", "after each step, w ← max(w, 0) (Keras NonNeg)"
    yield max_norm_, "constraint", "in place: ‖w_u‖ <= c per unit (dim 0; dim 1 when stacked), c may be (M,)"
    yield unit_norm_, "constraint", "in place: w_u ← w_u/(‖w_u‖ + 1e-7) per unit"
    yield non_neg_, "constraint", "in place: w ← max(w, 0)"
    yield label_smoothing_cross_entropy, "loss", "CE against (1−ε)·y + ε/C, ε over all C classes (= torch label_smoothing)"
    yield LabelSmoothingCrossEntropy, "loss", "module form of label-smoothing CE; ε may be (M,) for (M, B, C) logits"
    yield gaussian_noise, "noise", "x + σ·N(0, 1) in training, x itself in eval; σ may be (M,)"
    yield GaussianNoise, "noise", "module form of Gaussian input noise (Keras GaussianNoise)"
    yield random_shift, "augmentation", "1-D: circular shift by U{−s..s} per sample"
    yield random_scale, "augmentation", "1-D: amplitude × U(low, high) per sample"
    yield additive_noise, "augmentation", "x + σ·N(0, 1) elementwise, training only"
    yield time_mask, "augmentation", "1-D: one window of width U{0..w} per sample set to 0 (SpecAugment)"
    yield random_crop, "augmentation", "image: pad p, crop back H×W at U{0..2p}² offsets (torchvision RandomCrop)"
    yield horizontal_flip, "augmentation", "image: left–right mirror with probability p per image"
    yield random_translate, "augmentation", "image: integer shift up to f·H, f·W, zero fill (Keras RandomTranslation)"
    yield cutout, "augmentation", "image: one size×size square set to 0, centre uniform, clipped (DeVries & Taylor 2017)"
    yield Augment, "augmentation", "pipeline module: ops in order in training, input itself in eval"
    yield mixup, "mixing", "x̃ = λx + (1−λ)x[π], target λy + (1−λ)y[π], λ ~ Beta(α, α) (Zhang 2018)"
    yield cutmix, "mixing", "paste a box of x[π] covering 1−λ, λ = exact kept area (Yun 2019)"
    yield EarlyStopping, "early_stopping", "Keras EarlyStopping parity; sets stop_training_, restores best weights at the end"
    yield EarlyStoppingRule, "early_stopping", "pure Keras stop rule over an EarlyStoppingState of shape () or (M,)"


REGULARIZERS: dict[str, RegularizerInfo] = {obj.__name__: RegularizerInfo(obj, kind, conv) for obj, kind, conv in _entries()}

# Short names used by study specs (``augment = ["shift", ...]``) -> the ops.
AUGMENTATIONS = {
    "shift": random_shift, "scale": random_scale, "noise": additive_noise, "time_mask": time_mask,
    "crop": random_crop, "flip": horizontal_flip, "translate": random_translate, "cutout": cutout,
}
