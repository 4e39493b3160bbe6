"""Broken model factories for the bad-input corpus (never collected as tests)."""
import torch
from torch import nn

CONSTANT = 3  # not callable


def boom(num_classes=10, input_shape=None):
    raise RuntimeError("factory exploded")


def not_a_module(num_classes=10, input_shape=None):
    return 42


def returns_none(num_classes=10, input_shape=None):
    return None


def returns_the_class(num_classes=10, input_shape=None):
    return nn.Linear  # the class, not an instance


def wrong_width(num_classes=10, input_shape=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))  # digits has 10 classes


def wrong_input(num_classes=10, input_shape=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(13, num_classes))  # digits has 64 features


class _Pair(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.lin = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.lin(x), x


def tuple_output(num_classes=10, input_shape=None):
    return _Pair(num_classes)


def needs_an_argument(depth, num_classes=10):
    return nn.Linear(64, num_classes)


def forward_raises(num_classes=10, input_shape=None):
    class M(nn.Module):
        def forward(self, x):
            raise ValueError("forward is broken")
    return M()


def ok(num_classes=10, input_shape=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


__all__ = ["torch"]
