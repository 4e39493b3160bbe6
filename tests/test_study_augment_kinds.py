"""Augmentation ops must fit the data's kind; 'auto' picks the standard pair per kind."""
import pytest
import torch

from regulab.errors import SpecError
from regulab.study.augment import apply_augment, check_ops


def test_auto_augments_images_and_signals():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 16, 1, 8, 8)  # (M, B, C, H, W)
    sig = torch.randn(2, 16, 40)  # (M, B, L)
    for x in (img, sig):
        y = apply_augment(x, [[], ["auto"]], g)
        assert y.shape == x.shape and torch.equal(y[0], x[0]) and not torch.equal(y[1], x[1])


@pytest.mark.parametrize("shape, bad", [((1, 8, 8), "shift"), ((1, 8, 8), "time_mask"), ((40,), "crop"), ((40,), "flip")])
def test_ops_of_the_wrong_kind_are_refused(shape, bad):
    with pytest.raises(SpecError, match=rf"^spec.arms.aug.augment.1: must be one of auto, .* got '{bad}'"):
        check_ops("aug", ["auto", bad], shape, "data")


def test_preflight_refuses_signal_ops_on_images(tmp_path, capsys):
    from regulab.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text('epochs = 1\nseeds = 1\n[dataset]\nname = "digits"\n[model]\nkind = "cnn2d"\n'
                    '[arms.a]\naugment = ["shift"]\n')
    assert main(["study", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "spec.arms.a.augment.0: must be one of auto, crop, flip, translate, cutout for image inputs" in err
    assert not (tmp_path / "out").exists()
