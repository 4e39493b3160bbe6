"""regulab's custom ops under ``torch.func`` transforms (``vmap``, ``grad``, ``jvp`` and compositions).

**grad**: torch's ``custom_op`` autograd is an old-style ``autograd.Function``, which
functorch's transforms refuse. So each differentiable op has a *twin*
(:func:`register_autograd_and_twin`): a new-style ``autograd.Function`` whose forward is the custom op,
whose ``setup_context``/``backward`` are the ones registered with it, and which has a vmap
rule. Ops, and their backward, call ``twin.call``: the twin while a transform is active,
the custom op otherwise.

**vmap**: one call per batch element. A seeded op sees its seed as a batched tensor when
the caller asked for ``randomness="different"`` (each element draws its own seed, so its
own mask) and as a plain one for ``"same"`` (one seed, the same mask for every element);
with ``"error"`` the seed draw itself raises. The rule runs the op once per batch element,
indexing every batched argument along its batch dim, and stacks the results, so each
element gets exactly what the op gives that element's slice and seed outside ``vmap``.
The twins carry this rule, and every out-of-place custom op gets it too
(:func:`register_per_sample_vmap`): concrete dropout's uniforms run without a twin, and
``torch.compile`` over a transform calls the custom ops themselves. Without a rule functorch
would run its generic per-sample fallback, printing a performance warning on every use.
In-place ops never run their in-place custom op under a transform or a dual level: they
copy the twin's out-of-place result into ``x`` (``x.requires_grad`` inside ``vmap`` says
nothing about outer levels, and forward-mode AD ignores ``no_grad``).

**jvp**: the twins' ``jvp`` is their backward applied to the tangent (every op is elementwise
and linear in its input), so ``torch.func.jvp``/``jacfwd`` work, and so do dual tensors of
``torch.autograd.forward_ad`` (inside a dual level the ops take the twins too).
"""
from __future__ import annotations

import inspect

import torch
from torch.autograd import forward_ad

__all__ = ["register_per_sample_vmap", "register_autograd_and_twin", "needs_twin", "tracks_gradient"]


def needs_twin() -> bool:
    """A ``torch.func`` transform or a forward-mode AD dual level is active.

    Even a plain captured tensor then needs the twin: functorch refuses old-style autograd
    Functions such as the custom op's anywhere inside a transform, and neither they nor the
    direct eager paths carry forward-mode tangents (``torch.autograd.forward_ad``).
    """
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


def tracks_gradient(x: torch.Tensor) -> bool:
    """A gradient or a tangent must see an op on ``x``: grad mode with ``x`` requiring grad, or
    :func:`needs_twin` (there ``x.requires_grad`` says nothing about outer levels, and forward
    AD ignores ``no_grad``). In-place ops then write a copy of the out-of-place result."""
    return needs_twin() or (torch.is_grad_enabled() and x.requires_grad)


def _batched(a, d) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(d, int)  # non-tensor arguments get None (or a list of them)


def _slice(args, in_dims, b: int) -> list:
    return [a.select(d, b) if _batched(a, d) else a for a, d in zip(args, in_dims)]


def register_per_sample_vmap(op) -> None:
    """Give the ``torch.library`` custom op ``op`` a per-element vmap rule."""
    def rule(info, in_dims, *args):
        return torch.stack([op(*_slice(args, in_dims, b)) for b in range(info.batch_size)]), 0
    op.register_vmap(rule)


class _SavedForBoth:
    """The ctx a twin hands to an op's ``setup_context``: what it saves for backward is also
    saved for forward-mode AD; attributes land on the real ctx."""

    def __init__(self, ctx) -> None:
        object.__setattr__(self, "_ctx", ctx)

    def save_for_backward(self, *tensors) -> None:
        self._ctx.save_for_backward(*tensors)
        self._ctx.save_for_forward(*tensors)

    def __setattr__(self, name, value) -> None:
        setattr(self._ctx, name, value)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def register_autograd_and_twin(op, setup_context, backward):
    """Register ``backward``/``setup_context`` as custom op ``op``'s autograd, give it a per-element
    vmap rule, and return its twin: a new-style ``autograd.Function`` computing ``op`` for
    ``torch.func`` transforms and forward-mode AD.

    A backward that applies the op again calls ``twin.call(*args)``: the twin while
    :func:`needs_twin`, else the custom op.
    Every op here is elementwise and linear in its input (``y = x·d + b``), so its Jacobian is
    diagonal and the tangent of forward-mode AD takes the gradient's form: ``jvp`` is ``backward``.
    """
    op.register_autograd(backward, setup_context=setup_context)
    register_per_sample_vmap(op)

    def forward(*args):
        return op(*args)

    # the op's own named parameters: dynamo (torch.compile over a transform) reads forward's
    # signature, and given *args it takes the first argument for ctx
    forward.__signature__ = inspect.signature(op._init_fn)

    def setup(ctx, inputs, output):
        setup_context(_SavedForBoth(ctx), inputs, output)

    def jvp(ctx, x_tangent, *other_tangents):
        t = backward(ctx, x_tangent)[0]
        return t.clone() if t is x_tangent else t  # an additive op's tangent is the input's: not its storage

    def vmap(info, in_dims, *args):
        return torch.stack([twin.apply(*_slice(args, in_dims, b)) for b in range(info.batch_size)]), 0

    twin = type(f"{getattr(op, '_name', 'op')}_functorch", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup),
        "backward": staticmethod(backward), "jvp": staticmethod(jvp), "vmap": staticmethod(vmap)})
    twin.call = staticmethod(lambda *args: (twin.apply if needs_twin() else op)(*args))
    return twin
