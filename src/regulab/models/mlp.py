"""Multilayer perceptron: an ordinary ``nn.Module`` and its stacked twin.

The MNIST-1D reference MLP (Greydanus 2020) is ``MLP(40, [100, 100], 10, residual=True)``:
``h1 = relu(W1 x)``, ``h2 = h1 + relu(W2 h1)``, ``y = W3 h2``. A hidden layer gets the skip
connection when ``residual`` and its input and output widths agree.

Dropout (rate ``p``) follows every hidden block; input dropout (``input_p``) acts on the input.

Examples:
    >>> import torch
    >>> from regulab.models.stacked import FlatParams, seeded_module
    >>> make = lambda: MLP(40, [100, 100], 10)
    >>> mods = [seeded_module(make, s) for s in (0, 1)]
    >>> net = StackedMLP(mods[0], M=2); fl = FlatParams.from_modules(mods)
    >>> x = torch.randn(2, 5, 40)                                    # (M, B, in)
    >>> y = net.forward(fl.views(), x)                               # (M, B, C)
    >>> torch.allclose(y[1], mods[1](x[1]), atol=1e-5)
    True
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dropout
from ..ops._rng import draw_seed_int, mix_seed
from ..ops.dropout import member_scales
from . import _fused

__all__ = ["MLP", "StackedMLP", "ACTIVATIONS"]

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "sigmoid": torch.sigmoid}
_IN_PLACE = {"relu": torch.relu_, "tanh": torch.tanh_, "gelu": torch.ops.aten.gelu_, "sigmoid": torch.sigmoid_}


class MLP(nn.Module):
    """Ordinary MLP: ``in -> widths... -> num_classes`` with optional BatchNorm and residual blocks.

    Args:
        in_features: flattened input size.
        widths: hidden widths.
        num_classes: outputs.
        activation: relu, tanh, gelu or sigmoid.
        batchnorm: BatchNorm1d between each hidden linear layer and its activation.
        residual: skip connection on hidden layers whose input and output widths agree.
        p: dropout after each hidden block; input_p: dropout on the input.

    Shape:
        Input ``(B, *)`` (flattened to ``(B, in_features)``), output ``(B, num_classes)``.
    """

    def __init__(self, in_features: int, widths, num_classes: int, activation: str = "relu",
                 batchnorm: bool = False, residual: bool = True, p: float = 0.0, input_p: float = 0.0) -> None:
        super().__init__()
        dims = [in_features, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in dims[1:]) if batchnorm else None
        self.head = nn.Linear(dims[-1], num_classes)
        self.activation, self.residual = activation, residual
        self.input_dropout, self.dropout = nn.Dropout(input_p), nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        h = self.input_dropout(x.flatten(1))  # (B, in)
        for i, lin in enumerate(self.hidden):
            z = lin(h)
            if self.norms is not None:
                z = self.norms[i](z)
            skip = self.residual and lin.in_features == lin.out_features
            h = self.dropout(h + act(z) if skip else act(z))
        return self.head(h)


_NO_DROP = (0, 0, 0, 0, np.zeros(1, np.uint32), np.zeros(1, np.float32))


def _fusable(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous()


def _drop_args(generator, p: torch.Tensor, lo: int, hi: int, dtype) -> tuple:
    """(lo, hi, k0, k1, thresholds, scales) of ``regulab.ops.dropout(out[lo:hi], p[lo:hi], generator=...)``:
    the same single draw from ``generator``, the same keys and per-member rates."""
    k0, k1 = mix_seed(draw_seed_int(generator))
    thresh, scale = member_scales(p[lo:hi], dtype)
    return lo, hi, k0, k1, thresh, scale.numpy()


class StackedMLP:
    """M members of one :class:`MLP` architecture, parameters as flat-buffer views.

    ``forward`` is plain torch (autograd works through it, BatchNorm included);
    ``forward_train``/``backward`` are a hand-written fast path (no BatchNorm) that
    regenerates dropout masks from their seeds in backward instead of storing them.
    """

    def __init__(self, template: MLP, M: int) -> None:
        self.M = M
        self.act = template.activation
        self.skips = [template.residual and l.in_features == l.out_features for l in template.hidden]
        self.batchnorm = template.norms is not None
        self.n_hidden = len(template.hidden)
        self.manual = not self.batchnorm
        self.fused = self.act == "relu"  # the numba passes of _fused (tests switch it off to compare)
        self.bn_buffers = None
        self._eval_ws: dict[int, list[torch.Tensor]] = {}  # eval workspace per chunk length
        if self.batchnorm:  # running stats per member, (M, H)
            self.bn_buffers = [(torch.zeros(M, n.num_features), torch.ones(M, n.num_features))
                               for n in template.norms]

    # -- generic path (autograd, eval, BatchNorm) ------------------------------------------------
    def forward(self, P: list[torch.Tensor], x: torch.Tensor, *, shared=False, p=None, input_p=None,
                training=False, generator=None) -> torch.Tensor:
        """Logits ``(M, B, C)`` for inputs ``(M, B, *)``, or ``(B, *)`` seen by all members (``shared``)."""
        act = ACTIVATIONS[self.act]
        M = self.M
        first = None
        if shared and not (training and input_p is not None):
            # every member sees the same input: the first layer is one large GEMM
            W, b = P[0], P[1]
            B = x.shape[0]
            h = x.reshape(B, -1)
            first = torch.addmm(b.reshape(-1), h, W.reshape(-1, W.shape[2]).t())  # (B, M*H)
            first = first.view(B, M, -1).transpose(0, 1)  # (M, B, H)
        elif shared:
            h = x.reshape(x.shape[0], -1).expand(M, -1, -1)  # (M, B, in)
        else:
            h = x.reshape(M, x.shape[1], -1)  # (M, B, in)
        if training and input_p is not None:
            h = dropout(h, input_p, generator=generator)
        for i in range(self.n_hidden):
            W, b = P[2 * i], P[2 * i + 1]
            if i == 0 and first is not None:
                z = first
            else:
                z = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))  # (M, B, H)
            if self.batchnorm:
                z = self._bn(P, i, z, training)
            a = act(z)
            h = h + a if self.skips[i] else a
            if training and p is not None:
                h = dropout(h, p, generator=generator)
        Wo, bo = P[-2], P[-1]
        return torch.baddbmm(bo.unsqueeze(1), h, Wo.transpose(1, 2))  # (M, B, C)

    @torch.no_grad()
    def forward_eval(self, P: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits, *transposed*: ``(M, C, B)`` for a chunk ``x`` (B, *) seen by every member.

        Same values as ``forward(P, x, shared=True)`` (no BatchNorm), computed without
        allocating: the buffers of each chunk length are kept and reused (the returned
        tensor is one of them, valid until the next call with that length), activations
        and skips work in place, and the head is ``Wo·hᵀ`` (with N = C = 10 the other
        orientation runs GEMM at a third of the speed).
        """
        assert not self.batchnorm
        M, B = self.M, x.shape[0]
        W0 = P[0]
        ws = self._eval_ws.get(B)
        if ws is None:
            if len(self._eval_ws) >= 4:
                self._eval_ws.clear()
            ws = [torch.empty(B, M * W0.shape[1])]
            ws += [torch.empty(M, B, P[2 * i].shape[1]) for i in range(1, self.n_hidden)]
            ws.append(torch.empty(M, P[-2].shape[1], B))
            self._eval_ws[B] = ws
        act_ = _IN_PLACE[self.act]
        # every member sees the same input: the first layer is one GEMM, (B, in) x (in, M*H)
        first = torch.addmm(P[1].reshape(-1), x.reshape(B, -1), W0.reshape(-1, W0.shape[2]).t(), out=ws[0])
        h = act_(first).view(B, M, -1)
        if self.skips[0]:
            h.add_(x.reshape(B, 1, -1))
        h = h.transpose(0, 1)  # (M, B, H), strided
        for i in range(1, self.n_hidden):
            W, b = P[2 * i], P[2 * i + 1]
            z = act_(torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2), out=ws[i]))  # (M, B, H)
            h = z.add_(h) if self.skips[i] else z
        return torch.baddbmm(P[-1].unsqueeze(2), P[-2], h.transpose(1, 2), out=ws[-1])  # (M, C, B)

    def _bn(self, P, i, z, training):
        M, B, H = z.shape
        k = 2 * self.n_hidden + 2 * i
        g, beta = P[k], P[k + 1]  # (M, H)
        rm, rv = self.bn_buffers[i]
        zt = z.transpose(0, 1).reshape(B, M * H)  # members as channels, (B, M*H)
        out = F.batch_norm(zt, rm.view(-1), rv.view(-1), g.reshape(-1), beta.reshape(-1), training, 0.1, 1e-5)
        return out.view(B, M, H).transpose(0, 1)  # (M, B, H)

    # -- hand-written fast path ---------------------------------------------------------------
    def forward_train(self, P, x, *, p=None, input_p=None, seeds=None, p_range=None, input_range=None):
        """Training forward for ``x`` (M, B, in); returns ``(logits, ctx)`` for :meth:`backward`.

        ``logits`` (M, B, C) is a view of a class-major (M, C, B) tensor (the loss head works on that).

        Dropout acts on members ``p_range = (lo, hi)`` only (default: all) with rates ``p[lo:hi]``.
        ``seeds()`` returns ``(key, generator)`` per dropout call; backward rebuilds the generator
        from ``key`` (the fused ReLU passes keep the two 32-bit keys drawn from it) so masks are
        never stored.
        """
        M = self.M
        h = x.reshape(M, x.shape[1], -1)  # (M, B, in)
        lo, hi = p_range or (0, M)
        if input_p is not None:
            ilo, ihi = input_range or (0, M)
            h = h.clone()
            dropout(h[ilo:ihi], input_p[ilo:ihi], inplace=True, generator=seeds()[1])
        saved = []
        fused = self.fused and _fusable(h)
        for i in range(self.n_hidden):
            W, b = P[2 * i], P[2 * i + 1]
            if fused:  # bias, ReLU, skip and dropout in one numba pass over the GEMM's output
                z = torch.bmm(h, W.transpose(1, 2))  # (M, B, H), bias added by the kernel
                out = torch.empty_like(z)
                drop = _NO_DROP if p is None else _drop_args(seeds()[1], p, lo, hi, z.dtype)
                _fused.relu_forward(z.numpy(), b.numpy(), h.numpy(), self.skips[i], out.numpy(), *drop)
                saved.append((h, z, None, drop))  # the mask's keys and per-member rates: scalars, no mask
                h = out
                continue
            z = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))  # (M, B, H)
            a = ACTIVATIONS[self.act](z)
            out = h + a if self.skips[i] else a
            key = None
            if p is not None:
                if out is a and self.act in ("tanh", "sigmoid"):
                    out = a.clone()  # backward needs a itself
                key, g = seeds()
                dropout(out[lo:hi], p[lo:hi], inplace=True, generator=g)
            saved.append((h, z, a, key))
            h = out
        Wo, bo = P[-2], P[-1]
        # computed as (M, C, B): with N = C = 10 the orientation h·Woᵀ runs at a third of the speed;
        # returned as its (M, B, C) view: the trainer's loss head works class-major
        logits = torch.baddbmm(bo.unsqueeze(2), Wo, h.transpose(1, 2)).transpose(1, 2)
        return logits, (saved, h, p, (lo, hi))

    def backward(self, P, G, ctx, dlogits, seeds_again) -> None:
        """Write parameter gradients into the views ``G`` given ``dlogits`` (M, B, C)."""
        saved, h, p, (lo, hi) = ctx
        torch.bmm(dlogits.transpose(1, 2), h, out=G[-2])  # (M, C, H)
        torch.sum(dlogits, 1, out=G[-1])
        gh = torch.bmm(dlogits, P[-2])  # (M, B, H)
        fused = self.fused and _fusable(gh)
        for i in reversed(range(self.n_hidden)):
            h_in, z, a, key = saved[i]  # (fused: key is the pass's dropout arguments)
            if fused:  # the regenerated mask, ReLU's gradient and the bias gradient in one pass
                gz = torch.empty_like(gh)
                _fused.relu_backward(gh.numpy(), z.numpy(), gz.numpy(), G[2 * i + 1].numpy(), *key)
                torch.bmm(gz.transpose(1, 2), h_in, out=G[2 * i])  # (M, H, in)
                if i > 0:
                    gh = gh.baddbmm_(gz, P[2 * i]) if self.skips[i] else torch.bmm(gz, P[2 * i])
                continue
            if key is not None:  # the same mask, regenerated from its seed
                dropout(gh[lo:hi], p[lo:hi], inplace=True, generator=seeds_again(key))
            if self.act == "relu":
                gz = torch.ops.aten.threshold_backward(gh, z, 0)
            elif self.act == "tanh":
                gz = torch.ops.aten.tanh_backward(gh, a)
            elif self.act == "sigmoid":
                gz = torch.ops.aten.sigmoid_backward(gh, a)
            else:
                gz = torch.ops.aten.gelu_backward(gh, z)
            W = P[2 * i]
            torch.bmm(gz.transpose(1, 2), h_in, out=G[2 * i])  # (M, H, in)
            torch.sum(gz, 1, out=G[2 * i + 1])
            if i > 0:  # grad of h_in: through the layer, plus the skip connection
                gh = gh.baddbmm_(gz, W) if self.skips[i] else torch.bmm(gz, W)  # (M, B, in), the skip's in place
