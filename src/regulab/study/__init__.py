"""The study engine: spec -> plan -> executor -> trainer -> store.

``regulab.Study(spec).run()`` runs a study; ``regulab.study.store.open_results``
reads one back.
"""
from __future__ import annotations

__all__ = ["Study", "open_results"]


def __getattr__(name: str):
    # lazy: importing regulab.study must not import torch or ray
    if name == "Study":
        from .api import Study

        return Study
    if name == "open_results":
        from .store import open_results

        return open_results
    raise AttributeError(name)
