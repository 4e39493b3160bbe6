"""Plan: expand a spec's arms and sweeps into runs, and runs into training groups.

A *run* is one arm at one seed; a *group* is the runs that train together as one
stacked model (same architecture, data and batch size). Run ids, names and the
grouping depend on the spec alone, so every executor trains the same groups.

Examples:
    >>> from regulab.study.spec import parse_spec
    >>> spec = parse_spec({"seeds": 2, "arms": {"baseline": {}, "dropout": {"p": 0.5}},
    ...                    "sweep": [{"arm": "dropout", "p": [0.1, 0.3]}]})
    >>> runs = expand(spec)
    >>> [r.name for r in runs]
    ['baseline/seed=0', 'baseline/seed=1', 'dropout p=0.1/seed=0', 'dropout p=0.1/seed=1', 'dropout p=0.3/seed=0', 'dropout p=0.3/seed=1']
    >>> runs[2].sweep, runs[2].arm_cfg["p"]
    ({'p': 0.1}, 0.1)
    >>> [len(g.runs) for g in group_runs(runs)]
    [6]
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from ..errors import SpecError
from .spec import Arm, Spec, _message

__all__ = ["Run", "Group", "expand", "group_runs", "plan"]


@dataclass
class Run:
    run_id: int
    name: str
    arm: str
    base_arm: str
    seed: int
    n_train: int | None
    arm_cfg: dict
    sweep: dict
    config: dict = field(default_factory=dict)

    def row(self, group_key: str) -> dict:
        return dict(run_id=self.run_id, name=self.name, arm=self.arm, base_arm=self.base_arm, seed=self.seed,
                    group_key=group_key, config=self.config, sweep=self.sweep)


@dataclass
class Group:
    key: str
    runs: list[Run]
    stacked: bool

    @property
    def n_train(self) -> int | None:
        return self.runs[0].n_train


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _arm_variants(spec: Spec, name: str, arm: Arm):
    """Yield (arm name, arm dict, sweep dict, n_train) for one arm after sweep expansion."""
    grids: list[tuple[int, str, list]] = []
    for i, sw in enumerate(spec.sweep):
        if sw.arm not in (None, name):
            continue
        for k, vals in sw.model_dump(exclude={"arm"}, exclude_none=True).items():
            grids.append((i, k, vals))
    base = arm.model_dump()
    if not grids:
        yield name, base, {}, spec.dataset.n_train
        return
    for combo in itertools.product(*[[(i, k, v) for v in vals] for i, k, vals in grids]):
        cfg, sweep, n_train = dict(base), {}, spec.dataset.n_train
        for i, k, v in combo:
            sweep[k] = v
            if k == "n_train":
                n_train = v
            else:
                cfg[k] = v
        try:
            cfg = Arm.model_validate(cfg).model_dump()
        except ValidationError as e:
            err = dict(e.errors(include_url=False)[0])
            key = str(err["loc"][0]) if err["loc"] else ""
            i = next(i for i, k, _ in combo if k == key) if key in sweep else combo[0][0]
            err["loc"] = ("sweep", i, *err["loc"])
            raise SpecError(_message(err)) from None
        label = " ".join(f"{k}={_fmt(v)}" for k, v in sweep.items())
        yield f"{name} {label}", cfg, sweep, n_train


def expand(spec: Spec) -> list[Run]:
    """All runs of a spec, in a stable order (arms as written, then seeds)."""
    runs: list[Run] = []
    shared = spec.model_dump(mode="json", include={"dataset", "model", "optimizer", "epochs", "batch_size",
                                                   "selection"})
    seen: set[str] = set()
    for name, arm in spec.arms.items():
        for arm_name, cfg, sweep, n_train in _arm_variants(spec, name, arm):
            if arm_name in seen:
                raise SpecError(f"spec.arms: arm names must be unique after sweep expansion, got {arm_name!r} twice")
            seen.add(arm_name)
            for seed in range(spec.seeds):
                config = {**shared, "arm": cfg, "seed": seed, "n_train": n_train, "sweep": sweep}
                config["dataset"] = {**config["dataset"], "n_train": n_train}
                runs.append(Run(len(runs) + 1, f"{arm_name}/seed={seed}", arm_name, name, seed, n_train,
                                cfg, sweep, config))
    return runs


def group_runs(runs: list[Run], *, stacked: bool = True, max_members: int = 64) -> list[Group]:
    """Runs that share data (n_train) train together, at most ``max_members`` per group."""
    by_data: dict = {}
    for r in runs:
        by_data.setdefault(r.n_train, []).append(r)
    groups = []
    for n_train, rs in by_data.items():
        size = max_members if stacked else 1
        for i in range(0, len(rs), size):
            chunk = rs[i:i + size]
            ident = json.dumps([n_train, [r.run_id for r in chunk], stacked])
            key = "g" + hashlib.sha256(ident.encode()).hexdigest()[:12]
            groups.append(Group(key, chunk, stacked))
    return groups


def plan(spec: Spec, *, max_members: int = 64) -> list[Group]:
    """Groups of runs for a spec (per-run groups for user factory models)."""
    return group_runs(expand(spec), stacked=not spec.model.is_factory, max_members=max_members)
