"""Several models of one architecture trained as one, which only `scripts/bench.py --fused S` uses (train
steps models together through fused.Together): their parameters stacked along a new leading dimension,
one forward and backward for all through torch.func (vmap over functional_call), one optimizer step,
the whole step one CUDA graph where CUDA graphs are on. Each model keeps its own batch (x is S x B x
...), its own initial weights and its own numbers; the members' own modules get the weights back with
`unstack()` (to validate, picture or save them)."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from stnexp.config import TrainConfig
from stnexp.training import optim
from stnexp.training.members import Member
from stnexp.training.step import Sums, capture


def fusable(members: list[Member]) -> bool:
    """Models that can share one stacked step: the same layers and shapes, no dropout (its random
    stream is per model), no batch norm (running statistics would be updated inside vmap)."""
    if len(members) < 2 or any(m.dropout or m.ddp is not None for m in members):
        return False
    shapes = [[(k, tuple(v.shape)) for k, v in m.model.state_dict().items()] for m in members]
    no_buffers = not any(True for _ in members[0].model.buffers())
    return no_buffers and all(s == shapes[0] for s in shapes)


def _set(module: nn.Module, name: str, value: nn.Parameter) -> None:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    setattr(module, leaf, value)


class Stack:
    """S members stepped as one. `holder` is a copy of the first model whose parameters are the stacked
    ones (S x ...), so the optimizer's parameter groups (a transformer's localisation net at its own lr)
    come out as for one model; `base` is the same structure on the meta device, the function vmap maps."""

    def __init__(
        self, members: list[Member], t: TrainConfig, mcfg, dtype: torch.dtype | None, steps_per_epoch: int, total: int
    ):
        self.members, self.ls, self.dtype = members, t.label_smoothing, dtype
        first = members[0].model
        device = next(first.parameters()).device
        self.device_type = device.type
        self.holder = copy.deepcopy(first)
        for name, _ in first.named_parameters():
            stacked = torch.stack([dict(m.model.named_parameters())[name].detach() for m in members])
            _set(self.holder, name, nn.Parameter(stacked))
        self.base = copy.deepcopy(first).to("meta")
        self.opt = optim.optimizer(t, self.holder, mcfg)
        self.sched = optim.scheduler(t, self.opt, steps_per_epoch, total)
        self.sums = Sums(device, (len(members),))
        self.graphed = t.cuda_graphs and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None

    def _autocast(self, cache: bool = True):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=cache)

    def _update(self, x: torch.Tensor, y: torch.Tensor, autocast) -> None:
        params = dict(self.holder.named_parameters())
        with autocast():
            logits = vmap(lambda p, xs: functional_call(self.base, p, (xs,)))(params, x)  # S x B x classes
            losses = (
                F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=self.ls)
                .view(y.shape)
                .mean(1)
            )
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # the members share nothing: each gets the gradient of its own mean loss
        self.opt.step()
        self.sums.loss += losses.detach().float()
        self.sums.correct += (logits.argmax(-1) == y).sum(1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step of every member, member i on batch (x[i], y[i])."""
        if not self.graphed:
            self._update(x, y, self._autocast)
            return
        if self.graph is None:
            self.x, self.y = x.clone(), y.clone()
            self.graph = capture(
                lambda: self._update(self.x, self.y, lambda: self._autocast(cache=False)),
                self.holder,
                self.opt,
                self.sums,
                x.device,
            )
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()

    @torch.no_grad()
    def unstack(self) -> None:
        """Each member's own module gets its slice of the stacked weights."""
        stacked = dict(self.holder.named_parameters())
        for i, m in enumerate(self.members):
            for name, p in m.model.named_parameters():
                p.copy_(stacked[name][i])
