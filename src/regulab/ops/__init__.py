"""Functional core: the dropout family as pure functions with autograd.

Each op draws one seed per call, regenerates its mask from that seed in
backward, and runs a numba kernel on CPU float32/float64 (a torch reference
implementation elsewhere).
"""
from .dropout import dropout

__all__ = ["dropout"]
