"""Functional core: the dropout family as pure functions with autograd.

Each op draws one seed per call, regenerates its mask from that seed in
backward, and runs a numba kernel on CPU float32/float64 (a torch reference
implementation elsewhere).
"""
from .dropout import dropout
# the dropout family (issue 3), all on the same seeded counter-based bits
from .alpha import alpha_dropout, feature_alpha_dropout
from .channel import dropout1d, dropout2d, dropout3d
from .concrete import concrete_dropout, concrete_regularizer
from .dropblock import drop_block2d
from .dropconnect import drop_connect_linear
from .droppath import drop_path, drop_path_rates
from .gaussian import gaussian_dropout, gaussian_noise
from .rdrop import rdrop, rdrop_kl, rdrop_loss
from .shared import embedding_dropout, locked_dropout, shared_dropout

__all__ = ["dropout",
           "shared_dropout", "dropout1d", "dropout2d", "dropout3d", "locked_dropout", "embedding_dropout",
           "drop_path", "drop_path_rates", "alpha_dropout", "feature_alpha_dropout",
           "gaussian_dropout", "gaussian_noise", "drop_block2d", "drop_connect_linear",
           "concrete_dropout", "concrete_regularizer", "rdrop", "rdrop_kl", "rdrop_loss"]
