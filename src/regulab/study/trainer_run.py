"""Per-run trainer: one ordinary ``nn.Module`` with ``torch.optim`` and regulab's regularizers.

Used for user factory models and as the reference the stacked trainer is tested against:
same init (torch default init under the run's seed), same data order, same optimizer maths,
same metrics. Stochastic draws (dropout masks, noise, augmentation) come from the same
stateless seeding scheme but not the same streams, so only their statistics agree.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..models import build, seeded_module
from ..nn.base import is_dropout_module
from ..ops import dropout
from ..regularizers import (
    EarlyStoppingState, decoupled_decay_, gaussian_noise, l1l2_penalty, label_smoothing_cross_entropy, max_norm_, mixup,
)
from . import _common
from .augment import op as augment_op
from .plan import Group
from .spec import Spec

__all__ = ["RunTrainer"]


class RunTrainer:
    """Train the single run of ``group`` (same interface as the stacked trainer, M = 1)."""

    def __init__(self, group: Group, spec: Spec, data) -> None:
        if len(group.runs) != 1:
            raise ValueError("RunTrainer trains one run per group")
        self.group, self.spec, self.data = group, spec, data
        self.runs = group.runs
        self.run_ = r = group.runs[0]
        self.a = a = r.arm_cfg
        md = build(spec.model.kind, spec.model.model_dump(), data.input_shape, data.num_classes)
        self.model: nn.Module = seeded_module(lambda: md.make(a["p"], 0.0), r.seed)
        if a["p"] > 0:  # user models: the arm's rate on every dropout module
            for m in self.model.modules():
                if is_dropout_module(m):
                    m.p = a["p"]
        norm = {id(p) for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                for p in m.parameters(recurse=False)}
        self.weights = [p for p in self.model.parameters() if p.ndim >= 2 and id(p) not in norm]
        o = spec.optimizer
        if o.name in ("adam", "adamw"):
            self.opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=0.0 if o.name == "sgd" else o.momentum,
                                       nesterov=o.name == "nesterov")
        self.es, self.es_state = _common.es_rule(a["early_stopping"]), EarlyStoppingState.initial()
        self.epoch, self.failed, self.stopped = 0, None, 0
        self.best = copy.deepcopy(self.model.state_dict())
        self.best_info = dict(epoch=0, val_acc=-math.inf, val_loss=math.inf, train_loss=None, train_acc=None)
        self.M = 1

    def train_epoch(self):
        spec, a, e = self.spec, self.a, self.epoch
        xs, ys = self.data.x_train, self.data.y_train
        n, B, C = len(ys), spec.batch_size, self.data.num_classes
        perm = _common.order(self.run_.seed, e, n)
        for grp in self.opt.param_groups:
            grp["lr"] = _common.lr_at(spec.optimizer, e, spec.epochs)
        lr = self.opt.param_groups[0]["lr"]
        self.model.train()
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_common.mix("run", self.run_.seed, e))  # module dropout draws from it
            for s in range(math.ceil(n / B)):
                idx = perm[s * B:(s + 1) * B]
                x, y = xs[idx], ys[idx]
                g = _common.gen("runstep", self.run_.seed, e, s)
                for name in a["augment"]:
                    x = augment_op(name, x, g)
                x = gaussian_noise(x, a["input_noise"], generator=g)
                x = dropout(x, a["input_p"], generator=g)
                target = y
                if a["mixup"] > 0:
                    r = mixup(x, y, a["mixup"], generator=g)
                    x, target = r.inputs, r.soft_targets(C)
                loss = label_smoothing_cross_entropy(self.model(x), target, a["label_smoothing"])
                if a["l1"] or a["l2"]:
                    loss = loss + l1l2_penalty(self.weights, a["l1"], a["l2"])
                self.opt.zero_grad(set_to_none=False)
                loss.backward()
                decoupled_decay_(self.weights, lr, a["weight_decay"])
                self.opt.step()
                if a["max_norm"] is not None:
                    with torch.no_grad():
                        for w in self.weights:
                            max_norm_(w, a["max_norm"])
                losses.append(loss.item())
        t = torch.tensor(losses)
        return t.mean().view(1), (t.std() if len(losses) > 1 else torch.zeros(())).view(1)

    @torch.no_grad()
    def evaluate(self, x, y, state=None):
        model = self.model
        if state is not None:
            model = copy.deepcopy(self.model)
            model.load_state_dict(state)
        model.eval()
        loss, correct = 0.0, 0
        for i in range(0, len(y), 2048):
            logits = model(x[i:i + 2048])
            loss += F.cross_entropy(logits, y[i:i + 2048], reduction="sum").item()
            correct += (logits.argmax(-1) == y[i:i + 2048]).sum().item()
        n = max(len(y), 1)
        return torch.tensor([loss / n]), torch.tensor([correct / n])

    def run(self, on_commit=None, on_epoch=None, checkpoint_every=None) -> list[dict]:
        """Train to the end (or early stop / divergence); ``on_commit(rows, statuses)`` and
        ``on_epoch(epoch, seconds)`` receive :meth:`events`."""
        return _common.drive(self.events(checkpoint_every), on_commit, on_epoch)

    def events(self, checkpoint_every=None):
        """Generator: train, yielding ``("epoch", epoch, seconds)`` after each epoch and
        ``("commit", rows, statuses)`` at commit points (every ``checkpoint_every`` seconds, and at
        the end), after which the caller persists :meth:`state` before it asks for more; returns
        the final rows."""
        spec, d, r = self.spec, self.data, self.run_
        every = spec.checkpoint_every if checkpoint_every is None else checkpoint_every
        rows, statuses, last = [], {}, time.monotonic()
        while self.epoch < spec.epochs and self.failed is None and not self.stopped:
            t0 = time.perf_counter()
            tr, sd = self.train_epoch()
            (c_loss,), (c_acc,) = self.evaluate(d.x_train, d.y_train)
            (v_loss,), (v_acc,) = self.evaluate(d.x_val, d.y_val)
            self.epoch += 1
            dt = time.perf_counter() - t0
            rows.append(dict(run_id=r.run_id, epoch=self.epoch, train_loss=tr.item(), train_noise=sd.item(),
                             clean_train_loss=c_loss.item(), clean_train_acc=c_acc.item(), val_loss=v_loss.item(),
                             val_acc=v_acc.item(), lr=self.opt.param_groups[0]["lr"], epoch_time=dt))
            vals = (tr.item(), c_loss.item(), v_loss.item())
            if not all(math.isfinite(v) for v in vals):
                self.failed = f"diverged: non-finite loss at epoch {self.epoch} (train loss {vals[0]})"
                statuses[r.run_id] = ("failed", self.failed)
            else:
                self._track(c_loss.item(), c_acc.item(), v_loss.item(), v_acc.item())
            yield "epoch", self.epoch, dt
            going = self.epoch < spec.epochs and self.failed is None and not self.stopped
            if going and time.monotonic() - last >= every:
                yield "commit", rows, statuses
                rows, statuses, last = [], {}, time.monotonic()
        self.stopped = self.stopped or self.epoch
        yield "commit", rows, statuses
        return self.finals()

    def _track(self, c_loss, c_acc, v_loss, v_acc) -> None:
        info = self.best_info
        if _common.improves(self.spec.selection, info, v_loss, v_acc):
            info.update(epoch=self.epoch, val_acc=v_acc, val_loss=v_loss, train_loss=c_loss, train_acc=c_acc)
            self.best = copy.deepcopy(self.model.state_dict())
        if self.es is not None:
            value = _common.es_value(self.a["early_stopping"], v_loss, v_acc)
            self.es_state, _ = self.es.update(self.es_state, self.epoch - 1, value)
            if bool(self.es_state.stop):
                self.stopped = self.epoch

    def finals(self) -> list[dict]:
        (t_loss,), (t_acc,) = self.evaluate(self.data.x_test, self.data.y_test, self.best)
        info = self.best_info
        return [dict(run_id=self.run_.run_id, best_epoch=info["epoch"], stopped_epoch=self.stopped or self.epoch,
                     test_loss=t_loss.item(), test_acc=t_acc.item(),
                     best_val_loss=info["val_loss"] if info["epoch"] else None,
                     best_val_acc=info["val_acc"] if info["epoch"] else None,
                     train_loss_at_best=info["train_loss"], train_acc_at_best=info["train_acc"], failed=self.failed)]

    def member_weights(self, m: int = 0) -> dict[str, torch.Tensor]:
        # the dense float tensors (safetensors holds no get_extra_state objects, sparse or int buffers)
        return {k: v.clone() for k, v in self.best.items()
                if torch.is_tensor(v) and v.layout == torch.strided and v.is_floating_point()}

    # -- checkpoint state --------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue exactly: (tensors, JSON-able scalars).

        The model's and the best state_dict, and the optimizer's per-parameter state, as copies
        (a user model may tie weights; safetensors refuses tensors that share memory). The data
        order and every random draw of an epoch derive from (seed, epoch), so continuing from an
        epoch boundary reproduces the uninterrupted run.

        A model whose state_dict holds anything but dense tensors (``get_extra_state`` objects,
        sparse buffers) has no mid-run checkpoint, ``({}, {})``: its run restarts when interrupted.
        """
        sd = self.model.state_dict()
        if not all(torch.is_tensor(v) and v.layout == torch.strided for v in [*sd.values(), *self.best.values()]):
            return {}, {}
        tensors = {f"model.{k}": v.detach().clone() for k, v in sd.items()}
        tensors.update({f"best.{k}": v.clone() for k, v in self.best.items()})
        opt = self.opt.state_dict()
        scalars = {}
        for idx, st in opt["state"].items():
            for name, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"opt.{idx}.{name}"] = v.clone()
                else:
                    scalars[f"{idx}.{name}"] = v
        info = {"epoch": self.epoch, "failed": self.failed, "stopped": self.stopped, "best_info": self.best_info,
                "es": _common.es_state_to_json(self.es_state), "run_ids": [self.run_.run_id],
                "opt_groups": opt["param_groups"], "opt_scalars": scalars}
        return tensors, info

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        if info["run_ids"] != [self.run_.run_id]:
            raise ValueError("checkpoint belongs to another run")
        part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
        self.model.load_state_dict(part("model."))
        best = part("best.")
        if best.keys() != self.best.keys():
            raise ValueError("checkpoint holds another model's best weights")
        self.best = {k: best[k] for k in self.best}
        state: dict[int, dict] = {}
        for key, v in [*part("opt.").items(), *info["opt_scalars"].items()]:
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        self.opt.load_state_dict({"state": state, "param_groups": info["opt_groups"]})
        self.epoch, self.failed, self.stopped = info["epoch"], info["failed"], info["stopped"]
        self.best_info = info["best_info"]
        self.es_state = _common.es_state_from_json(info["es"])
