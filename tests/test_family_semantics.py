"""Semantics of each dropout-family layer against torch, timm, Keras and the papers."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import regulab
from regulab import ops
from regulab.ops.dropblock import dropblock_gamma


def _run(fn, x):
    """(warning texts, output or the exception type) of fn(x, 0.5, True)."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            out = fn(x, 0.5, True)
        except (RuntimeError, ValueError, IndexError) as e:
            out = type(e)
    return [str(w.message) for w in rec], out


@pytest.mark.parametrize("ours,theirs,ranks", [
    (ops.dropout1d, F.dropout1d, range(1, 6)),
    (ops.dropout2d, F.dropout2d, range(1, 7)),
    (ops.dropout3d, F.dropout3d, range(0, 7)),
])
def test_channel_dropout_accepts_the_ranks_torch_accepts_with_its_warnings(ours, theirs, ranks):
    for d in ranks:
        x = torch.ones((4,) * d)
        w_ours, got = _run(ours, x)
        w_torch, want = _run(theirs, x)
        assert w_ours == w_torch, d  # the same warnings, word for word
        if isinstance(want, type):
            assert got is ValueError, d  # refused (house-style ValueError where torch raises)
            continue
        assert got.shape == want.shape and set(got.unique().tolist()) <= {0.0, 2.0}


def test_mask_sharing_of_channel_dropout():
    y = ops.dropout1d(torch.ones(6, 9), 0.5)  # unbatched (C, L)
    assert ((y == 0).all(1) | (y == 2).all(1)).all()
    y = ops.dropout3d(torch.ones(5, 2, 2, 2), 0.5)  # unbatched (C, D, H, W)
    assert ((y == 0).flatten(1).all(1) | (y == 2).flatten(1).all(1)).all()
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout"):
        y = ops.dropout2d(torch.ones(4, 6, 8), 0.5)  # read as (N, C, L)
    assert ((y == 0).all(2) | (y == 2).all(2)).all()


def test_dropout2d_kept_values_equal_torch_bit_for_bit():
    x = torch.randn(16, 8, 5, 5)
    for p in (0.1, 1 / 3, 0.7):
        a, b = ops.dropout2d(x, p), F.dropout2d(x, p, True)
        ka, kb = a != 0, b != 0
        assert torch.equal(a[ka & kb], b[ka & kb])


def test_inplace_variants_write_into_input():
    x = torch.ones(4, 3, 2, 2)
    y = ops.dropout2d(x, 0.5, inplace=True)
    assert y is x and set(x.unique().tolist()) <= {0.0, 2.0}
    x = torch.randn(2, 3, 4, requires_grad=True)
    h = x * 1
    ops.dropout1d(h, 0.5, inplace=True).sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_selu_self_normalisation(p):
    # seeded; N(0,1) input of 2^20: standard errors ~1e-3 (mean) and ~2e-3 (variance)
    x = torch.randn(1 << 20)
    y = ops.alpha_dropout(x, p)
    assert abs(float(y.mean())) < 0.01 and abs(float(y.var()) - 1) < 0.015
    z = ops.feature_alpha_dropout(torch.randn(4096, 256, 1), p)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.02


def test_alpha_dropout_values_equal_torch_exactly():
    x = torch.randn(50_000)
    for p in (0.1, 0.5):
        a, b = ops.alpha_dropout(x, p), F.alpha_dropout(x, p, True)
        kept_or_dropped = {float(v) for v in F.alpha_dropout(torch.zeros(1000), p, True).unique()}
        assert {float(v) for v in ops.alpha_dropout(torch.zeros(1000), p).unique()} == kept_or_dropped
        assert set(a.tolist()) & set(b.tolist())  # the same kept values x·a + b
    assert torch.equal(ops.alpha_dropout(x, 1.0), F.alpha_dropout(x, 1.0, True))  # torch: x·0
    with pytest.raises(ValueError, match="feature_alpha_dropout: input must be at least 2-D"):
        ops.feature_alpha_dropout(torch.ones(3), 0.5)


def test_gaussian_dropout_and_noise_moments():
    x = torch.full((1 << 20,), 2.0)
    for p in (0.2, 0.5):
        r = ops.gaussian_dropout(x, p) / 2  # r ~ N(1, p/(1-p)); standard errors < 1e-3
        assert abs(float(r.mean()) - 1) < 5e-3 and abs(float(r.var()) - p / (1 - p)) < 1e-2
    n = ops.gaussian_noise(x, 0.3) - 2
    assert abs(float(n.mean())) < 2e-3 and abs(float(n.std()) - 0.3) < 2e-3
    with pytest.raises(ValueError, match=r"gaussian_dropout: p must be a number in \[0, 1\)"):
        ops.gaussian_dropout(x, 1.0)
    assert ops.gaussian_dropout(x, 0.5, training=False) is x and ops.gaussian_noise(x, 1.0, training=False) is x


def test_dropblock_gamma_contiguous_blocks_and_rate():
    assert math.isclose(dropblock_gamma(0.1, 3, 10, 10), 0.1 / 9 * 100 / 64)
    x = torch.ones(64, 8, 24, 24)
    y = ops.drop_block2d(x, p=0.1, block_size=5)
    dropped = (y == 0).float()
    frac = float(dropped.mean())
    assert 0.06 < frac < 0.105  # ~p, a little less where blocks overlap (seeded)
    assert math.isclose(float(y.mean()), 1.0, rel_tol=1e-5)  # renormalised by numel/kept
    # contiguous: every dropped pixel lies in a fully dropped 5x5 window
    windows = (F.avg_pool2d(dropped, 5, 1) > 1 - 1e-6).float()  # fully dropped 5x5 windows, (N, C, 20, 20)
    covered = F.max_pool2d(F.pad(windows, (4, 4, 4, 4)), 5, 1)  # their union, (N, C, 24, 24)
    assert torch.equal(covered, dropped)
    with pytest.raises(ValueError, match="drop_block2d: block_size must be an integer >= 1"):
        ops.drop_block2d(x, 0.1, block_size=0)


def test_drop_path_per_sample_and_rates():
    y = ops.drop_path(torch.ones(64, 3, 5), 0.25, training=True)
    per = y.flatten(1)
    assert ((per == 0).all(1) | (per == 4 / 3).all(1)).all()
    y = ops.drop_path(torch.ones(64, 3), 0.5, training=True, scale_by_keep=False)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    x = torch.ones(4, 3)
    assert ops.drop_path(x, 0.5) is x  # timm default: training=False
    assert ops.drop_path_rates(0.3, 4) == [0.0, 0.1, 0.2, 0.3] and ops.drop_path_rates(0.3, 0) == []
    assert torch.allclose(torch.tensor(ops.drop_path_rates(0.2, 12), dtype=torch.float64),
                          torch.linspace(0, 0.2, 12, dtype=torch.float64))


def test_locked_dropout_shares_over_time():
    y = ops.locked_dropout(torch.ones(10, 4, 6), 0.5)
    assert (y == y[:1]).all() and (y == 0).any()
    y = ops.locked_dropout(torch.ones(4, 10, 6), 0.5, batch_first=True)
    assert (y == y[:, :1]).all()
    with pytest.raises(ValueError, match="locked_dropout: input must be at least 2-D"):
        ops.locked_dropout(torch.ones(3), 0.5)


def test_embedding_dropout_drops_words_everywhere():
    emb = nn.Embedding(30, 5, padding_idx=0)
    m = regulab.nn.EmbeddingDropout(emb, p=0.5)
    idx = torch.randint(0, 30, (8, 12))
    y = m(idx)
    for w in idx.unique():
        rows = y[idx == w]
        assert (rows == rows[:1]).all()  # one decision per word
        assert torch.equal(rows[0], torch.zeros(5)) or torch.allclose(rows[0], emb.weight[w] * 2)
    y.sum().backward()
    assert emb.weight.grad is not None
    assert torch.equal(m.eval()(idx), emb(idx))


def test_shared_dropout_noise_shape_rules():
    x = torch.ones(4, 5, 6)
    y = ops.shared_dropout(x, 0.5, noise_shape=(1, 5, None))
    assert (y == y[:1]).all()
    for bad in [(4, 5), (4, 2, 6), "abc", (4, 5, 6.0)]:
        with pytest.raises(ValueError, match="shared_dropout: noise_shape must be a sequence of 3 sizes"):
            ops.shared_dropout(x, 0.5, noise_shape=bad)


def test_drop_connect_linear_and_drop_connect():
    m = regulab.nn.DropConnectLinear(6, 4, p=0.5)
    x = torch.randn(3, 6)
    torch.manual_seed(5)
    y = m(x)
    torch.manual_seed(5)
    assert torch.equal(y, F.linear(x, ops.dropout(m.weight, 0.5), m.bias))
    lin = nn.Linear(6, 4)
    lin.load_state_dict(m.state_dict())
    assert torch.equal(m.eval()(x), lin(x))  # eval: the mean weight
    net = regulab.nn.drop_connect(nn.Linear(6, 4), p=0.5)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    with pytest.raises(ValueError, match="drop_connect: names must be parameter names of Linear"):
        regulab.nn.drop_connect(nn.Linear(2, 2), 0.5, names=("wieght",))


def test_concrete_dropout_rate_moves_in_the_expected_direction():
    # only the regulariser in the loss: deterministic
    def rate_after(**kw):
        m = regulab.nn.ConcreteDropout(nn.Linear(10, 10), p_init=0.2, **kw)
        opt = torch.optim.SGD([m.p_logit], lr=0.1)
        for _ in range(20):
            opt.zero_grad()
            m(torch.randn(4, 10))
            m.regularization_.backward()
            opt.step()
        return m.p

    assert rate_after(weight_regularizer=0.0, dropout_regularizer=1.0) > 0.3  # entropy term pushes toward 0.5
    assert rate_after(weight_regularizer=0.1, dropout_regularizer=0.0) < 0.19  # weight term pushes p down


def test_concrete_dropout_is_nearly_bernoulli_at_low_temperature():
    logit = torch.tensor(math.log(0.3 / 0.7))
    y = ops.concrete_dropout(torch.ones(100_000), logit, temperature=0.1)
    # (1 - z) < 1/2 exactly when logit + logistic noise > 0: probability p (seeded, 100k draws)
    mostly_dropped = float((y * 0.7 < 0.5).float().mean())
    assert abs(mostly_dropped - 0.3) < 0.01 and abs(float(y.mean()) - 1) < 0.02


def test_rdrop_loss_formula():
    a, b, t = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    P, Q = a.softmax(-1), b.softmax(-1)
    kl = ((P * (P / Q).log()).sum(-1).mean() + (Q * (Q / P).log()).sum(-1).mean()) / 2
    ce = (F.cross_entropy(a, t) + F.cross_entropy(b, t)) / 2
    assert torch.allclose(ops.rdrop_kl(a, b), kl, atol=1e-6)
    assert torch.allclose(ops.rdrop_loss(a, b, t, alpha=2.0), ce + 2 * kl, atol=1e-6)
    with pytest.raises(ValueError, match="rdrop_loss: alpha must be a number >= 0"):
        ops.rdrop_loss(a, b, t, alpha=-1)
