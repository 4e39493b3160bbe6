"""The stacked trainer's one-pass L2 and max-norm == the library's regularizers on the same weights."""
from __future__ import annotations

import numpy as np
import torch

from regulab.models import FlatParams, MLP, seeded_module
from regulab.regularizers import l2_penalty, max_norm_
from regulab.study._flat_regs import l2_value_and_grad, max_norm_rows


def _setup(M=6):
    mods = [seeded_module(lambda: MLP(12, [9, 9], 4), s) for s in range(M)]
    fl = FlatParams.from_modules(mods)
    with torch.no_grad():
        fl.flat.mul_(torch.rand_like(fl.flat) * 8)  # norms well above and below the caps
    wb = [b for b in fl.blocks if b.is_weight]
    blocks = (np.array([b.offset for b in wb], np.int64), np.array([b.shape[0] for b in wb], np.int64),
              np.array([b.numel_member // b.shape[0] for b in wb], np.int64))
    W = [v for b, v in zip(fl.blocks, fl.views()) if b.is_weight]
    return fl, blocks, W


def test_l2_value_and_gradient_match_l2_penalty():
    fl, blocks, W = _setup()
    lo, hi = 1, 5
    l2 = torch.tensor([1e-3, 0.0, 0.5, 2.0])
    grad = torch.randn_like(fl.flat)
    want_grad = grad.clone()
    for b, g in zip(fl.blocks, fl.views(want_grad)):
        if b.is_weight:
            w = dict(zip([x.name for x in fl.blocks], fl.views()))[b.name][lo:hi]
            g[lo:hi].addcmul_(w, fl.member_scale(2 * l2, w))
    want = l2_penalty([w[lo:hi] for w in W], l2)
    got = l2_value_and_grad(fl.flat.numpy(), grad.numpy(), blocks, lo, l2.numpy())
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, want_grad, rtol=1e-6, atol=1e-9)  # addcmul_ may fuse the multiply-add


def test_max_norm_rows_matches_max_norm_():
    fl, blocks, W = _setup()
    lo, hi = 2, 6
    c = torch.tensor([0.5, 1.0, 1e30, 3.0])
    want = fl.flat.clone()
    Wr = [v for b, v in zip(fl.blocks, fl.views(want)) if b.is_weight]
    changed = sum(bool((torch.linalg.vector_norm(w[lo:hi], dim=2) > c.view(-1, 1)).any()) for w in Wr)
    assert changed == len(Wr)  # the test exercises the rescaling in every block
    for w in Wr:
        max_norm_(w[lo:hi], c, stacked=True)
    max_norm_rows(fl.flat.numpy(), blocks, lo, c.numpy())
    torch.testing.assert_close(fl.flat, want, rtol=2e-7, atol=1e-7)
    assert torch.equal(fl.flat[: blocks[0][0]], want[: blocks[0][0]])
