"""Concrete dropout: a dropout rate learnt by gradient descent.

Gal, Hron & Kendall 2017, "Concrete Dropout". The Bernoulli mask is relaxed to
a Concrete (Gumbel-sigmoid) variable with temperature ``t`` (0.1), so the rate
``p = sigmoid(logit)`` receives gradients:
``z = sigmoid((logit + log u − log(1−u))/t)`` (the relaxed *drop* indicator),
``y = x·(1 − z)/(1 − p)``. The loss gets the regulariser
``w_r·Σθ²/(1−p) + d_r·D·(p·log p + (1−p)·log(1−p))`` (θ the next layer's weights,
D the input dimension). The uniforms ``u`` come from the counter-based bits.
Autograd saves the relaxed mask here (it depends on ``p``, which is learnt).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validate import NONNEG, POSITIVE, check, register
from ._kernels_family import uniform
from ._rng import bits_ref, draw_seed, mix_seed
from ._functorch import register_per_sample_vmap

__all__ = ["concrete_dropout", "concrete_regularizer", "uniform_like", "uniform_ref"]

register("concrete_dropout", "temperature", POSITIVE)
register("concrete_regularizer", "weight_regularizer", NONNEG)
register("concrete_regularizer", "dropout_regularizer", NONNEG)


def uniform_ref(seed: int, n: int, device=None) -> Tensor:
    """Torch reference of the uniform kernel (bit for bit)."""
    b = bits_ref(seed, 0, n, device=device)
    return (b >> 9).to(torch.float32) * 2.0**-23 + 2.0**-24


@torch.library.custom_op("regulab::uniform_like", mutates_args=())
def uniform_like(x: Tensor, seed: Tensor) -> Tensor:
    """float32 uniforms ``((bits(i) >> 9) + ½)·2^-23`` in (0, 1), shaped like ``x``, on ``x``'s device."""
    if x.device.type == "cpu":
        k0, k1 = mix_seed(int(seed))
        return torch.from_numpy(uniform(x.numel(), k0, k1)).view(x.shape)
    return uniform_ref(int(seed), x.numel(), x.device).view(x.shape)


@uniform_like.register_fake
def _(x, seed):
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


register_per_sample_vmap(uniform_like)


def concrete_dropout(x: Tensor, p_logit: Tensor, temperature: float = 0.1, training: bool = True, *,
                     generator: torch.Generator | None = None) -> Tensor:
    """Relaxed-Bernoulli dropout whose rate ``sigmoid(p_logit)`` is differentiable.

    Formula: ``z = sigmoid((logit + log u − log(1−u))/t)``, ``y = x·(1 − z)/(1 − p)``;
    ``y`` is ``x`` itself in eval.

    Args:
        x: input of any shape.
        p_logit: 0-dim (or broadcastable) tensor, ``p = sigmoid(p_logit)``.
        temperature: Concrete temperature t > 0 (0.1 in the paper).
        training: apply (True) or return ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (*), output (*).

    Returns:
        The relaxed dropout of ``x``.

    Examples:
        >>> import torch, regulab
        >>> logit = torch.tensor(0.0, requires_grad=True)  # p = 0.5
        >>> y = regulab.ops.concrete_dropout(torch.ones(1000), logit)
        >>> y.sum().backward(); logit.grad is not None
        True
    """
    t = float(check("concrete_dropout", "temperature", temperature, POSITIVE))
    if not training or x.numel() == 0:
        return x
    u = uniform_like(x.detach(), draw_seed(generator)).to(x.dtype)  # constant noise: no gradient
    z = torch.sigmoid((p_logit + torch.log(u) - torch.log1p(-u)) / t)  # relaxed drop indicator
    return x * (1 - z) / torch.sigmoid(-p_logit)  # 1 − p = sigmoid(−logit)


def concrete_regularizer(p_logit: Tensor, weight_sq_sum: Tensor | float, input_dim: int,
                         weight_regularizer: float = 1e-6, dropout_regularizer: float = 1e-5) -> Tensor:
    """Gal et al. 2017's regulariser ``w_r·Σθ²/(1−p) + d_r·D·(p·log p + (1−p)·log(1−p))``.

    Args:
        p_logit: the logit of the rate p.
        weight_sq_sum: Σθ² of the weights that follow the dropout.
        input_dim: D, the number of input features per sample.
        weight_regularizer: w_r >= 0 (≈ l²/N in the paper).
        dropout_regularizer: d_r >= 0 (≈ 2/(τN)).

    Returns:
        A 0-dim tensor to add to the loss.

    Examples:
        >>> import torch
        >>> from regulab.ops import concrete_regularizer
        >>> r = concrete_regularizer(torch.tensor(0.0), 0.0, 10, dropout_regularizer=1.0)
        >>> round(float(r), 4)  # 10·(0.5·log 0.5·2) = −10·log 2
        -6.9315
    """
    w_r = float(check("concrete_regularizer", "weight_regularizer", weight_regularizer, NONNEG))
    d_r = float(check("concrete_regularizer", "dropout_regularizer", dropout_regularizer, NONNEG))
    log_p, log_q = F.logsigmoid(p_logit), F.logsigmoid(-p_logit)
    p, q = log_p.exp(), log_q.exp()
    return w_r * weight_sq_sum / q + d_r * input_dim * (p * log_p + q * log_q)
