"""stnexp's own CPU kernels for the backbones' valid convolutions, behind one switch.

`Conv` (conv2) and `ImageConv` (conv1) are nn.Conv2d (the same weights, draws and state_dict keys) whose
training steps on the CPU take faster paths: conv2's forward and backward through the DFT
(spectral.conv2d), and conv1's gradient with respect to the images as a depthwise convolution. Their
measured reasons are in RESULTS.md and docs/performance.md. Evaluation (no gradient: scores stay
nn.Conv2d's), CUDA (cuDNN), bf16 autocast (oneDNN's AMX kernels) and vmap (stacked.Stack) take nn.Conv2d's
own path.

The switch: `kernels.enabled()`, `kernels.set_enabled(False)` or `with kernels.switched(False):` run
nn.Conv2d's own kernels everywhere (scripts/bench.py's conventional pipeline does).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stnexp.models import spectral

_enabled = True


def enabled() -> bool:
    """Whether the fast CPU kernels run where they apply."""
    return _enabled


def set_enabled(on: bool) -> None:
    global _enabled
    _enabled = bool(on)


@contextmanager
def switched(on: bool) -> Iterator[None]:
    """The switch set to `on` for the body of the `with`, then back as it was."""
    before = _enabled
    set_enabled(on)
    try:
        yield
    finally:
        set_enabled(before)


def _plain(conv: nn.Conv2d) -> bool:
    return conv.stride == (1, 1) and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1


class Conv(nn.Conv2d):
    """A valid convolution of feature maps (conv2): on the CPU in fp32 with a gradient, forward and
    backward through the DFT (oneDNN's backward of conv2 costs several times its forward there). Under vmap
    neither input reports that it requires a gradient, so the plain path runs there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            _enabled
            and _plain(self)
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and (x.requires_grad or self.weight.requires_grad)
        ):
            return spectral.conv2d(x, self.weight, self.bias)
        return super().forward(x)


class ImageConv(nn.Conv2d):
    """A valid convolution of one-channel images (conv1): its gradient with respect to the images, when
    one is needed (behind a transformer at the input), computed on the CPU as a depthwise convolution
    summed over the channels (oneDNN's own for one input channel costs several forward passes). Under
    vmap images do not report that they require a gradient, so the plain path runs there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _enabled and _plain(self) and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled():
            return _ImageConvFn.apply(x, self.weight, self.bias)
        return super().forward(x)


class _ImageConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        # under autocast conv2d would run in its lower precision: do the same casts here, by hand, and
        # keep what the convolution saw for the backward pass
        ctx.dtypes = (x.dtype, w.dtype, b.dtype if b is not None else None)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        x, w, b = x.to(dtype), w.to(dtype), (b.to(dtype) if b is not None else None)
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x, w, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        g = g.to(x.dtype)
        _, gw, gb = torch.ops.aten.convolution_backward(
            g,
            x,
            w,
            [w.shape[0]],
            [1, 1],
            [0, 0],
            [1, 1],
            False,
            [0, 0],
            1,
            [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
        )
        gx = None
        if ctx.needs_input_grad[0]:
            # the full correlation of each channel's gradient with its own flipped kernel, then the sum
            # over channels: a depthwise forward conv, which oneDNN runs fast (faster than the same as
            # a transposed conv or as one conv from all channels to one: docs/performance.md)
            gx = F.conv2d(g, w.flip(2, 3), groups=w.shape[0], padding=(w.shape[-2] - 1, w.shape[-1] - 1)).sum(
                1, keepdim=True
            )
        dx, dw, db = ctx.dtypes
        return (
            gx.to(dx) if gx is not None else None,
            gw.to(dw) if gw is not None else None,
            gb.to(db) if gb is not None else None,
        )
