"""Drop-in ``torch.nn`` modules for the dropout family; each ``forward`` is one call into :mod:`regulab.ops`."""
from .base import DropoutBase, is_dropout_module
from .dropout import Dropout
# the dropout family (issue 3)
from .channel import AlphaDropout, Dropout1d, Dropout2d, Dropout3d, FeatureAlphaDropout
from .concrete import ConcreteDropout, concrete_regularization
from .dropconnect import DropConnectLinear, WeightDropout, drop_connect
from .noise import GaussianDropout, GaussianNoise
from .structured import DropBlock2d, DropPath, EmbeddingDropout, LockedDropout, SharedDropout

__all__ = ["DropoutBase", "is_dropout_module", "Dropout",
           "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
           "SharedDropout", "LockedDropout", "DropPath", "EmbeddingDropout", "DropBlock2d",
           "GaussianDropout", "GaussianNoise", "DropConnectLinear", "WeightDropout", "drop_connect",
           "ConcreteDropout", "concrete_regularization"]
