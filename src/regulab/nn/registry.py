"""A registry of every dropout-family layer, for one parametrised test suite and for tools.

Each :class:`LayerSpec` says how to build the layer for tests, what input it
takes, its torch twin (if torch has one) and which properties hold: identity in
eval, expectation preserved in training, only the seed saved for backward.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import (AlphaDropout, ConcreteDropout, DropBlock2d, DropConnectLinear, Dropout, Dropout1d, Dropout2d,
               Dropout3d, DropPath, EmbeddingDropout, FeatureAlphaDropout, GaussianDropout, GaussianNoise,
               LockedDropout, SharedDropout, WeightDropout)

__all__ = ["LayerSpec", "LAYERS"]


def _randn(*shape: int) -> Callable[[], Tensor]:
    return lambda: torch.randn(*shape)


@dataclass(frozen=True)
class LayerSpec:
    """How to build and feed one layer in tests.

    Attributes:
        cls: the module class.
        kwargs: constructor arguments (a function, so each call builds fresh sub-modules).
        make_input: builds a typical input.
        torch_twin: builds torch's equivalent module from the same kwargs (None if torch has none).
        rate: name of the rate argument (None if the layer has none).
        eval_identity: ``eval()(x) is x``.
        preserves_mean: E[train output] = eval output.
        saves_only_seed: autograd keeps no per-element tensor.
        float_input: the input is differentiable (False for indices).
        state_keys: the expected ``state_dict`` keys.
    """

    cls: type[nn.Module]
    kwargs: Callable[[], dict]
    make_input: Callable[[], Tensor]
    torch_twin: Callable[..., nn.Module] | None = None
    rate: str | None = "p"
    eval_identity: bool = True
    preserves_mean: bool = True
    saves_only_seed: bool = True
    float_input: bool = True
    state_keys: tuple[str, ...] = field(default_factory=tuple)

    def build(self, **overrides) -> nn.Module:
        return self.cls(**{**self.kwargs(), **overrides})


LAYERS: dict[str, LayerSpec] = {
    "Dropout": LayerSpec(Dropout, lambda: {"p": 0.5}, _randn(8, 16), nn.Dropout),
    "Dropout1d": LayerSpec(Dropout1d, lambda: {"p": 0.5}, _randn(4, 6, 10), nn.Dropout1d),
    "Dropout2d": LayerSpec(Dropout2d, lambda: {"p": 0.5}, _randn(4, 6, 5, 5), nn.Dropout2d),
    "Dropout3d": LayerSpec(Dropout3d, lambda: {"p": 0.5}, _randn(2, 4, 3, 3, 3), nn.Dropout3d),
    "AlphaDropout": LayerSpec(AlphaDropout, lambda: {"p": 0.2}, _randn(64, 32), nn.AlphaDropout,
                              preserves_mean=False),
    "FeatureAlphaDropout": LayerSpec(FeatureAlphaDropout, lambda: {"p": 0.2}, _randn(4, 6, 5, 5),
                                     nn.FeatureAlphaDropout, preserves_mean=False),
    "SharedDropout": LayerSpec(SharedDropout, lambda: {"p": 0.5, "noise_shape": (None, 1, None)}, _randn(4, 6, 5)),
    "LockedDropout": LayerSpec(LockedDropout, lambda: {"p": 0.5}, _randn(7, 4, 5)),
    "DropPath": LayerSpec(DropPath, lambda: {"p": 0.3}, _randn(8, 5, 4)),
    "EmbeddingDropout": LayerSpec(EmbeddingDropout, lambda: {"embedding": nn.Embedding(20, 6), "p": 0.3},
                                  lambda: torch.randint(0, 20, (4, 7)), eval_identity=False, float_input=False,
                                  state_keys=("embedding.weight",)),
    # DropBlock renormalises globally (numel/kept) and drops edges less often: only the total mean is kept
    "DropBlock2d": LayerSpec(DropBlock2d, lambda: {"p": 0.2, "block_size": 3}, _randn(2, 4, 12, 12),
                             preserves_mean=False),
    "GaussianDropout": LayerSpec(GaussianDropout, lambda: {"p": 0.5}, _randn(64, 32)),
    "GaussianNoise": LayerSpec(GaussianNoise, lambda: {"sigma": 0.3}, _randn(64, 32), rate="sigma"),
    "DropConnectLinear": LayerSpec(DropConnectLinear, lambda: {"in_features": 16, "out_features": 8, "p": 0.5},
                                   _randn(5, 16), lambda p, **kw: nn.Linear(**kw), eval_identity=False,
                                   saves_only_seed=False, state_keys=("weight", "bias")),
    "WeightDropout": LayerSpec(WeightDropout, lambda: {"p": 0.5}, _randn(16, 8)),
    "ConcreteDropout": LayerSpec(ConcreteDropout, lambda: {"p_init": 0.3}, _randn(64, 32), rate="p_init",
                                 saves_only_seed=False, state_keys=("p_logit",)),
}
