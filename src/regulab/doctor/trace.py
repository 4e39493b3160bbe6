"""Record what one forward pass does, module by module and call by call.

Two mechanisms together: forward (pre-)hooks on every submodule record the
execution order and each call's inputs and outputs, and a
:class:`~torch.overrides.TorchFunctionMode` sees every functional dropout,
attention, batch-norm and random-number call, attributed to the innermost
module running at that moment. That catches ``F.dropout`` written inline in
a ``forward`` as well as layers, without needing ``torch.fx`` to trace.

The recorder can also *switch one dropout site on* (a dropout module put in
training mode, or one functional dropout call forced to ``training=True``)
while everything else stays in eval: that is how the doctor measures where a
dropout's output goes and what it does to a BatchNorm's input.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["Call", "ModuleCall", "PassRecord", "run_pass", "tensors_in"]

# functional dropout -> default of its `training` argument (None: required)
DROPOUT_FUNCS: dict[Any, bool | None] = {
    F.dropout: True, F.dropout1d: True, F.dropout2d: True, F.dropout3d: True,
    F.alpha_dropout: False, F.feature_alpha_dropout: False,
    torch.dropout: None, torch.alpha_dropout: None, torch.feature_dropout: None,
    torch.feature_alpha_dropout: None,
}
for _n in ("dropout_", "alpha_dropout_", "feature_dropout_", "feature_alpha_dropout_"):
    if hasattr(torch, _n):
        DROPOUT_FUNCS[getattr(torch, _n)] = None
DISPLAY = {f: ("F." if v is not None else "torch.") + f.__name__ for f, v in DROPOUT_FUNCS.items()}
RANDOM_NAMES = frozenset({
    "bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like", "randint",
    "randint_like", "normal", "normal_", "uniform_", "random_", "exponential_",
    "multinomial", "randperm", "poisson", "geometric_", "cauchy_", "log_normal_",
})


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """All tensors inside a (nested) tuple/list/dict output, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_in(o)]
    return []


def _snap(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    # clone: a later in-place op (ReLU(inplace=True)) must not rewrite history
    return [t.detach().clone() for t in ts]


@dataclass
class Call:
    """One intercepted functional call."""

    kind: str  # "dropout" | "regulab-dropout" | "attention" | "batchnorm" | "random"
    name: str  # e.g. "dropout", "scaled_dot_product_attention"
    module: str  # innermost running module ("" = the model itself)
    index: int  # ordinal among calls of this kind in the pass
    seq: int  # position in the pass's event order
    p: float | None = None  # drop probability (dropout) or dropout_p (attention)
    training: bool | None = None  # the training flag the call received
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None


@dataclass
class ModuleCall:
    """One call of a submodule."""

    name: str
    index: int  # k-th call of this module in the pass
    seq: int
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor] | None = None  # None until the call returns


@dataclass
class PassRecord:
    outputs: list[torch.Tensor]
    modules: list[ModuleCall]
    calls: list[Call]
    warnings: list[str]

    def calls_of(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]


def _arg(args: tuple, kwargs: dict, pos: int, names: tuple[str, ...], default: Any) -> Any:
    if len(args) > pos:
        return args[pos]
    for n in names:
        if n in kwargs:
            return kwargs[n]
    return default


class _Mode(TorchFunctionMode):
    def __init__(self, rec: _Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        rec = self.rec
        if func in DROPOUT_FUNCS:
            p = float(_arg(args, kwargs, 1, ("p",), 0.5))
            training = bool(_arg(args, kwargs, 2, ("training", "train"), DROPOUT_FUNCS[func]))
            call = rec.add_call("dropout", DISPLAY[func], p=p, training=training, x=args[0])
            if call.index == rec.enable_call and not training:
                args, kwargs = _with_training(func, args, kwargs)
                call.training = True
            out = func(*args, **kwargs)
            call.output = out.detach().clone()
            return out
        if func is F.scaled_dot_product_attention:
            p = float(_arg(args, kwargs, 4, ("dropout_p",), 0.0))
            rec.add_call("attention", "scaled_dot_product_attention", p=p, training=p > 0)
        elif func is F.batch_norm:
            training = bool(_arg(args, kwargs, 5, ("training",), False))
            rec.add_call("batchnorm", "batch_norm", training=training, x=args[0])
        elif isinstance(func, torch._ops.OpOverload) and func.namespace == "regulab":
            # regulab's functional ops reach their custom op only in training
            p = next((float(a) for a in args[1:] if isinstance(a, float)), None)
            rec.add_call("regulab-dropout", func.name(), p=p, training=True)
        elif getattr(func, "__name__", "") in RANDOM_NAMES:
            rec.add_call("random", func.__name__)
        return func(*args, **kwargs)


def _with_training(func, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    args = list(args)
    if len(args) > 2:
        args[2] = True
    else:
        kwargs["train" if DROPOUT_FUNCS[func] is None else "training"] = True
    return tuple(args), kwargs


class _Recorder:
    def __init__(self, model: nn.Module, enable_call: int | None) -> None:
        self.enable_call = enable_call
        self.seq = 0
        self.stack: list[str] = []
        self.modules: list[ModuleCall] = []
        self.calls: list[Call] = []
        self.counts: dict[str, int] = {}
        self.handles = []
        for name, mod in model.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self.handles.append(mod.register_forward_hook(self._post(name)))

    def _next(self, key: str) -> int:
        k = self.counts.get(key, 0)
        self.counts[key] = k + 1
        return k

    def add_call(self, kind: str, name: str, *, p=None, training=None, x=None) -> Call:
        x = x.detach().clone() if isinstance(x, torch.Tensor) else None
        call = Call(kind, name, self.stack[-1] if self.stack else "", self._next("call:" + kind),
                    self.seq, p, training, x)
        self.seq += 1
        self.calls.append(call)
        return call

    def _pre(self, name: str):
        def hook(mod, args, kwargs):
            self.stack.append(name)
            ins = _snap(tensors_in(args) + tensors_in(kwargs))
            self.modules.append(ModuleCall(name, self._next("mod:" + name), self.seq, ins))
            self.seq += 1
        return hook

    def _post(self, name: str):
        def hook(mod, args, out):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
            for mc in reversed(self.modules):  # the latest open call of this module
                if mc.name == name and mc.outputs is None:
                    mc.outputs = _snap(tensors_in(out))
                    break
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def run_pass(model: nn.Module, inputs: tuple, *, enable_call: int | None = None,
             enable_module: nn.Module | None = None) -> PassRecord:
    """Run ``model(*inputs)`` under ``no_grad`` and record it.

    ``enable_call`` forces the dropout call with that ordinal to
    ``training=True``; ``enable_module`` is put in training mode for this
    pass only. Warnings the forward emits are returned, not raised.
    """
    rec = _Recorder(model, enable_call)
    was = enable_module.training if enable_module is not None else None
    try:
        if enable_module is not None:
            enable_module.train(True)
        with warnings.catch_warnings(record=True) as caught, torch.no_grad(), _Mode(rec):
            warnings.simplefilter("always")
            out = model(*inputs)
        outputs = _snap(tensors_in(out))
    finally:
        rec.close()
        if enable_module is not None:
            enable_module.train(was)
    msgs = list(dict.fromkeys(str(w.message) for w in caught))
    return PassRecord(outputs, rec.modules, rec.calls, msgs)
