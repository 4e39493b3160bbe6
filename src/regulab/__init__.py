"""regulab: dropout and the other regularizers, correct, fast and measured."""
from __future__ import annotations

__version__ = "0.1.0"

from . import errors, nn, ops  # noqa: E402
from .errors import DatasetError, RegulabError, SpecError, StudyError  # noqa: E402
from . import schedules  # noqa: E402
from .mc import mc_dropout, mc_predict  # noqa: E402

__all__ = ["__version__", "errors", "nn", "ops", "RegulabError", "SpecError", "DatasetError", "StudyError",
           "mc_dropout", "mc_predict", "schedules"]


def __getattr__(name: str):
    # regulab.Study is imported lazily (the study engine pulls in pydantic, sqlite, safetensors)
    if name == "Study":
        from .study.api import Study

        return Study
    raise AttributeError(f"module 'regulab' has no attribute {name!r}")
