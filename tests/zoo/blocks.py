"""Shared building blocks for the zoo: ResNet-, ViT- and MLP-style pieces, written correctly."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + skip (ResNet basic block, 1-D to stay cheap)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c)
        self.conv2 = nn.Conv1d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class ResNet(nn.Module):
    """Input (N, 1, 40) → stem conv+BN → 2 blocks → pool → dropout → Linear: dropout after the last BN."""

    def __init__(self, c: int = 8, classes: int = 10, head_dropout: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, c, 3, padding=1, bias=False), nn.BatchNorm1d(c), nn.ReLU())
        self.blocks = nn.Sequential(ResBlock(c), ResBlock(c))
        self.drop = head_dropout if head_dropout is not None else nn.Dropout(0.3)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = self.blocks(self.stem(x)).mean(-1)  # (N, C)
        return self.fc(self.drop(h))


class Attention(nn.Module):
    """Self-attention on F.scaled_dot_product_attention, dropout gated on self.training."""

    def __init__(self, d: int, heads: int = 2, p: float = 0.1) -> None:
        super().__init__()
        self.heads, self.p = heads, p
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def sdpa(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (N, H, T, D/H)
        y = self.sdpa(q, k, v).transpose(1, 2).reshape(n, t, d)  # (N, T, D)
        return self.proj(y)


class ViTBlock(nn.Module):
    """Pre-norm transformer block: LN → attention → LN → MLP with dropout."""

    def __init__(self, d: int = 16, attn: nn.Module | None = None, p: float = 0.1) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = attn if attn is not None else Attention(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(p), nn.Linear(2 * d, d))

    def forward(self, x):
        a = self.attn(self.ln1(x))
        x = x + (a[0] if isinstance(a, tuple) else a)
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    """Input (N, 1, 40) → 8 patches of 5 → 2 blocks → mean → head."""

    def __init__(self, d: int = 16, block=ViTBlock, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(5, d)
        self.pos = nn.Parameter(torch.zeros(1, 8, d))
        self.blocks = nn.Sequential(block(d), block(d))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], 8, 5)) + self.pos  # (N, 8, D)
        return self.head(self.norm(self.blocks(h)).mean(1))


def mlp(*hidden: nn.Module) -> nn.Sequential:
    """40 → 32 → 32 → 10 with the given modules after each hidden Linear."""
    return nn.Sequential(nn.Linear(40, 32), *hidden, nn.Linear(32, 10))
