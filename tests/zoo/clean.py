"""Models that use dropout correctly: the doctor must report no error or warning. ``CLEAN[name] = input_shape``."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

import regulab

if __package__:
    from .blocks import Attention, ResNet, ViT, ViTBlock, mlp
else:  # loaded by file path (`regulab doctor tests/zoo/clean.py:factory`): no package context
    import importlib.util
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("_zoo_blocks", Path(__file__).with_name("blocks.py"))
    _blocks = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_blocks)
    Attention, ResNet, ViT, ViTBlock, mlp = (_blocks.Attention, _blocks.ResNet, _blocks.ViT, _blocks.ViTBlock, _blocks.mlp)

IMG = (64, 1, 40)
VEC = (64, 40)


class _GatedFunctional(nn.Module):
    def __init__(self, p=0.3):
        super().__init__()
        self.fc, self.p = nn.Linear(40, 32), p

    def forward(self, x):
        return F.dropout(F.relu(self.fc(x)), self.p, self.training)


class _MHABlock(ViTBlock):
    def __init__(self, d):
        super().__init__(d, attn=nn.MultiheadAttention(d, 2, dropout=0.2, batch_first=True))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class _DropPathBlock(ViTBlock):
    """timm-style block: stochastic depth (regulab.nn.DropPath) on both residual branches."""

    def __init__(self, d):
        super().__init__(d)
        self.drop_path = regulab.nn.DropPath(0.2)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.ln1(x)))
        return x + self.drop_path(self.mlp(self.ln2(x)))


def mlp_torch_dropout():
    return nn.Sequential(nn.Dropout(0.2), mlp(nn.ReLU(), nn.Dropout(0.5)))


def mlp_regulab_dropout():
    return mlp(nn.ReLU(), regulab.nn.Dropout(0.5))


def mlp_functional_self_training():
    return nn.Sequential(_GatedFunctional(), nn.Linear(32, 10))


def mlp_batchnorm_then_dropout():
    return nn.Sequential(nn.Linear(40, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))


def resnet_dropout_after_last_bn():
    return ResNet()


def vit_sdpa_gated():
    return ViT(block=lambda d: ViTBlock(d, attn=Attention(d, p=0.1)))


def vit_multihead_attention():
    return ViT(block=_MHABlock)


def vit_drop_path():
    return ViT(block=_DropPathBlock)


def plain_mlp():
    return mlp(nn.ReLU())


CLEAN = {
    "mlp_torch_dropout": VEC,
    "mlp_regulab_dropout": VEC,
    "mlp_functional_self_training": VEC,
    "mlp_batchnorm_then_dropout": VEC,
    "resnet_dropout_after_last_bn": IMG,
    "vit_sdpa_gated": IMG,
    "vit_multihead_attention": IMG,
    "vit_drop_path": IMG,
    "plain_mlp": VEC,
}
