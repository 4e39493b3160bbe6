"""Drop-in ``torch.nn`` modules for the dropout family; each ``forward`` is one call into :mod:`regulab.ops`."""
from .base import DropoutBase, is_dropout_module
from .dropout import Dropout

__all__ = ["DropoutBase", "is_dropout_module", "Dropout"]
