"""Stacked trainer: the M runs of a group train together as one batched model.

Parameters of all members live in one flat buffer (:class:`~regulab.models.FlatParams`);
activations are ``(M, B, H)``. Each member keeps its own parameters, optimizer state,
data order, dropout masks and rate (a per-member ``p`` tensor into ``regulab.ops.dropout``),
penalties, label smoothing, noise, augmentation and early-stopping state. A member that
stops early or diverges is *frozen*: its parameters and optimizer state are restored after
every step, and its best weights are kept. A BatchNorm model's running statistics are kept
with each member's best weights: test metrics, saved weights and checkpoints carry them.

The trainer knows nothing of the store: at commit points it calls ``on_commit(rows,
statuses)`` after which the caller persists :meth:`state` and the rows.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..models import FlatParams, build, seeded_module
from ..ops.gaussian import add_member_noise_
from ..regularizers import EarlyStoppingState, l1l2_penalty, mixup
from ..regularizers.decay import decay_factors
from . import _common
from ._flat_regs import l2_value_and_grad, max_norm_rows
from ._heads import eval_head, train_head
from .augment import apply_augment
from .plan import Group
from .spec import Spec

__all__ = ["StackedTrainer"]


class StackedTrainer:
    """Train one group of runs as a stacked model (see the module docstring)."""

    def __init__(self, group: Group, spec: Spec, data, *, eval_chunk: int = 512) -> None:
        self.group, self.spec, self.data = group, spec, data
        # internal member order: members sharing the costly regularizers sit side by side, so
        # those ops run on a contiguous member range (a view) instead of the whole stack
        self.runs = runs = sorted(group.runs, key=_order_key)
        self.M = M = len(runs)
        md = build(spec.model.kind, spec.model.model_dump(), data.input_shape, data.num_classes)
        self.make = md.make
        mods = [seeded_module(md.make, r.seed) for r in runs]
        self.net = md.stacked(mods[0], M)
        self.fl = FlatParams.from_modules(mods)
        # running statistics (BatchNorm), (M, ...) each, under the ordinary module's buffer names;
        # kept at each member's best epoch, as a per-run model's state_dict is (a frozen member's
        # live statistics drift on, unseen: it never improves again)
        self.buf_names = [n for n, b in mods[0].named_buffers() if b.is_floating_point()]
        if len(self.buf_names) != len(self._buffers()):
            raise RuntimeError(f"stacked {spec.model.kind} keeps {len(self._buffers())} running buffers, "
                               f"its module {len(self.buf_names)}")
        self.best_bufs = [b.clone() for b in self._buffers()]
        self.grad = self.fl.like()
        self.leaves = self.fl.leaves(self.fl.flat, self.grad)
        self.P, self.G = self.fl.views(), self.fl.views(self.grad)
        a = [r.arm_cfg for r in runs]
        t = lambda k, default=0.0: torch.tensor([float(x[k] if x[k] is not None else default) for x in a])  # noqa: E731
        self.p, self.input_p = t("p"), t("input_p")
        self.l1, self.l2, self.wd = t("l1"), t("l2"), t("weight_decay")
        self.c, self.eps, self.sigma = t("max_norm", _common.BIG), t("label_smoothing"), t("input_noise")
        self.mix = [(m, x["mixup"]) for m, x in enumerate(a) if x["mixup"] > 0]
        self.aug = [x["augment"] for x in a]
        # early stopping: the library rule and a one-model state per member that has it
        self.es_cfg = {m: x["early_stopping"] for m, x in enumerate(a) if x["early_stopping"]}
        self.es = {m: _common.es_rule(cfg) for m, cfg in self.es_cfg.items()}
        self.es_state = {m: EarlyStoppingState.initial() for m in self.es}
        self.eval_chunk = eval_chunk
        self.y_train = data.y_train.to(torch.int32)  # the loss heads' label type
        self.eps_np = self.eps.numpy().astype(np.float32)
        self.r_p, self.r_ip = _range(self.p > 0), _range(self.input_p > 0)
        self.r_pen = _range((self.l1 > 0) | (self.l2 > 0))
        self.r_l1, self.r_wd = _range(self.l1 > 0), _range(self.wd > 0)
        self.r_c, self.r_sigma = _range(self.c < _common.BIG), _range(self.sigma > 0)
        self.r_eps = _range(self.eps > 0)
        self.W = [v for b, v in zip(self.fl.blocks, self.P) if b.is_weight]
        self.GW = [v for b, v in zip(self.fl.blocks, self.G) if b.is_weight]
        # the weights (and their grads) of each regularizer's member range, sliced once: views
        # into the flat buffers, which are only ever updated in place
        self.W_pen, self.GW_pen = _cut(self.r_pen, self.W), _cut(self.r_pen, self.GW)
        self.W_l1, self.GW_l1 = _cut(self.r_l1, self.W), _cut(self.r_l1, self.GW)
        self.W_wd = _cut(self.r_wd, self.W)
        wb = [b for b in self.fl.blocks if b.is_weight]  # the weight blocks, for the one-pass kernels
        self.wblocks = (np.array([b.offset for b in wb], np.int64), np.array([b.shape[0] for b in wb], np.int64),
                        np.array([b.numel_member // b.shape[0] for b in wb], np.int64))
        self.l2_np = None if self.r_pen is None else self.l2[self.r_pen[0]:self.r_pen[1]].numpy().astype(np.float32)
        self.sigma_np = None if self.r_sigma is None else self.sigma[self.r_sigma[0]:self.r_sigma[1]].numpy().astype(np.float32)
        self.c_np = None if self.r_c is None else self.c[self.r_c[0]:self.r_c[1]].numpy().astype(np.float32)
        if self.r_pen is not None:  # 2·l2 and l1 broadcast against each weight of the range
            lo, hi = self.r_pen
            self.l2x2_w = [self.fl.member_scale(2 * self.l2[lo:hi], w) for w in self.W_pen]
        if self.r_l1 is not None:
            lo, hi = self.r_l1
            self.l1_w = [self.fl.member_scale(self.l1[lo:hi], w) for w in self.W_l1]
        self.step_t = torch.zeros(())
        self._decay = (None, [])  # (lr, decay factors of W_wd at that lr)
        # optimizer state (flat, like the parameters)
        self.m1 = self.fl.like()
        self.m2 = self.fl.like() if spec.optimizer.name in ("adam", "adamw") else None
        self.step_count = 0
        self.epoch = 0  # epochs completed
        # member bookkeeping
        self.active = torch.ones(M, dtype=torch.bool)
        self.snap = [self.fl.flat.clone(), self.m1.clone(), None if self.m2 is None else self.m2.clone()]
        self.best = self.fl.flat.clone()
        self.best_info = [dict(epoch=0, val_acc=-math.inf, val_loss=math.inf, train_loss=None, train_acc=None)
                          for _ in range(M)]
        self.failed: dict[int, str] = {}
        self.stopped = [0] * M

    # -- one epoch ---------------------------------------------------------------------------------
    def _gen(self, *parts) -> torch.Generator:
        return _common.gen(self.group.key, *parts)

    def train_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Train every member one epoch; returns per-member (mean loss, std of minibatch losses)."""
        spec, M, e = self.spec, self.M, self.epoch
        xs, ys = self.data.x_train, self.y_train
        n, B = len(ys), spec.batch_size
        perm = torch.stack([_common.order(r.seed, e, n) for r in self.runs])  # (M, N)
        steps = math.ceil(n / B)
        losses = torch.empty(steps, M)
        lr = _common.lr_at(spec.optimizer, e, spec.epochs)
        any_p, any_ip = self.r_p is not None, self.r_ip is not None
        for s in range(steps):
            idx = perm[:, s * B:(s + 1) * B].reshape(-1)  # (M*b,)
            b = idx.numel() // M
            x = xs.index_select(0, idx).view(M, b, *xs.shape[1:])  # (M, b, *in)
            y = ys.index_select(0, idx).view(M, b)
            losses[s] = self._step(x, y, lr, e, s, any_p, any_ip)
        mean = losses.mean(0)
        std = losses.std(0) if steps > 1 else torch.zeros(M)
        return mean, std

    def _step(self, x, y, lr, e, s, any_p, any_ip) -> torch.Tensor:
        M, C = self.M, self.data.num_classes
        g = self._gen("step", e, s)
        x = apply_augment(x, self.aug, g)
        if self.r_sigma is not None:  # input noise, in place (x is this step's own gathered batch)
            lo, hi = self.r_sigma
            add_member_noise_(x[lo:hi], self.sigma_np, generator=g)
        target = None  # soft targets (M, b, C), with mixup only: else the labels y are the targets
        if self.mix:
            # one-hot, stored class-major (M, C, b) as the loss head wants it; y is valid
            target = torch.zeros(M, C, y.shape[1]).scatter_(1, y.long().unsqueeze(1), 1.0).transpose(1, 2)
            x = x.clone()
            for m, alpha in self.mix:
                r = mixup(x[m], y[m].long(), alpha, generator=g)
                x[m], target[m] = r.inputs, r.soft_targets(C)
        p = self.p if any_p else None
        ip = self.input_p if any_ip else None
        if self.net.manual:
            calls = iter(range(1 << 30))

            def seeds():  # one generator per dropout call; rebuilt from (e, s, j) in backward
                j = next(calls)
                return j, self._gen("drop", e, s, j)

            logits, ctx = self.net.forward_train(self.P, x, p=p, input_p=ip, seeds=seeds, p_range=self.r_p,
                                                 input_range=self.r_ip)
        else:
            logits = self.net.forward(self.leaves, x, p=p, input_p=ip, training=True, generator=g)
        lm, dlogits = self._loss_head(logits.detach(), y, target)
        if self.net.manual:
            self.net.backward(self.P, self.G, ctx, dlogits, lambda j: self._gen("drop", e, s, j))
        else:
            self.grad.zero_()
            logits.backward(dlogits)
        if self.r_pen is not None and self.r_l1 is None:  # L2 only: value and gradient in one pass
            lo, hi = self.r_pen
            lm[lo:hi] += torch.from_numpy(l2_value_and_grad(self.fl.flat.numpy(), self.grad.numpy(), self.wblocks,
                                                            lo, self.l2_np))
        elif self.r_pen is not None:  # Keras L1/L2 on weights: value, and its gradient
            lo, hi = self.r_pen
            lm[lo:hi] += l1l2_penalty(self.W_pen, self.l1[lo:hi], self.l2[lo:hi])
            for w, gw, s2 in zip(self.W_pen, self.GW_pen, self.l2x2_w):
                gw.addcmul_(w, s2)  # + 2·l2·w
            if self.r_l1 is not None:
                for w, gw, s1 in zip(self.W_l1, self.GW_l1, self.l1_w):
                    gw.addcmul_(torch.sign(w), s1)  # + l1·sign(w)
        self._optimizer_step(lr)
        return lm

    def _loss_head(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        """Per-member mean cross-entropy against label-smoothed targets, and its gradient.

        Same convention as :func:`regulab.regularizers.label_smoothing_cross_entropy` (target
        ``(1 − ε)·y + ε/C``), written out because the gradient is needed in closed form:
        ``(softmax − target)/B``. The per-run trainer calls the library function; the
        stacked-vs-per-run test checks the two agree.

        ``logits`` (M, b, C) of any strides; ``y`` (M, b) int32 labels, or soft ``target``
        (M, b, C) (mixup). The work runs class-major, on (M, C, b) (the MLP's logits already
        are, as views): labels in one numba pass (:mod:`._heads`), soft targets in torch ops
        (over dim 1, with b contiguous: ~20x faster than over a contiguous C = 10). The gradient
        is returned as an (M, b, C) view of a class-major tensor.
        """
        M, b, C = logits.shape
        lt = logits.transpose(1, 2).contiguous()  # (M, C, b)
        if target is None:  # float32 (as the flat parameters): one numba pass
            loss, grad = torch.empty(M), torch.empty(M, C, b)
            train_head(lt.numpy(), y.numpy(), self.eps_np, loss.numpy(), grad.numpy())
            return loss, grad.transpose(1, 2)
        tt = target.transpose(1, 2)
        if self.r_eps is not None:
            eps = self.eps.view(M, 1, 1)
            tt = tt.mul(1 - eps).add_(eps / C)
        lp = torch.log_softmax(lt, 1)  # (M, C, b)
        loss = -(tt * lp).sum(1).mean(-1)  # (M,)
        grad = lp.exp_().sub_(tt).div_(b)
        return loss, grad.transpose(1, 2)

    @torch.no_grad()
    def _optimizer_step(self, lr: float) -> None:
        opt, flat, g = self.spec.optimizer, self.fl.flat, self.grad
        if self.r_wd is not None:  # decoupled_decay_(self.W_wd, lr, wd), its factors made once per lr
            if self._decay[0] != lr:
                lo, hi = self.r_wd
                self._decay = (lr, decay_factors(self.W_wd, lr, self.wd[lo:hi]))
            for w, factor in zip(self.W_wd, self._decay[1]):
                w.mul_(factor)
        self.step_count += 1
        if self.m2 is not None:  # Adam: torch's fused CPU kernel, one pass over the flat buffers
            self.step_t.fill_(self.step_count)
            torch._fused_adam_([flat], [g], [self.m1], [self.m2], [], [self.step_t], lr=lr, beta1=opt.betas[0],
                               beta2=opt.betas[1], weight_decay=0.0, eps=opt.eps, amsgrad=False, maximize=False)
        elif opt.name == "sgd":
            flat.add_(g, alpha=-lr)
        else:  # momentum / nesterov, as torch.optim.SGD
            if self.step_count == 1:
                self.m1.copy_(g)
            else:
                self.m1.mul_(opt.momentum).add_(g)
            d = g.add(self.m1, alpha=opt.momentum) if opt.name == "nesterov" else self.m1
            flat.add_(d, alpha=-lr)
        if self.r_c is not None:  # max_norm_ on every weight of the range, in one pass
            max_norm_rows(self.fl.flat.numpy(), self.wblocks, self.r_c[0], self.c_np)
        frozen = ~self.active
        if bool(frozen.any()):
            for src, dst in zip(self.snap, (flat, self.m1, self.m2)):
                if dst is not None:
                    self.fl.member_rows(frozen, src, dst)

    # -- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, flat: torch.Tensor | None = None):
        """Eval-mode per-member (mean cross-entropy, accuracy) on a shared dataset."""
        P = self.fl.views(flat)
        loss, correct = torch.zeros(self.M), torch.zeros(self.M)
        fast = getattr(self.net, "forward_eval", None) if not getattr(self.net, "batchnorm", False) else None
        y32 = y.to(torch.int32)
        for i in range(0, len(y), self.eval_chunk):
            xc = x[i:i + self.eval_chunk]
            if fast is not None:
                lt = fast(P, xc)  # (M, C, n)
            else:
                lt = self.net.forward(P, xc, shared=True, training=False).transpose(1, 2).contiguous()
            # class-major (float32, as the flat parameters): one numba pass (see _heads)
            eval_head(lt.numpy(), y32[i:i + self.eval_chunk].numpy(), loss.numpy(), correct.numpy())
        n = max(len(y), 1)
        return loss / n, correct / n

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, on_commit=None, on_epoch=None, checkpoint_every: float | None = None) -> list[dict]:
        """Train to the end (or until every member stopped); return the final rows per member.

        ``on_commit(rows, statuses)`` and ``on_epoch(epoch, seconds)`` receive :meth:`events`."""
        return _common.drive(self.events(checkpoint_every), on_commit, on_epoch)

    def events(self, checkpoint_every: float | None = None):
        """Generator: train, yielding ``("epoch", epoch, seconds)`` after each epoch and
        ``("commit", rows, statuses)`` at each commit point (every ``checkpoint_every`` seconds
        and at the end), after which the caller persists :meth:`state` before it asks for more;
        returns the final rows per member."""
        spec, d = self.spec, self.data
        every = spec.checkpoint_every if checkpoint_every is None else checkpoint_every
        pending, statuses, last = [], {}, time.monotonic()
        while self.epoch < spec.epochs and bool(self.active.any()):
            t0 = time.perf_counter()
            tr_loss, tr_std = self.train_epoch()
            c_loss, c_acc = self.evaluate(d.x_train, d.y_train)
            v_loss, v_acc = self.evaluate(d.x_val, d.y_val)
            self.epoch += 1
            dt = time.perf_counter() - t0
            lr = _common.lr_at(spec.optimizer, self.epoch - 1, spec.epochs)
            was_active = self.active.clone()
            improved = torch.zeros(self.M, dtype=torch.bool)
            for m, r in enumerate(self.runs):
                if not was_active[m]:
                    continue
                pending.append(dict(run_id=r.run_id, epoch=self.epoch, train_loss=tr_loss[m].item(),
                                    train_noise=tr_std[m].item(), clean_train_loss=c_loss[m].item(),
                                    clean_train_acc=c_acc[m].item(), val_loss=v_loss[m].item(),
                                    val_acc=v_acc[m].item(), lr=lr, epoch_time=dt))
                improved[m] = self._member_epoch_end(m, r, tr_loss[m].item(), c_loss[m].item(), c_acc[m].item(),
                                                     v_loss[m].item(), v_acc[m].item(), statuses)
            self.fl.member_rows(improved, self.fl.flat, self.best)  # their best weights, in one copy
            yield "epoch", self.epoch, dt
            done = self.epoch >= spec.epochs or not bool(self.active.any())
            if done or time.monotonic() - last >= every:
                yield "commit", pending, statuses
                pending, statuses, last = [], {}, time.monotonic()
        if pending or statuses:
            yield "commit", pending, statuses
        return self.finals()

    def _member_epoch_end(self, m, r, tr_loss, c_loss, c_acc, v_loss, v_acc, statuses) -> bool:
        """Member ``m``'s bookkeeping after an epoch; True when this is its new best epoch (the
        caller then copies its weights to ``best``)."""
        ok = all(math.isfinite(v) for v in (tr_loss, c_loss, v_loss))
        if not ok or not bool(torch.isfinite(self.P[0][m]).all()):
            self.failed[m] = f"diverged: non-finite loss at epoch {self.epoch} (train loss {tr_loss})"
            statuses[r.run_id] = ("failed", self.failed[m])
            self._freeze(m, zero=True)
            return False
        info = self.best_info[m]
        best = _common.improves(self.spec.selection, info, v_loss, v_acc)
        if best:
            info.update(epoch=self.epoch, val_acc=v_acc, val_loss=v_loss, train_loss=c_loss, train_acc=c_acc)
            for src, dst in zip(self._buffers(), self.best_bufs):
                dst[m] = src[m]
        if m in self.es:
            value = _common.es_value(self.es_cfg[m], v_loss, v_acc)
            self.es_state[m], _ = self.es[m].update(self.es_state[m], self.epoch - 1, value)
            if bool(self.es_state[m].stop):
                self._freeze(m)
        if not self.active[m] or self.epoch >= self.spec.epochs:
            self.stopped[m] = self.epoch
        return best

    def _freeze(self, m: int, zero: bool = False) -> None:
        sel = torch.arange(self.M) == m
        self.active[m] = False
        self.stopped[m] = self.epoch
        if zero:  # a diverged member: keep NaN/inf out of later arithmetic
            for buf in (self.fl.flat, self.m1, self.m2):
                if buf is not None:
                    for v in self.fl.views(buf):
                        v[m] = 0.0
        for src, dst in zip((self.fl.flat, self.m1, self.m2), self.snap):
            if src is not None:
                self.fl.member_rows(sel, src, dst)

    def finals(self) -> list[dict]:
        """Test metrics of each member's best weights, and its best-epoch summary."""
        live = [b.clone() for b in self._buffers()]
        for dst, src in zip(self._buffers(), self.best_bufs):  # the best epoch's running statistics
            dst.copy_(src)
        try:
            t_loss, t_acc = self.evaluate(self.data.x_test, self.data.y_test, self.best)
        finally:
            for dst, src in zip(self._buffers(), live):
                dst.copy_(src)
        out = []
        for m, r in enumerate(self.runs):
            info = self.best_info[m]
            out.append(dict(run_id=r.run_id, best_epoch=info["epoch"], stopped_epoch=self.stopped[m] or self.epoch,
                            test_loss=t_loss[m].item(), test_acc=t_acc[m].item(),
                            best_val_loss=info["val_loss"] if info["epoch"] else None,
                            best_val_acc=info["val_acc"] if info["epoch"] else None,
                            train_loss_at_best=info["train_loss"], train_acc_at_best=info["train_acc"],
                            failed=self.failed.get(m)))
        return out

    def member_weights(self, m: int) -> dict[str, torch.Tensor]:
        """Best weights of member ``m`` (and running statistics) under the ordinary module's names."""
        return {**self.fl.member_state(m, self.best),
                **{n: b[m].contiguous().clone() for n, b in zip(self.buf_names, self.best_bufs)}}

    def _buffers(self) -> list[torch.Tensor]:
        """The stacked model's running buffers, (M, ...) each, in the module's buffer order."""
        return [t for pair in (getattr(self.net, "bn_buffers", None) or []) for t in pair]

    # -- checkpoint state --------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue exactly: (tensors, JSON-able scalars)."""
        tensors = {"flat": self.fl.flat, "m1": self.m1, "best": self.best, "snap0": self.snap[0],
                   "snap1": self.snap[1]}
        if self.m2 is not None:
            tensors.update(m2=self.m2, snap2=self.snap[2])
        for i, (b, best) in enumerate(zip(self._buffers(), self.best_bufs)):
            tensors.update({f"buf{i}": b, f"best_buf{i}": best})
        info = {"epoch": self.epoch, "step_count": self.step_count, "active": self.active.tolist(),
                "failed": {str(k): v for k, v in self.failed.items()}, "stopped": self.stopped,
                "best_info": self.best_info,
                "es": {str(m): _common.es_state_to_json(st) for m, st in self.es_state.items()},
                "run_ids": [r.run_id for r in self.runs]}
        return tensors, info

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        if info["run_ids"] != [r.run_id for r in self.runs]:
            raise ValueError("checkpoint belongs to other runs")
        for k, dst in (("flat", self.fl.flat), ("m1", self.m1), ("best", self.best), ("snap0", self.snap[0]),
                       ("snap1", self.snap[1]), ("m2", self.m2), ("snap2", self.snap[2])):
            if dst is not None:
                dst.copy_(tensors[k])
        for i, (b, best) in enumerate(zip(self._buffers(), self.best_bufs)):
            b.copy_(tensors[f"buf{i}"])
            best.copy_(tensors[f"best_buf{i}"])
        self.epoch, self.step_count = info["epoch"], info["step_count"]
        self.active = torch.tensor(info["active"], dtype=torch.bool)
        self.failed = {int(k): v for k, v in info["failed"].items()}
        self.stopped, self.best_info = list(info["stopped"]), info["best_info"]
        es = {int(m): _common.es_state_from_json(st) for m, st in info["es"].items()}
        if es.keys() != self.es.keys():
            raise ValueError("checkpoint has early-stopping state for other members")
        self.es_state = es


def _order_key(run) -> tuple:
    a = run.arm_cfg
    return (a["p"] == 0, a["input_p"] == 0, a["max_norm"] is None, a["l1"] == 0 and a["l2"] == 0,
            a["weight_decay"] == 0, a["input_noise"] == 0)


def _cut(r: tuple[int, int] | None, views: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """The member range ``r`` of each view (None when no member has the regularizer)."""
    return None if r is None else [v[r[0]:r[1]] for v in views]


def _range(mask: torch.Tensor) -> tuple[int, int] | None:
    """The smallest (lo, hi) member range holding every True of ``mask``; None when none."""
    idx = mask.nonzero().flatten()
    return None if idx.numel() == 0 else (int(idx[0]), int(idx[-1]) + 1)
