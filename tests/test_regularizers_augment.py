"""Augmentation and mixing: exact invariants, training-only, reproducible from the seed, per-sample draws."""
from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from regulab.regularizers import (
    AUGMENTATIONS,
    Augment,
    additive_noise,
    cutmix,
    cutout,
    horizontal_flip,
    mixup,
    random_crop,
    random_scale,
    random_shift,
    random_translate,
    time_mask,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SIGNAL = torch.randn(64, 2, 30, generator=gen(99))
IMAGE = torch.randn(64, 3, 8, 10, generator=gen(98))
OPS = [
    (partial(random_shift, max_shift=5), SIGNAL),
    (partial(random_scale, low=0.5, high=1.5), SIGNAL),
    (partial(additive_noise, sigma=0.1), SIGNAL),
    (partial(time_mask, max_width=6), SIGNAL),
    (partial(random_crop, padding=2), IMAGE),
    (partial(horizontal_flip, p=0.5), IMAGE),
    (partial(random_translate, max_shift=0.25), IMAGE),
    (partial(cutout, size=3), IMAGE),
]


@pytest.mark.parametrize("op,x", OPS, ids=[o.func.__name__ for o, _ in OPS])
def test_training_only_and_reproducible_from_seed(op, x):
    assert op(x, training=False, generator=gen(0)) is x
    a, b, c = op(x, generator=gen(0)), op(x, generator=gen(0)), op(x, generator=gen(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    torch.manual_seed(5)
    d = op(x)
    torch.manual_seed(5)
    assert torch.equal(d, op(x))  # default generator: torch.manual_seed reproduces


def test_registry_short_names_cover_the_ops():
    assert {o.func for o, _ in OPS} == set(AUGMENTATIONS.values())


def test_random_shift_is_a_per_sample_roll_shared_over_channels():
    y = random_shift(SIGNAL, 5, generator=gen(0))
    shifts = []
    for b in range(len(y)):
        s = [k for k in range(-5, 6) if torch.equal(y[b], torch.roll(SIGNAL[b], k, dims=-1))]
        assert len(s) == 1
        shifts.append(s[0])
    assert len(set(shifts)) == 11  # every shift in [-5, 5] drawn across 64 samples
    y2 = random_shift(SIGNAL[:, 0], 5, generator=gen(0))  # (B, L) layout, same draws
    assert torch.equal(y2, y[:, 0])


def test_random_scale_one_factor_per_sample_in_range():
    x = SIGNAL.abs() + 0.1
    ratio = random_scale(x, 0.5, 1.5, generator=gen(0)) / x
    per_sample = ratio[:, :1, :1]
    assert torch.allclose(ratio, per_sample.expand_as(ratio), rtol=1e-6)
    assert (per_sample >= 0.5).all() and (per_sample <= 1.5).all() and per_sample.unique().numel() == 64
    with pytest.raises(ValueError, match=r"random_scale: high must be a number >= low \(2.0\), got 1.0"):
        random_scale(x, 2.0, 1.0)


def test_time_mask_is_one_window_per_sample_shared_over_channels():
    x = SIGNAL.abs() + 1.0
    y = time_mask(x, 6, generator=gen(0))
    masked = y == 0
    assert torch.equal(masked[:, 0], masked[:, 1])
    assert torch.equal(y[~masked], x[~masked])
    widths = masked[:, 0].sum(1)
    assert (widths <= 6).all() and widths.unique().numel() > 3
    for row in masked[:, 0]:
        idx = row.nonzero().flatten()
        if idx.numel():
            assert idx[-1] - idx[0] + 1 == idx.numel()  # contiguous


def test_random_crop_is_a_window_of_the_padded_image():
    y = random_crop(IMAGE, 2, generator=gen(0))
    padded = F.pad(IMAGE, (2, 2, 2, 2))
    offsets = set()
    for b in range(len(y)):
        hits = [(i, j) for i in range(5) for j in range(5) if torch.equal(y[b], padded[b, :, i:i + 8, j:j + 10])]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 10
    reflect = random_crop(IMAGE, 2, padding_mode="reflect", generator=gen(0))
    assert (reflect != 0).all()


def test_random_translate_is_a_zero_filled_integer_shift():
    y = random_translate(IMAGE, 0.25, generator=gen(0))  # |dy| <= 2, |dx| <= 2
    padded = F.pad(IMAGE, (2, 2, 2, 2))
    for b in range(len(y)):
        assert any(torch.equal(y[b], padded[b, :, i:i + 8, j:j + 10]) for i in range(5) for j in range(5))
    assert random_translate(IMAGE, 0.05) is IMAGE  # no whole-pixel shift possible


def test_horizontal_flip_per_sample_with_probability_p():
    x = torch.randn(2000, 1, 2, 3, generator=gen(3))
    y = horizontal_flip(x, 0.3, generator=gen(0))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert (flipped ^ same).all()
    assert flipped.float().mean().item() == pytest.approx(0.3, abs=0.04)  # 2000 draws: sd ~0.01
    assert torch.equal(horizontal_flip(x, 1.0), x.flip(-1))


def test_cutout_zeroes_one_clipped_square():
    x = IMAGE.abs() + 1.0
    y = cutout(x, 3, generator=gen(0))
    hole = y == 0
    assert torch.equal(hole[:, 0], hole[:, 2])
    assert torch.equal(y[~hole], x[~hole])
    for h in hole[:, 0]:
        rows, cols = h.any(1).nonzero().flatten(), h.any(0).nonzero().flatten()
        assert 1 <= rows.numel() <= 3 and 1 <= cols.numel() <= 3
        assert h.sum() == rows.numel() * cols.numel()  # a rectangle (square clipped at the border)


def test_mixup_mixes_inputs_and_targets_consistently():
    x = torch.randn(32, 5, generator=gen(0))
    y = torch.arange(32)
    out = mixup(x, y, 0.4, generator=gen(1))
    perm = out.targets_b
    assert sorted(perm.tolist()) == list(range(32)) and torch.equal(out.targets_a, y)
    lam = out.lam.item()
    assert torch.allclose(out.inputs, lam * x + (1 - lam) * x[perm], atol=1e-6)
    soft = out.soft_targets(32)
    assert torch.allclose(soft.sum(1), torch.ones(32))
    assert torch.allclose(soft[torch.arange(32), y], torch.where(perm == y, 1.0, lam).float(), atol=1e-6)
    again = mixup(x, y, 0.4, generator=gen(1))
    assert torch.equal(again.inputs, out.inputs) and torch.equal(again.lam, out.lam)
    per = mixup(x, y, 0.4, per_sample=True, generator=gen(1))
    assert per.lam.shape == (32,) and per.lam.unique().numel() == 32
    assert torch.allclose(per.inputs, per.lam[:, None].float() * x + (1 - per.lam[:, None].float()) * x[per.targets_b],
                          atol=1e-6)
    ident = mixup(x, y, 0.4, training=False)
    assert ident.inputs is x and ident.lam.item() == 1.0


def test_mixup_lambda_follows_beta():
    lams = torch.stack([mixup(torch.zeros(2, 1), torch.arange(2), 0.5, generator=gen(s)).lam for s in range(2000)])
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(0.125, abs=0.015)  # Beta(.5,.5) variance 1/8


def test_cutmix_lambda_is_exact_kept_area_and_soft_targets_mix():
    x = torch.arange(16.0).repeat_interleave(3 * 8 * 8).reshape(16, 3, 8, 8)  # image b is constant b
    y = torch.arange(16)
    for per_sample in (False, True):
        out = cutmix(x, y, 1.0, per_sample=per_sample, generator=gen(2))
        kept = (out.inputs == x).float().mean((1, 2, 3))
        lam = out.lam.expand(16).float()
        moved = out.targets_b != y
        assert torch.allclose(kept[moved], lam[moved], atol=1e-6)
        assert torch.equal(out.inputs[out.inputs != x], x[out.targets_b][out.inputs != x])
        soft = out.soft_targets(16)
        assert torch.allclose(soft.sum(1), torch.ones(16))
    assert out.lam.shape == (16,)
    assert cutmix(x, y, training=False).inputs is x
    with pytest.raises(ValueError, match="cutmix: x must be a"):
        cutmix(torch.zeros(4, 5), torch.arange(4))
    with pytest.raises(ValueError, match="MixResult.soft_targets: num_classes must be an integer >= 1, got None"):
        out.soft_targets()


def test_augment_pipeline_training_only_and_seeded():
    aug = Augment(partial(random_shift, max_shift=3), partial(time_mask, max_width=4), generator=gen(0))
    a = aug(SIGNAL)
    aug.generator = gen(0)
    assert torch.equal(aug(SIGNAL), a) and not torch.equal(a, SIGNAL)
    assert aug.eval()(SIGNAL) is SIGNAL
    assert "random_shift" in repr(aug)
