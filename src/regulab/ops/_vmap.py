"""``torch.func.vmap`` rules for regulab's custom ops: one call per batch element.

Under ``vmap`` a seeded op sees its seed as a batched tensor when the caller asked
for ``randomness="different"`` (each element draws its own seed, so its own mask)
and as a plain one for ``"same"`` (one seed, the same mask for every element); with
``"error"`` the seed draw itself raises. The rule runs the op once per batch element,
indexing every batched argument along its batch dim, and stacks the results, so each
element gets exactly what the op gives that element's slice and seed outside ``vmap``.

Without a rule functorch would run its generic per-sample fallback for the out-of-place
ops (printing a performance warning on every use) and could not run the in-place ones.
``torch.func.grad`` over these ops is not covered: torch's ``custom_op`` autograd does not
support functorch's grad transforms.
"""
from __future__ import annotations

import torch

__all__ = ["register_per_sample_vmap"]


def _batched(a, d) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(d, int)  # non-tensor arguments get None (or a list of them)


def _slice(args, in_dims, b: int) -> list:
    return [a.select(d, b) if _batched(a, d) else a for a, d in zip(args, in_dims)]


def register_per_sample_vmap(op, mutates: bool = False) -> None:
    """Give the ``torch.library`` custom op ``op`` a per-element vmap rule.

    ``mutates``: the op writes its first argument in place (and returns nothing);
    that argument must then carry the batch dim, as for any in-place op under vmap.
    """
    if mutates:
        def rule(info, in_dims, *args):
            if not _batched(args[0], in_dims[0]) and any(_batched(a, d) for a, d in zip(args[1:], in_dims[1:])):
                raise RuntimeError(f"vmap: {getattr(op, '_name', op)} would write batched values into an unbatched input; "
                                   "use the out-of-place op (inplace=False)")
            for b in range(info.batch_size):
                op(*_slice(args, in_dims, b))
            return None, None
    else:
        def rule(info, in_dims, *args):
            return torch.stack([op(*_slice(args, in_dims, b)) for b in range(info.batch_size)]), 0
    op.register_vmap(rule)
