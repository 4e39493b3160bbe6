"""``diagnose(model, example_input)``: every doctor check, in one call."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .._validate import NONNEG_INT, POS_INT, check, register
from ..errors import RegulabError, first_line
from .determinism import check_determinism
from .findings import Finding
from .modes import check_modes, is_batchnorm, stuck_modules
from .placement import check_placement
from .trace import PassRecord, run_pass

__all__ = ["diagnose", "DoctorError"]

_SEED = register("diagnose", "seed", NONNEG_INT)
_REPEATS = register("diagnose", "repeats", POS_INT)


class DoctorError(RegulabError, ValueError):
    """The doctor cannot run: bad target, factory, model or input."""


def _working_copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception:  # un-copyable attributes: work on the model, restored by the caller
        return model


def _functional_bn(model: nn.Module, rec: PassRecord, stuck: list[str]) -> list[Finding]:
    mods = dict(model.named_modules())
    out, seen = [], set()
    for c in rec.calls_of("batchnorm"):
        m = mods.get(c.module)
        if not c.training or c.module in stuck or c.module in seen:
            continue
        seen.add(c.module)
        if m is not None and is_batchnorm(m) and not m.track_running_stats:
            out.append(Finding("info", "batchnorm-batch-stats", c.module,
                               f"{type(m).__name__} has track_running_stats=False: it normalises with batch "
                               f"statistics in eval too, so predictions depend on the batch",
                               "keep track_running_stats=True unless batch statistics at test time are intended"))
        else:
            out.append(Finding("error", "batchnorm-train-mode", c.module,
                               f"{type(m).__name__ if m is not None else 'forward'} calls batch_norm with "
                               f"training=True during eval: outputs depend on the batch",
                               "pass training=self.training to F.batch_norm, or use nn.BatchNorm*"))
    return out


def diagnose(model: nn.Module, example_input, *, seed: int = 0, repeats: int = 8) -> list[Finding]:
    """Check a model for train/eval mistakes and risky dropout placements.

    Runs the model in eval mode twice on ``example_input`` (non-determinism is
    an error, and the culprit module is named), checks that ``train()`` and
    ``eval()`` reach every submodule, and switches each dropout site on alone
    to find dropout feeding BatchNorm (with the measured variance ratio next to
    Li et al.'s closed form), dropout on the logits or input, and extreme ``p``.
    The model is deep-copied first; torch's global RNG state is restored.

    Args:
        model: any ``nn.Module``.
        example_input: a tensor, or a tuple of positional inputs.
        seed: seeds the dropout masks drawn during the checks.
        repeats: stochastic passes pooled when measuring a variance ratio.

    Returns:
        list of :class:`~regulab.doctor.Finding`, errors first.

    Examples:
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        >>> diagnose(net, torch.randn(32, 8))
        []
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.Linear(16, 2))
        >>> [f.code for f in diagnose(net, torch.randn(256, 8))]
        ['dropout-before-batchnorm']
    """
    if not isinstance(model, nn.Module):
        raise DoctorError(f"diagnose: model must be a torch.nn.Module, got {type(model).__name__}")
    check("diagnose", "seed", seed, _SEED)
    check("diagnose", "repeats", repeats, _REPEATS)
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    work = _working_copy(model)
    saved = None if work is not model else ({m: m.training for m in model.modules()},
                                            copy.deepcopy(model.state_dict()))
    rng = torch.get_rng_state()
    try:
        return _diagnose(work, inputs, seed, repeats)
    finally:
        torch.set_rng_state(rng)
        if saved is not None:
            for m, t in saved[0].items():
                m.training = t
            model.load_state_dict(saved[1])


def _diagnose(model: nn.Module, inputs: tuple, seed: int, repeats: int) -> list[Finding]:
    model.train()
    stuck_eval = stuck_modules(model, True)
    model.eval()
    stuck_train = stuck_modules(model, False)
    torch.manual_seed(seed)
    try:
        rec1 = run_pass(model, inputs)
        rec2 = run_pass(model, inputs)
    except Exception as e:
        shapes = ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs)
        raise DoctorError(f"doctor: the model's forward must accept the example input of shape {shapes}, "
                          f"got {type(e).__name__}: {first_line(e)}") from None
    stuck_train += [n for n in stuck_modules(model, False) if n not in stuck_train]
    findings, culprits = check_determinism(model, rec1, rec2)
    findings += check_modes(model, stuck_train, stuck_eval, culprits)
    findings += _functional_bn(model, rec1, stuck_train)
    findings += check_placement(model, inputs, rec1, seed=seed, repeats=repeats)
    for w in rec1.warnings:
        findings.append(Finding("info", "forward-warning", "", f"the forward pass warned: {w}",
                                "address the warning; it usually means an input shape the layer does not expect"))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order[f.severity])
