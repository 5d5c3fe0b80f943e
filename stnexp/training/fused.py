"""Several models of one architecture trained as one: their parameters stacked along a new leading
dimension, one forward and backward for all through torch.func (vmap over functional_call), one
optimizer step, the whole step one CUDA graph where CUDA graphs are on. Each model keeps its own batch
(x is S x B x ...), its own initial weights and its own numbers; the members' own modules get the
weights back with `unstack()` (to validate, picture or save them).

`Together` is the other way to fill a GPU: the members keep their own modules and optimizers (any
architectures) and their steps are captured into one CUDA graph, each on its own stream, so the GPU
may run the small kernels of several models at once.

Measured with `scripts/bench.py --fused S`. `stnexp train` with `train.fuse: on` trains each variant's
seeds in lockstep and takes every step of all their models through one Together; `auto` turns that on
where it has been measured faster: on CUDA with graphs (wanted()).
"""

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
from stnexp.training.step import Sums, TrainStep, capture, capture_together


def wanted(t: TrainConfig, device: torch.device) -> bool:
    """Whether `stnexp train` steps models together (train.fuse). auto: where it was measured faster,
    on CUDA with graphs (one graph with a stream per model; the figures are in docs/performance.md). Not
    on a CPU, where Together is one model after another anyway, nor where the steps are not graphed
    (eager steps, data-parallel ones)."""
    if t.fuse != "auto":
        return t.fuse == "on"
    return device.type == "cuda" and t.cuda_graphs and t.parallel != "data"


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


class Together:
    """Several members' own steps (TrainStep) taken as one: on CUDA with graphs, one graph with a branch
    per member on its own stream; elsewhere one after another, as unfused. A step that cannot be
    graphed (dropout, data-parallel) runs eagerly beside the graph of the others, so one such model
    does not cost the others their graph. Each member keeps its model, optimizer, sums and batch; the
    arithmetic is that of its own step."""

    def __init__(self, steps: list[TrainStep]):
        self.steps = steps
        # the members in the joint graph: those whose own step is graphed, if there are two or more
        shared = [i for i, s in enumerate(steps) if s.graphed]
        self.shared = shared if len(shared) > 1 else []
        self.graph: torch.cuda.CUDAGraph | None = None

    @property
    def graphed(self) -> bool:
        """Whether all the members step in the one graph."""
        return bool(self.shared) and len(self.shared) == len(self.steps)

    def __call__(self, xs, ys) -> None:
        """One step of every member, member i on batch (xs[i], ys[i]): tensors S x B x ..., or lists."""
        for i, (step, x, y) in enumerate(zip(self.steps, xs, ys)):
            if i not in self.shared:
                step(x, y)  # eagerly, or its own graph
        if not self.shared:
            return
        if self.graph is None:
            parts = [
                (self.steps[i].replayable(xs[i], ys[i]), self.steps[i].m.model, self.steps[i].m.opt, self.steps[i].sums)
                for i in self.shared
            ]
            self.graph = capture_together(parts, xs[self.shared[0]].device)
        for i in self.shared:
            self.steps[i].x.copy_(xs[i])
            self.steps[i].y.copy_(ys[i])
        self.graph.replay()
