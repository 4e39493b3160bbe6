"""Small 1-D and 2-D CNNs: ordinary ``nn.Module`` and stacked twin (grouped convolutions).

``CNN1d``: ``conv(k, stride) -> act`` per channel entry, then dense layers and a head
(MNIST-1D's reference CNN uses 3 convs of 25 channels, stride 2). ``CNN2d``:
``conv(k, 'same') -> act -> maxpool 2`` per channel entry, then dense layers and a head.
Dropout ``p`` acts on the flattened features and after each dense layer; ``input_p`` on the input.

The stacked twin lays M members out as channel groups, ``(B, M·C, ...)``, and runs each
convolution once with ``groups=M``; the dense part uses ``baddbmm`` on ``(M, B, F)``.

Examples:
    >>> import torch
    >>> from regulab.models.stacked import FlatParams, seeded_module
    >>> make = lambda: CNN((40,), 10, dims=1, channels=[4, 4], widths=[8])
    >>> mods = [seeded_module(make, s) for s in (0, 1, 2)]
    >>> net = StackedCNN(mods[0], M=3); fl = FlatParams.from_modules(mods)
    >>> x = torch.randn(5, 40)
    >>> y = net.forward(fl.views(), x, shared=True)                 # (M, B, C)
    >>> torch.allclose(y[2], mods[2](x), atol=1e-5), tuple(y.shape)
    (True, (3, 5, 10))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dropout
from .mlp import ACTIVATIONS

__all__ = ["CNN", "StackedCNN"]


class CNN(nn.Module):
    """Ordinary CNN for inputs ``(B, L)``/``(B, C, L)`` (``dims=1``) or ``(B, C, H, W)`` (``dims=2``)."""

    def __init__(self, input_shape, num_classes: int, *, dims: int = 1, channels=(25, 25, 25),
                 kernel_size: int = 3, stride: int = 2, widths=(), activation: str = "relu",
                 p: float = 0.0, input_p: float = 0.0) -> None:
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) == dims:
            shape = (1, *shape)  # add the channel dim
        self.dims, self.in_shape, self.activation = dims, shape, activation
        self.stride = stride if dims == 1 else 1
        self.pad = kernel_size // 2
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        cs, sp = [shape[0], *channels], list(shape[1:])
        self.convs = nn.ModuleList()
        for a, b in zip(cs[:-1], cs[1:]):
            self.convs.append(conv(a, b, kernel_size, stride=self.stride, padding=self.pad))
            sp = [(s + 2 * self.pad - kernel_size) // self.stride + 1 for s in sp]
            if dims == 2:
                sp = [max(s // 2, 1) if s >= 2 else s for s in sp]
        self.pool = dims == 2
        feat = cs[-1] * math.prod(sp)
        dd = [feat, *widths]
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dd[:-1], dd[1:]))
        self.head = nn.Linear(dd[-1], num_classes)
        self.input_dropout, self.dropout = nn.Dropout(input_p), nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        h = self.input_dropout(x.reshape(x.shape[0], *self.in_shape))
        for c in self.convs:
            h = act(c(h))
            if self.pool and min(h.shape[2:]) >= 2:
                h = F.max_pool2d(h, 2)
        h = self.dropout(h.flatten(1))
        for lin in self.dense:
            h = self.dropout(act(lin(h)))
        return self.head(h)


class StackedCNN:
    """M members of one :class:`CNN` architecture over flat-buffer views (autograd path only)."""

    manual = False
    bn_buffers = None

    def __init__(self, template: CNN, M: int) -> None:
        self.M, self.t = M, template
        self.n_conv, self.n_dense = len(template.convs), len(template.dense)

    def forward(self, P, x, *, shared=False, p=None, input_p=None, training=False, generator=None):
        """Logits ``(M, B, C)`` for inputs ``(M, B, *)``, or ``(B, *)`` seen by all members (``shared``)."""
        t, M = self.t, self.M
        act = ACTIVATIONS[t.activation]
        conv = F.conv1d if t.dims == 1 else F.conv2d
        B = x.shape[0] if shared else x.shape[1]
        if shared:
            h = x.reshape(B, 1, *t.in_shape).expand(B, M, *t.in_shape)  # (B, M, C, *sp)
        else:
            h = x.reshape(M, B, *t.in_shape)
            if training and input_p is not None:
                h = dropout(h, input_p, generator=generator)
            h = h.transpose(0, 1)  # (B, M, C, *sp)
        h = h.reshape(B, M * t.in_shape[0], *t.in_shape[1:])  # members as channel groups
        for i in range(self.n_conv):
            W, b = P[2 * i], P[2 * i + 1]  # (M, Cout, Cin, *k), (M, Cout)
            h = act(conv(h, W.reshape(-1, *W.shape[2:]), b.reshape(-1), stride=t.stride, padding=t.pad, groups=M))
            if t.pool and min(h.shape[2:]) >= 2:
                h = F.max_pool2d(h, 2)
        h = h.reshape(B, M, -1).transpose(0, 1)  # (M, B, F)
        if training and p is not None:
            h = dropout(h, p, generator=generator)
        k = 2 * self.n_conv
        for i in range(self.n_dense):
            W, b = P[k + 2 * i], P[k + 2 * i + 1]
            h = act(torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2)))  # (M, B, H)
            if training and p is not None:
                h = dropout(h, p, generator=generator)
        return torch.baddbmm(P[-1].unsqueeze(1), h, P[-2].transpose(1, 2))  # (M, B, C)
