"""Deliberately broken models, one mistake each. ``BROKEN[name] = (input_shape, codes the doctor must report)``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import regulab

if __package__:
    from .blocks import Attention, ResBlock, ResNet, ViT, ViTBlock, mlp
else:  # loaded by file path (`regulab doctor tests/zoo/broken.py:factory`): no package context
    import importlib.util
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("_zoo_blocks", Path(__file__).with_name("blocks.py"))
    _blocks = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_blocks)
    Attention, ResBlock, ResNet, ViT, ViTBlock, mlp = (_blocks.Attention, _blocks.ResBlock, _blocks.ResNet, _blocks.ViT, _blocks.ViTBlock, _blocks.mlp)

IMG = (64, 1, 40)
VEC = (64, 40)


class _HardcodedDropout(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=True)  # bug: ignores self.training


class _DefaultTraining(nn.Module):
    def forward(self, x):
        return F.dropout(F.relu(x), 0.3)  # bug: F.dropout defaults to training=True


class _HomemadeDropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):  # bug: no `if self.training`
        mask = (torch.rand_like(x) > self.p).to(x.dtype)
        return x * mask / (1 - self.p)


class _NoisyActivation(nn.Module):
    def forward(self, x):  # bug: Gaussian noise applied in eval too
        return F.relu(x) + 0.1 * torch.randn_like(x)


class _UngatedAttention(Attention):
    def sdpa(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.p)  # bug: on in eval


class _Deaf(nn.Sequential):
    def train(self, mode=True):  # bug: never reaches the children
        self.training = mode
        return self


class _FrozenBNResNet(ResNet):
    def train(self, mode=True):  # bug: meant to freeze BN in eval, inverted
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.train(True)
        return self


class _SneakyBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(40, 32)
        self.bn = nn.BatchNorm1d(32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        self.bn.train()  # bug: flips BN back to training inside forward
        return self.out(F.relu(self.bn(self.fc(x))))


class _FunctionalBeforeBN(nn.Module):
    """ResNet block with F.dropout(x, p, self.training) right before bn2: correct call, bad place."""

    def __init__(self, c=8):
        super().__init__()
        self.block = ResBlock(c)
        self.stem = nn.Conv1d(1, c, 3, padding=1)
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        b = self.block
        h = F.relu(b.bn1(b.conv1(self.stem(x))))
        h = F.dropout(b.conv2(h), 0.5, self.training)
        return self.head(F.relu(b.bn2(h)).mean(-1))


def functional_training_true():
    return mlp(nn.ReLU(), _HardcodedDropout(0.5))


def functional_default_training():
    return mlp(_DefaultTraining())


def homemade_dropout():
    return mlp(nn.ReLU(), _HomemadeDropout(0.5))


def noisy_activation():
    return ResNet(head_dropout=_NoisyActivation())


def torch_dropout_builtin():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(nn.ReLU())

        def forward(self, x):
            return self.net(torch.dropout(x, 0.2, True))  # bug: train=True hard-coded

    return M()


def sdpa_dropout_always():
    return ViT(block=lambda d: ViTBlock(d, attn=_UngatedAttention(d, p=0.2)))


def regulab_op_hardcoded():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(40, 32), nn.Linear(32, 10)

        def forward(self, x):
            return self.b(regulab.ops.dropout(F.relu(self.a(x)), 0.5, True))  # bug

    return M()


def train_not_propagated():
    return nn.Sequential(_Deaf(nn.Linear(40, 32), nn.ReLU(), nn.Dropout(0.5)), nn.Linear(32, 10))


def batchnorm_frozen_inverted():
    return _FrozenBNResNet()


def batchnorm_flipped_in_forward():
    return _SneakyBN()


def dropout_before_batchnorm():
    return mlp(nn.Dropout(0.5), nn.BatchNorm1d(32), nn.ReLU())


def dropout2d_before_batchnorm_resnet():
    class M(ResNet):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.Dropout1d(0.3), nn.BatchNorm1d(8), nn.ReLU())

    return M()


def gaussian_dropout_before_batchnorm():
    return mlp(regulab.nn.GaussianDropout(0.3), nn.BatchNorm1d(32), nn.ReLU())


def functional_dropout_before_batchnorm():
    return _FunctionalBeforeBN()


def dropout_on_logits():
    return nn.Sequential(mlp(nn.ReLU()), regulab.nn.Dropout(0.2))


def dropout_p_one():
    return mlp(nn.ReLU(), nn.Dropout(1.0))


def dropout_p_high():
    return mlp(nn.ReLU(), nn.Dropout(0.9))


def input_dropout_high():
    return nn.Sequential(nn.Dropout(0.7), mlp(nn.ReLU()))


def nested_culprit():
    inner = nn.Sequential(nn.Linear(32, 32), nn.Sequential(nn.ReLU(), _HomemadeDropout(0.3)))
    return nn.Sequential(nn.Linear(40, 32), nn.Sequential(inner, nn.Identity()), nn.Linear(32, 10))


BROKEN = {
    "functional_training_true": (VEC, {"functional-dropout-training"}),
    "functional_default_training": (VEC, {"functional-dropout-training"}),
    "homemade_dropout": (VEC, {"random-in-eval"}),
    "noisy_activation": (IMG, {"random-in-eval"}),
    "torch_dropout_builtin": (VEC, {"functional-dropout-training"}),
    "sdpa_dropout_always": (IMG, {"attention-dropout-eval"}),
    "regulab_op_hardcoded": (VEC, {"functional-dropout-training"}),
    "train_not_propagated": (VEC, {"train-not-propagated"}),
    "batchnorm_frozen_inverted": (IMG, {"train-not-propagated"}),
    "batchnorm_flipped_in_forward": (VEC, {"batchnorm-train-mode"}),
    "dropout_before_batchnorm": (VEC, {"dropout-before-batchnorm"}),
    "dropout2d_before_batchnorm_resnet": (IMG, {"dropout-before-batchnorm"}),
    "functional_dropout_before_batchnorm": (IMG, {"dropout-before-batchnorm"}),
    "gaussian_dropout_before_batchnorm": (VEC, {"dropout-before-batchnorm"}),
    "dropout_on_logits": (VEC, {"dropout-on-logits"}),
    "dropout_p_one": (VEC, {"dropout-p-one"}),
    "dropout_p_high": (VEC, {"dropout-p-high"}),
    "input_dropout_high": (VEC, {"input-dropout-high"}),
    "nested_culprit": (VEC, {"random-in-eval"}),
}
