"""Stacking M ordinary models into one flat parameter buffer.

Every stacked twin is built from M ordinary ``nn.Module`` instances, each
initialised with torch's default init (``kaiming_uniform_(a=√5)`` for weights)
under its own seed. Parameters are stored block by block in one flat buffer:
block *k* holds parameter *k* of all members, shape ``(M, *shape)``, so the
optimizer and the regularizers run as a handful of tensor ops on the whole
study, and each block is a contiguous ``(M, ...)`` view for ``bmm``.

Examples:
    >>> from torch import nn
    >>> fl = FlatParams.from_modules([nn.Linear(3, 2), nn.Linear(3, 2)])
    >>> fl.M, fl.numel, [tuple(v.shape) for v in fl.views()]
    (2, 16, [(2, 2, 3), (2, 2)])
    >>> m = fl.load_member(nn.Linear(3, 2), 1); torch.equal(m.weight, fl.views()[0][1])
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FlatParams", "seeded_module", "Block"]


@dataclass(frozen=True)
class Block:
    name: str          # the ordinary module's parameter name, e.g. "hidden.0.weight"
    shape: tuple       # per-member shape
    offset: int        # offset of the block in the flat buffer
    is_weight: bool    # ndim >= 2 and not a norm layer: gets penalties/decay/max-norm

    @property
    def numel_member(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def seeded_module(factory, seed: int) -> nn.Module:
    """Build ``factory()`` with torch's default init under ``torch.manual_seed(seed)``,
    leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class FlatParams:
    """M members' parameters in one flat float32 buffer (see the module docstring)."""

    def __init__(self, blocks: list[Block], M: int, flat: torch.Tensor) -> None:
        self.blocks, self.M, self.flat = blocks, M, flat
        self.numel = flat.numel()

    @classmethod
    def from_modules(cls, modules: list[nn.Module]) -> FlatParams:
        M = len(modules)
        named = list(modules[0].named_parameters())
        norm_params = {f"{n}.{p}" for n, m in modules[0].named_modules()
                       if isinstance(m, nn.modules.batchnorm._NormBase) for p in ("weight", "bias")}
        blocks, off = [], 0
        for name, p in named:
            blocks.append(Block(name, tuple(p.shape), off, p.ndim >= 2 and name not in norm_params))
            off += M * p.numel()
        flat = torch.empty(off, dtype=torch.float32)
        self = cls(blocks, M, flat)
        with torch.no_grad():
            for v, b in zip(self.views(), blocks):
                v.copy_(torch.stack([dict(m.named_parameters())[b.name].detach() for m in modules]))
        return self

    def like(self, fill: float | None = 0.0) -> torch.Tensor:
        """A new flat buffer of the same layout (zeros by default)."""
        return torch.zeros_like(self.flat) if fill == 0.0 else torch.empty_like(self.flat)

    def views(self, flat: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-block ``(M, *shape)`` views into ``flat`` (default: the parameters)."""
        flat = self.flat if flat is None else flat
        return [flat[b.offset:b.offset + self.M * b.numel_member].view(self.M, *b.shape) for b in self.blocks]

    def as_dict(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {b.name: v for b, v in zip(self.blocks, self.views(flat))}

    def weight_views(self, flat: torch.Tensor | None = None) -> list[torch.Tensor]:
        return [v for b, v in zip(self.blocks, self.views(flat)) if b.is_weight]

    def member_state(self, m: int, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Member ``m``'s parameters under the ordinary module's names (contiguous copies)."""
        return {b.name: v[m].contiguous().clone() for b, v in zip(self.blocks, self.views(flat))}

    def load_member(self, module: nn.Module, m: int, flat: torch.Tensor | None = None) -> nn.Module:
        """Copy member ``m`` into an ordinary module with the same parameter names."""
        with torch.no_grad():
            params = dict(module.named_parameters())
            for b, v in zip(self.blocks, self.views(flat)):
                params[b.name].copy_(v[m])
        return module

    def member_rows(self, mask: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> None:
        """``dst[member] = src[member]`` for members where ``mask`` (M,) is True, block by block."""
        idx = mask.nonzero().flatten()
        if idx.numel() == 0:
            return
        for s, d in zip(self.views(src), self.views(dst)):
            d.index_copy_(0, idx, s.index_select(0, idx))

    def member_scale(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Broadcast an (M,) tensor against a block view ``v`` of shape (M, ...)."""
        return t.view(-1, *([1] * (v.ndim - 1)))

    def leaves(self, flat: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
        """Leaf tensors sharing storage with ``flat``, whose ``.grad`` are views of ``grad``.

        Autograd then accumulates straight into the flat gradient buffer (no copies), so
        models without a hand-written backward still feed the flat optimizer.
        """
        out = []
        for b, g in zip(self.blocks, self.views(grad)):
            leaf = torch.empty(0, dtype=flat.dtype)
            leaf.set_(flat.untyped_storage(), b.offset, (self.M, *b.shape), g.stride())
            leaf.requires_grad_(True)
            leaf.grad = g
            out.append(leaf)
        return out
