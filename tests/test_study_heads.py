"""The stacked trainer's numba loss heads == the torch formulas they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numba import njit

from regulab.study._heads import eval_head, exp_nonpos, log_pos, train_head


def _elementwise(f):
    @njit
    def run(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = f(x[i])
        return out
    return run


_exp_all, _log_all = _elementwise(exp_nonpos), _elementwise(log_pos)


def test_exp_within_1_5_ulp_and_its_special_values():
    x = np.linspace(-87, 0, 3_000_001, dtype=np.float32)
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(_exp_all(x) - exact) / np.spacing(exact.astype(np.float32))
    assert ulps.max() < 1.5
    got = _exp_all(np.array([0.0, -0.0, -87.5, -100.0, -np.inf, np.nan], np.float32))
    assert got[0] == got[1] == 1.0 and (got[2:5] == 0).all() and np.isnan(got[5])


def test_log_within_1_ulp_on_sums_of_exps_and_its_special_values():
    s = np.linspace(1, 10_000, 3_000_001, dtype=np.float32)  # Σ_c exp(x_c − max) lies in [1, C]
    exact = np.log(s.astype(np.float64))
    ulp = np.maximum(np.spacing(exact.astype(np.float32)), 2.0**-23)  # (that of 1 below ln s = 1)
    assert (np.abs(_log_all(s) - exact) / ulp).max() <= 1.0
    got = _log_all(np.array([1.0, 2.0, np.inf, np.nan], np.float32))
    assert got[0] == 0 and abs(got[1] - np.log(2)) < 1e-7 and got[2] == np.inf and np.isnan(got[3])


def _reference_train(lt, y, eps):
    """The torch formulas of the soft-target path: (M, C, b) logits, (M, b) labels, (M,) ε."""
    M, C, b = lt.shape
    t = torch.zeros(M, C, b).scatter_(1, y.long().unsqueeze(1), 1.0)
    t = t * (1 - eps.view(M, 1, 1)) + eps.view(M, 1, 1) / C
    lp = torch.log_softmax(lt, 1)
    return -(t * lp).sum(1).mean(-1), (lp.exp() - t) / b


def _train(lt, y, eps):
    M, C, b = lt.shape
    loss, grad = np.empty(M, np.float32), np.empty((M, C, b), np.float32)
    train_head(lt.numpy(), y.numpy(), eps.numpy(), loss, grad)
    return torch.from_numpy(loss), torch.from_numpy(grad)


@pytest.mark.parametrize("shape", [(3, 10, 100), (5, 7, 37), (2, 2, 1), (1, 1000, 9)])
def test_train_head_matches_torch(shape):
    M, C, b = shape
    g = torch.Generator().manual_seed(sum(shape))
    lt = torch.randn(M, C, b, generator=g) * torch.tensor([1.0, 30.0, 0.01, 5.0, 80.0])[:M].view(M, 1, 1)
    y = torch.randint(0, C, (M, b), generator=g, dtype=torch.int32)
    eps = torch.tensor([0.0, 0.1, 0.0, 0.3, 1.0])[:M]
    loss, grad = _train(lt, y, eps)
    ref_loss, ref_grad = _reference_train(lt, y, eps)
    torch.testing.assert_close(loss, ref_loss, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=2e-5, atol=1e-7)


def test_train_head_non_finite_logits():
    lt = torch.randn(3, 4, 8)
    y = torch.zeros(3, 8, dtype=torch.int32)
    lt[0, 2, 3] = float("nan")  # member 0: a NaN makes its loss NaN (as torch's)
    lt[1, 1, 5] = float("inf")  # member 1: so does +inf
    lt[2, 3, :] = float("-inf")  # member 2: a class that can never win is no harm
    loss, grad = _train(lt, y, torch.zeros(3))
    assert torch.isnan(loss[:2]).all() and torch.isnan(grad[0, :, 3]).all()
    torch.testing.assert_close(grad[0, :, :3], _reference_train(lt, y, torch.zeros(3))[1][0, :, :3])
    ce = F.cross_entropy(lt[2].t(), y[2].long())
    torch.testing.assert_close(loss[2], ce)
    assert (grad[2, 3] == 0).all() and torch.isfinite(grad[2]).all()


def _reference_eval(lt, y):
    lp = torch.log_softmax(lt, 1)
    loss = -lp.gather(1, y.long().view(1, 1, -1).expand(lt.shape[0], 1, -1)).sum((1, 2))
    return loss, (lt.transpose(1, 2).argmax(-1) == y).sum(1).float()


def test_eval_head_matches_torch_ties_and_nans_included():
    g = torch.Generator().manual_seed(3)
    M, C, n = 4, 10, 300
    lt = torch.randint(-2, 3, (M, C, n), generator=g).float()  # many ties: the first maximum counts
    lt[1] = torch.randn(C, n, generator=g) * 40
    lt[2, 4, 7] = float("nan")  # torch.argmax: a NaN is the maximum, the first NaN wins
    lt[2, 1, 9], lt[2, 6, 9] = float("nan"), float("nan")
    lt[3, :, 11] = float("-inf")
    lt[3, 2, 12] = float("inf")
    y = torch.randint(0, C, (n,), generator=g, dtype=torch.int32)
    y[7], y[9], y[11] = 4, 1, 0
    loss, correct = np.zeros(M, np.float32), np.zeros(M, np.float32)
    for i in range(0, n, 128):  # chunks add up
        eval_head(lt[:, :, i:i + 128].contiguous().numpy(), y[i:i + 128].numpy(), loss, correct)
    ref_loss, ref_correct = _reference_eval(lt, y)
    assert torch.equal(torch.from_numpy(correct), ref_correct)
    assert correct[2] >= 2  # the NaN columns 7 and 9 count as correct, as torch.argmax has it
    torch.testing.assert_close(torch.from_numpy(loss[:2]), ref_loss[:2], rtol=2e-6, atol=1e-4)
    assert np.isnan(loss[2:]).all() and torch.isnan(ref_loss[2:]).all()
