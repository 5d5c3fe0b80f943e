"""Several models stepped together (`train.fuse`): `Together` keeps each member's own module and
optimizer (any architectures) and captures their steps into one CUDA graph, each on its own stream, so
the GPU may run the small kernels of several models at once. The other way, one stacked model for
models of one architecture (vmap), is stacked.py's, which only the benchmark uses.

Measured with `scripts/bench.py --fused S`. `stnexp train` with `train.fuse: on` trains each variant's
seeds in lockstep and takes every step of all their models through one Together; `auto` turns that on
where it has been measured faster: on CUDA with graphs (wanted()).
"""

from __future__ import annotations

import torch

from stnexp.config import TrainConfig
from stnexp.training.step import TrainStep, capture_together


def wanted(t: TrainConfig, device: torch.device) -> bool:
    """Whether `stnexp train` steps models together (train.fuse). auto: where it was measured faster,
    on CUDA with graphs (one graph with a stream per model; the figures are in docs/performance.md). Not
    on a CPU, where Together is one model after another anyway, nor where the steps are not graphed
    (eager steps, data-parallel ones)."""
    if t.fuse != "auto":
        return t.fuse == "on"
    return device.type == "cuda" and t.cuda_graphs and t.parallel != "data"


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
