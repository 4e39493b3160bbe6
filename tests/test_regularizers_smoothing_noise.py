"""Label smoothing (torch parity, per member, soft targets, confidence bound) and input noise."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from regulab.regularizers import GaussianNoise, LabelSmoothingCrossEntropy, gaussian_noise, label_smoothing_cross_entropy


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_torch_label_smoothing(eps, reduction):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    soft = torch.softmax(torch.randn(16, 7, generator=g), -1)
    for target in (y, soft):
        got = label_smoothing_cross_entropy(z, target, eps, reduction=reduction)
        want = F.cross_entropy(z, target, label_smoothing=eps, reduction=reduction)
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


def test_per_member_epsilon_and_targets():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 8, 5, generator=g)  # (M, B, C)
    eps = torch.tensor([0.0, 0.1, 0.3])
    shared = torch.randint(0, 5, (8,), generator=g)
    own = torch.randint(0, 5, (3, 8), generator=g)
    for y in (shared, own):
        loss = label_smoothing_cross_entropy(z, y, eps)
        assert loss.shape == (3,)
        ym = y.expand(3, 8)
        want = torch.stack([F.cross_entropy(z[m], ym[m], label_smoothing=float(eps[m])) for m in range(3)])
        assert torch.allclose(loss, want, atol=1e-6)
    assert label_smoothing_cross_entropy(z, own, eps, reduction="none").shape == (3, 8)
    scalar = LabelSmoothingCrossEntropy(0.2)(z, shared)
    want = torch.stack([F.cross_entropy(z[m], shared, label_smoothing=0.2) for m in range(3)])
    assert torch.allclose(scalar, want, atol=1e-6)
    soft = torch.softmax(torch.randn(8, 5, generator=g), -1)
    want = torch.stack([F.cross_entropy(z[m], soft, label_smoothing=float(eps[m])) for m in range(3)])
    assert torch.allclose(label_smoothing_cross_entropy(z, soft, eps), want, atol=1e-6)


def test_label_smoothing_bounds_confidence():
    # The minimiser of the smoothed loss is softmax = (1 − ε)·onehot + ε/C: confidence 1 − ε + ε/C.
    c, eps = 5, 0.2
    y = torch.tensor([2])
    conf = {}
    for e in (0.0, eps):
        z = torch.zeros(1, c, requires_grad=True)
        opt = torch.optim.SGD([z], lr=5.0)
        for _ in range(300):
            opt.zero_grad()
            label_smoothing_cross_entropy(z, y, e).backward()
            opt.step()
        conf[e] = torch.softmax(z.detach(), -1)[0, 2].item()
    assert conf[eps] == pytest.approx(1 - eps + eps / c, abs=1e-4)
    assert conf[0.0] > 0.99


def test_label_smoothing_shape_errors():
    with pytest.raises(ValueError, match=r"label_smoothing_cross_entropy: logits must be \(M, B, C\) with M = 2"):
        label_smoothing_cross_entropy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="label_smoothing_cross_entropy: target must be class indices"):
        label_smoothing_cross_entropy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smoothing_cross_entropy: target must be soft targets"):
        label_smoothing_cross_entropy(torch.randn(4, 3), torch.zeros(4, 2))


def test_gaussian_noise_training_only_seeded_and_scaled():
    x = torch.zeros(4, 50_000)
    assert gaussian_noise(x, 0.5, training=False) is x
    assert gaussian_noise(x, 0.0) is x
    a = gaussian_noise(x, 0.5, generator=torch.Generator().manual_seed(7))
    b = gaussian_noise(x, 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, gaussian_noise(x, 0.5, generator=torch.Generator().manual_seed(8)))
    assert a.std().item() == pytest.approx(0.5, rel=0.01)  # 200k draws: std error ~0.2%
    assert abs(a.mean().item()) < 0.01


def test_gaussian_noise_per_member_sigma_and_module():
    sigma = torch.tensor([0.0, 0.1, 1.0])
    x = torch.ones(3, 100, 200)  # (M, B, F)
    y = gaussian_noise(x, sigma, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[0], x[0])
    stds = (y - x).flatten(1).std(1)
    assert torch.allclose(stds[1:], sigma[1:], rtol=0.02)
    layer = GaussianNoise(sigma, generator=torch.Generator().manual_seed(0))
    assert torch.equal(layer(x), y)
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="gaussian_noise: input must be stacked on a leading member dim of size 3"):
        gaussian_noise(torch.ones(2, 4), sigma)


def test_gaussian_noise_is_the_ops_implementation():
    # one implementation: same generator state, same seeded counter-based noise as regulab.ops
    import regulab
    x = torch.randn(3, 40, 50)
    for sigma in (0.3, torch.tensor([0.1, 0.0, 2.0])):
        a = gaussian_noise(x, sigma, generator=torch.Generator().manual_seed(5))
        b = regulab.ops.gaussian_noise(x, sigma, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b)
    torch.manual_seed(3)
    a = gaussian_noise(x, torch.tensor([0.1, 0.2, 0.3]))
    torch.manual_seed(3)
    assert torch.equal(a, gaussian_noise(x, torch.tensor([0.1, 0.2, 0.3])))  # default generator: reproducible too


def test_gaussian_noise_per_member_gradient_and_errors():
    x = torch.randn(2, 8, requires_grad=True)
    y = gaussian_noise(x, torch.tensor([0.5, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # additive: the identity
    with pytest.raises(ValueError, match=r"gaussian_noise: sigma must be a number >= 0 \(or a 1-D tensor of them\)"):
        gaussian_noise(x, torch.tensor([0.5, -1.0]))
    with pytest.raises(ValueError, match=r"gaussian_noise: sigma must be a number >= 0 \(or a 1-D tensor of them\)"):
        gaussian_noise(x, torch.ones(2, 1))
