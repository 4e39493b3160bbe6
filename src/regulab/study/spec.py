"""Study spec: TOML -> validated pydantic models, errors in house style.

A spec names the data, the model, the optimizer and a set of *arms* (regularizer
settings); ``sweep`` tables expand arms over grids. See ``examples/study.toml``.

Examples:
    >>> spec = parse_spec({"epochs": 2, "arms": {"dropout": {"p": 0.3}}})
    >>> spec.model.kind, spec.arms["dropout"].p
    ('mlp', 0.3)
    >>> parse_spec({"arms": {"dropout": {"p": 1.5}}})
    Traceback (most recent call last):
    ...
    regulab.errors.SpecError: spec.arms.dropout.p: must be a number in [0, 1), got 1.5
    >>> parse_spec({"arms": {"dropout": {"pp": 0.5}}})
    Traceback (most recent call last):
    ...
    regulab.errors.SpecError: spec.arms.dropout: unknown key 'pp'; did you mean 'p'?
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._validate import NONNEG, NONNEG_INT, POS_INT, POSITIVE, Interval, OneOf
from ..errors import SpecError, did_you_mean

__all__ = ["Spec", "Arm", "EarlyStopping", "parse_spec", "load_spec", "spec_hash", "DEFAULT_SPEC"]

_PROB_OPEN = Interval(0.0, 1.0, "left")


def _c(constraint):
    def f(v):
        if not constraint.contains(v):
            raise ValueError(f"must be {constraint}")
        return v

    return AfterValidator(f)


Prob = Annotated[float, _c(_PROB_OPEN)]
NonNeg = Annotated[float, _c(NONNEG)]
Pos = Annotated[float, _c(POSITIVE)]
PosInt = Annotated[int, _c(POS_INT)]
NonNegInt = Annotated[int, _c(NONNEG_INT)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EarlyStopping(_M):
    """Keras ``EarlyStopping`` settings (monitor is a validation metric).

    The fields are the arguments of :class:`regulab.regularizers.EarlyStopping`, one to one;
    the trainers run that class's :class:`~regulab.regularizers.EarlyStoppingRule` (see
    :meth:`rule`). ``mode = "auto"`` is resolved the library's way: ``"max"`` for
    ``val_accuracy``, ``"min"`` for ``val_loss``. A value the library refuses is a
    :class:`SpecError` naming the field.
    """

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: NonNegInt = 10
    min_delta: NonNeg = 0.0
    baseline: float | None = None
    start_from_epoch: NonNegInt = 0
    restore_best_weights: bool = True

    def rule(self):
        """The library's :class:`~regulab.regularizers.EarlyStoppingRule` for these settings."""
        from ..regularizers import EarlyStopping as KerasEarlyStopping

        return KerasEarlyStopping(**self.model_dump()).rule

    @model_validator(mode="after")
    def _library_checks(self):
        try:
            self.rule()
        except ValueError as e:  # "EarlyStopping: <param> must be ..., got ..."
            param, _, msg = str(e).partition(": ")[2].partition(" ")
            raise ValueError(f"{param}|{msg}") from None
        return self


# 1-D signal ops (regulab.regularizers.augment) and image ops (regulab.regularizers.augment_image)
SIGNAL_OPS = ("shift", "scale", "noise", "time_mask")
IMAGE_OPS = ("crop", "flip", "translate", "cutout")
# "auto": the standard pair for the data's kind (signals: shift, scale; images: crop, flip)
AUGMENT_OPS = ("auto", *SIGNAL_OPS, *IMAGE_OPS)


class Arm(_M):
    """One regularizer setting. All off by default (the baseline)."""

    p: Prob = 0.0                    # dropout on every hidden activation
    input_p: Prob = 0.0              # dropout on the input
    l1: NonNeg = 0.0                 # Keras L1: l1·Σ|w| on weights (not biases)
    l2: NonNeg = 0.0                 # Keras L2: l2·Σw² on weights (not biases)
    weight_decay: NonNeg = 0.0       # decoupled: w ← w − lr·λ·w
    max_norm: Pos | None = None      # rescale each unit's incoming weights to norm <= c
    label_smoothing: Prob = 0.0
    input_noise: NonNeg = 0.0        # Gaussian noise sigma added to (standardized) inputs
    augment: list[str] = Field(default_factory=list)
    mixup: NonNeg = 0.0              # mixup alpha (0 = off)
    early_stopping: EarlyStopping | None = None

    @model_validator(mode="after")
    def _ops(self):
        for i, op in enumerate(self.augment):
            if op not in AUGMENT_OPS:
                hint = did_you_mean(op, AUGMENT_OPS)
                raise ValueError(f"augment.{i}|must be {OneOf(AUGMENT_OPS)}, got {op!r}"
                                 + (f"; {hint}" if hint else ""))
        return self


SWEEPABLE = ("p", "input_p", "l1", "l2", "weight_decay", "max_norm", "label_smoothing", "input_noise",
             "mixup", "n_train")


class Sweep(_M):
    """Expand arms over a grid: every listed parameter, all combinations."""

    arm: str | None = None           # the arm to expand; None = every arm
    p: list[float] | None = None
    input_p: list[float] | None = None
    l1: list[float] | None = None
    l2: list[float] | None = None
    weight_decay: list[float] | None = None
    max_norm: list[float] | None = None
    label_smoothing: list[float] | None = None
    input_noise: list[float] | None = None
    mixup: list[float] | None = None
    n_train: list[PosInt] | None = None


class Dataset(_M):
    name: str = "mnist1d"
    n_train: PosInt | None = None
    val_fraction: Annotated[float, _c(Interval(0.0, 1.0, "neither"))] = 0.1
    seed: NonNegInt = 0
    standardize: bool = True


MODEL_KINDS = ("mlp", "cnn1d", "cnn2d")
_MODEL_FIELDS = {"mlp": {"widths", "activation", "batchnorm", "residual"},
                 "cnn1d": {"channels", "kernel_size", "stride", "widths", "activation"},
                 "cnn2d": {"channels", "kernel_size", "widths", "activation"}}


class Model(_M):
    """``kind``: mlp, cnn1d, cnn2d, or ``path/to/file.py:factory`` / ``package.module:factory``."""

    kind: str = "mlp"
    widths: list[PosInt] = Field(default_factory=lambda: [100, 100])
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = "relu"
    batchnorm: bool = False
    residual: bool = True            # skip connection on hidden layers with equal in/out width
    channels: list[PosInt] = Field(default_factory=lambda: [25, 25, 25])
    kernel_size: PosInt = 3
    stride: PosInt = 2
    kwargs: dict = Field(default_factory=dict)  # passed to a user factory

    @model_validator(mode="after")
    def _kind(self):
        if ":" in self.kind:
            mod, _, fn = self.kind.rpartition(":")
            if not mod or not fn.isidentifier():
                raise ValueError(f"kind|must be 'path/to/file.py:factory' or 'package.module:factory', "
                                 f"got {self.kind!r}")
            return self
        if self.kind not in MODEL_KINDS:
            hint = did_you_mean(self.kind, MODEL_KINDS)
            raise ValueError(f"kind|must be {OneOf(MODEL_KINDS)} or 'module:factory', got {self.kind!r}"
                             + (f"; {hint}" if hint else ""))
        allowed = _MODEL_FIELDS[self.kind] | {"kind"}
        for name in sorted(self.model_fields_set - allowed):
            if getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True):
                continue  # a stored spec repeats every default
            raise ValueError(f"{name}|must be left out for kind {self.kind!r} (it applies to "
                             f"{', '.join(k for k, v in _MODEL_FIELDS.items() if name in v) or 'user factories'})"
                             f", got {getattr(self, name)!r}")
        return self

    @property
    def is_factory(self) -> bool:
        return ":" in self.kind


class Optimizer(_M):
    name: Literal["sgd", "momentum", "nesterov", "adam", "adamw"] = "adam"
    lr: Pos = 1e-2
    momentum: Annotated[float, _c(Interval(0.0, 1.0, "left"))] = 0.9
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999])
    eps: Pos = 1e-8
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_size: PosInt = 30           # epochs between lr drops (schedule = "step")
    gamma: Annotated[float, _c(Interval(0.0, 1.0, "right"))] = 0.1

    @field_validator("betas")
    @classmethod
    def _betas(cls, v):
        if len(v) != 2 or not all(_PROB_OPEN.contains(b) for b in v):
            raise ValueError("must be two numbers in [0, 1)")
        return v


class Spec(_M):
    name: str = "study"
    seeds: PosInt = 3
    epochs: PosInt = 100
    batch_size: PosInt = 100
    selection: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    checkpoint_every: NonNeg = 30.0  # seconds between commit points (0 = every epoch)
    dataset: Dataset = Field(default_factory=Dataset)
    model: Model = Field(default_factory=Model)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    arms: dict[str, Arm] = Field(default_factory=lambda: {"baseline": Arm()})
    sweep: list[Sweep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _arms(self):
        if not self.arms:
            raise ValueError("arms|must be a table with at least one arm, got {}")
        for i, sw in enumerate(self.sweep):
            if sw.arm is not None and sw.arm not in self.arms:
                hint = did_you_mean(sw.arm, self.arms)
                raise ValueError(f"sweep.{i}.arm|must be one of the arms {sorted(self.arms)}, got {sw.arm!r}"
                                 + (f"; {hint}" if hint else ""))
        return self


_TYPE_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false", "string": "a string",
               "list": "a list", "dict": "a table", "model": "a table"}


def _message(err: dict) -> str:
    loc = [str(x) for x in err["loc"] if not str(x).startswith("function-after")]
    typ, value = err["type"], err.get("input")
    if typ == "value_error":
        msg = str(err["ctx"]["error"])
        if "|" in msg:  # "<sub.path>|<message>" from model validators
            sub, msg = msg.split("|", 1)
            loc = loc + sub.split(".")
            path = ".".join(["spec", *loc])
            return f"{path}: {msg}"
        return f"{'.'.join(['spec', *loc])}: {msg}, got {value!r}"
    if typ == "extra_forbidden":
        key = loc[-1]
        return f"{'.'.join(['spec', *loc[:-1]])}: unknown key {key!r}" + _hint(err, key)
    if typ == "missing":
        return f"{'.'.join(['spec', *loc])}: is required"
    if typ == "literal_error":
        return f"{'.'.join(['spec', *loc])}: must be {err['ctx']['expected']}, got {value!r}"
    kind = typ.split("_")[0]
    return f"{'.'.join(['spec', *loc])}: must be {_TYPE_WORDS.get(kind, typ)}, got {value!r}"


def _hint(err: dict, key: str) -> str:
    known = err.get("_known", ())
    hint = did_you_mean(key, known)
    return f"; {hint}" if hint else ""


def _known_keys(loc: tuple) -> tuple[str, ...]:
    """Field names valid at the table that holds ``loc`` (for "did you mean")."""
    model: type[BaseModel] | None = Spec
    for part in loc[:-1]:
        if model is None:
            return ()
        f = model.model_fields.get(str(part))
        if f is None:  # inside a dict/list: arms.<name> or sweep.<i>
            continue
        ann = f.annotation
        model = next((a for a in (ann, *getattr(ann, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None and str(part) == "arms":
            model = Arm
        if model is None and str(part) == "sweep":
            model = Sweep
    return tuple(model.model_fields) if model else ()


def parse_spec(data: dict) -> Spec:
    """Validate a spec dict; raise :class:`SpecError` naming the field path."""
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        err = dict(errs[0])
        if err["type"] == "extra_forbidden":
            err["_known"] = _known_keys(err["loc"])
        raise SpecError(_message(err) + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else "")) from None


def read_toml(path: str | Path) -> dict:
    """The table of a TOML file; every problem (missing, a folder, unreadable, not UTF-8, bad TOML)
    is a one-line :class:`SpecError` naming the file."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec: file must exist, got {str(p)!r}") from None
    except IsADirectoryError:
        raise SpecError(f"spec: {str(p)!r} must be a TOML file, got a folder") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"spec: {p} must be UTF-8 text, got byte {e.object[e.start]:#04x} at offset {e.start}") from None
    except OSError as e:
        raise SpecError(f"spec: cannot read {str(p)!r} ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec: {p} must be valid TOML, got {e}") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a TOML spec file."""
    return parse_spec(read_toml(path))


def spec_hash(spec: Spec) -> str:
    """Stable hash of a validated spec (identifies a study folder's study)."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The default study (`regulab study` with no arguments); mirrored in examples/study.toml.
DEFAULT_SPEC: dict = {
    "name": "MNIST-1D reference MLP: which regularizer helps?",
    "seeds": 3,
    "epochs": 100,
    "batch_size": 100,
    "dataset": {"name": "mnist1d"},
    "model": {"kind": "mlp", "widths": [100, 100], "activation": "relu", "residual": True},
    "optimizer": {"name": "adam", "lr": 1e-2},
    "arms": {
        "baseline": {},
        "dropout p=0.1": {"p": 0.1},
        "dropout p=0.3": {"p": 0.3},
        "l2": {"l2": 1e-4},
        "weight decay": {"weight_decay": 0.05},
        "dropout+max-norm": {"p": 0.3, "max_norm": 2.0},
        "input noise": {"input_noise": 0.3},
        "augment": {"augment": ["auto"]},
        "label smoothing": {"label_smoothing": 0.1},
        "early stopping": {"early_stopping": {"patience": 10}},
        "combined": {"p": 0.1, "l2": 1e-4, "max_norm": 2.0, "input_noise": 0.1,
                     "augment": ["auto"], "label_smoothing": 0.1, "early_stopping": {"patience": 20}},
    },
}
