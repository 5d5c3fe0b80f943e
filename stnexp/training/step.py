"""One model's training step, eager or captured once as a CUDA graph and replayed, sharing one
definition; the running loss and the count of correct predictions stay on the device."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from stnexp.config import TrainConfig
from stnexp.training.members import Member, own_rng


class Sums:
    """An epoch's running loss and correct-prediction count, on the device (read a few times a second);
    one per model (`shape` (): a model; (S,): a stack of S models, stacked.py)."""

    def __init__(self, device: torch.device, shape: tuple[int, ...] = ()):
        self.loss = torch.zeros(shape, device=device)
        self.correct = torch.zeros(shape, dtype=torch.long, device=device)

    def zero(self) -> None:
        # in place: a captured graph adds into these very tensors
        self.loss.zero_()
        self.correct.zero_()


def update(m: Member, x: torch.Tensor, y: torch.Tensor, sums: Sums, autocast, label_smoothing: float) -> None:
    """The step itself: forward, loss, backward, optimizer step, running sums. The gradients are unset
    between forward and backward: the previous step's are freed only once the forward has allocated its
    activations (faster on the CPU than unsetting them first: docs/performance.md). Under capture the
    graph's backward then writes fresh gradients each replay."""
    with autocast():
        logits = (m.ddp or m.model)(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    m.opt.zero_grad(set_to_none=True)
    loss.backward()
    m.opt.step()
    sums.loss += loss.detach()
    sums.correct += (logits.argmax(1) == y).sum()


class TrainStep:
    """Calls update() for one member: eagerly, or, on CUDA with `train.cuda_graphs` and no dropout,
    through a CUDA graph captured at the first call. These nets are tiny, so an eager step spends its
    time launching ~100 kernels, not running them. Learning rates live in device tensors that the
    scheduler fills between replays. Capture needs a few warm-up steps; the weights, buffers and
    optimizer state are put back afterwards, so the run trains exactly as many steps as the eager one."""

    WARMUP = 3

    def __init__(self, m: Member, t: TrainConfig, dtype: torch.dtype | None):
        device = next(m.model.parameters()).device
        self.m, self.ls, self.dtype, self.device_type = m, t.label_smoothing, dtype, device.type
        self.sums = Sums(device)
        # a data-parallel step all-reduces its gradients between ranks: no graph around that
        self.graphed = t.cuda_graphs and device.type == "cuda" and not m.dropout and m.ddp is None
        self.graph: torch.cuda.CUDAGraph | None = None

    def _autocast(self, cache: bool = True):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=cache)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not self.graphed:
            with own_rng(self.m) if self.m.dropout else nullcontext():
                update(self.m, x, y, self.sums, self._autocast, self.ls)
            return
        if self.graph is None:
            self._capture(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.graph = capture(self.replayable(x, y), self.m.model, self.m.opt, self.sums, x.device)

    def replayable(self, x: torch.Tensor, y: torch.Tensor):
        """The step as a graph replays it: reading its batch from fixed tensors (first holding x, y)."""
        self.x, self.y = x.clone(), y.clone()
        autocast = lambda: self._autocast(cache=False)  # noqa: E731 (a cache would outlive the capture)
        return lambda: update(self.m, self.x, self.y, self.sums, autocast, self.ls)


def capture(
    step, module: torch.nn.Module, opt: torch.optim.Optimizer, sums: Sums, device: torch.device
) -> torch.cuda.CUDAGraph:
    """`step()` (reading its inputs from fixed tensors) captured as a CUDA graph after WARMUP eager
    calls on a side stream; the weights and buffers of `module`, the state of `opt` and `sums` are put
    back to what they were before, so that training takes exactly the steps the eager run would.
    Learning rates move into device tensors that the scheduler fills between replays."""
    return capture_together([(step, module, opt, sums)], device)


def capture_together(parts: list[tuple], device: torch.device) -> torch.cuda.CUDAGraph:
    """capture() of several steps, `parts` of (step, module, opt, sums), into one graph. With more than
    one, each step runs on its own stream, forked from the capture stream and joined back, so the graph
    has a branch per step that the GPU may run side by side: small models leave most of a GPU idle."""
    saved = [_snapshot(module, opt, sums, device) for _, module, opt, sums in parts]
    streams = [torch.cuda.Stream() for _ in parts]
    _fork(streams)
    for _ in range(TrainStep.WARMUP):
        for stream, (step, *_rest) in zip(streams, parts):
            with torch.cuda.stream(stream):
                step()
    _join(streams)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        if len(parts) == 1:
            parts[0][0]()
        else:
            _fork(streams)
            for stream, (step, *_rest) in zip(streams, parts):
                with torch.cuda.stream(stream):
                    step()
            _join(streams)
    for (_, module, opt, sums), before in zip(parts, saved):
        _restore(module, opt, sums, before)
    return graph


def _fork(streams: list[torch.cuda.Stream]) -> None:
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream())


def _join(streams: list[torch.cuda.Stream]) -> None:
    for stream in streams:
        torch.cuda.current_stream().wait_stream(stream)


def _snapshot(module: torch.nn.Module, opt: torch.optim.Optimizer, sums: Sums, device: torch.device) -> tuple:
    """Move the learning rates into device tensors (the graph reads them there), then copy what the
    warm-up will change: weights and buffers, optimizer state, sums."""
    for group in opt.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    return (
        {k: v.clone() for k, v in module.state_dict().items()},
        {p: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()} for p, st in opt.state.items()},
        (sums.loss.clone(), sums.correct.clone()),
    )


@torch.no_grad()
def _restore(module: torch.nn.Module, opt: torch.optim.Optimizer, sums: Sums, saved: tuple) -> None:
    """Undo the warm-up: the same tensors (the graph holds their addresses), the values from before."""
    saved_model, saved_opt, saved_sums = saved
    for k, v in module.state_dict().items():
        v.copy_(saved_model[k])
    for p, st in opt.state.items():
        before = saved_opt.get(p, {})
        for k, v in st.items():
            if torch.is_tensor(v):
                # a state that did not exist yet starts at zero: SGD's first momentum step
                # (buf = grad) and Adam's zero moments at step 0 are exactly that
                v.copy_(before[k]) if k in before else v.zero_()
    sums.loss.copy_(saved_sums[0])
    sums.correct.copy_(saved_sums[1])
