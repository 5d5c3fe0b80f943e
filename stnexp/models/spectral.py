"""Valid convolutions computed through the discrete Fourier transform, written as matrix products.

A valid cross-correlation of an H x W image with a kernel no larger is the pointwise product of their
H x W DFTs (the kernel's conjugated) transformed back: the wrap-around of the circular correlation
only reaches outputs past the valid ones. Each 2-D DFT is two small matrix products (rows, then
columns), the product a batch of (batch x c_in) @ (c_in x c_out) matrix products, one per frequency.
For conv2 of the paper's CNN (32 -> 64 channels, 7x7 on 17x17) that is about a fifth of the direct
convolution's multiply-adds, and autograd's backward pass through the same products is as cheap; on
a CPU without bf16 matrix units oneDNN's backward of that conv costs several times its forward
(docs/performance.md has the figures). Only plain differentiable ops are used, so autograd needs no backward of its
own; values and gradients agree with F.conv2d's to float rounding (tests/test_models.py, on the CPU:
the only place kernels.Conv calls it).
"""

from __future__ import annotations

import functools
import math

import torch


@functools.lru_cache(maxsize=16)
def bases(h: int, w: int, out_h: int, out_w: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """The DFT matrices for h x w signals (w's half spectrum: real signals), built in float64 and
    rounded once. Forward: `w` (2M x w: cos rows, then -sin rows; M = w // 2 + 1) and `cos_h`, `sin_h`
    (h x h). Inverse to the out_h x out_w top-left outputs: `inv_re`, `inv_im` (2 out_h x h, rows
    ordered (output row, real/imaginary)) and `inv_w` (out_w x 2M). `kernel`: the spectra of the
    (h - out_h + 1) x (w - out_w + 1) kernels as one matrix (2 x H x M rows)."""
    m = w // 2 + 1
    ang_w = 2 * math.pi * torch.outer(torch.arange(m, dtype=torch.float64), torch.arange(w, dtype=torch.float64)) / w
    ang_h = 2 * math.pi * torch.outer(torch.arange(h, dtype=torch.float64), torch.arange(h, dtype=torch.float64)) / h
    cos_h, sin_h = torch.cos(ang_h), torch.sin(ang_h)
    # the inverse: along the rows a full complex DFT, along the columns the half spectrum counted twice
    # except the constant term (and the Nyquist term of an even w), which appear once
    twice = torch.full((m, 1), 2.0, dtype=torch.float64)
    twice[0] = 1.0
    if w % 2 == 0:
        twice[-1] = 1.0
    ci, si = cos_h[:, :out_h].t() / h, sin_h[:, :out_h].t() / h
    cj, sj = (torch.cos(ang_w) * twice)[:, :out_w].t() / w, (torch.sin(ang_w) * twice)[:, :out_w].t() / w
    made = {
        "w": torch.cat([torch.cos(ang_w), -torch.sin(ang_w)]),
        "cos_h": cos_h,
        "sin_h": sin_h,
        "inv_re": torch.stack([ci, si], 1).reshape(2 * out_h, h),
        "inv_im": torch.stack([-si, ci], 1).reshape(2 * out_h, h),
        "inv_w": torch.cat([cj, -sj], 1),
    }
    # the kernels' spectra in one product: what spectrum() makes of each one-pixel kernel, as the
    # rows of a (2 H M) x (kernel pixels) matrix (the kernel is a few dozen numbers; its two small
    # products cost more in their layouts than in arithmetic)
    kh, kw = h - out_h + 1, w - out_w + 1
    re, im = spectrum(torch.eye(kh * kw, dtype=torch.float64).view(kh * kw, kh, kw), made)
    made["kernel"] = torch.stack([re, im])
    return {k: v.to(dtype=dtype, device=device).contiguous() for k, v in made.items()}


def spectrum(x: torch.Tensor, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the H x W DFT of each of the P images x (P x h x w, h <= H, w <= W,
    zero-padded to H x W by using the first rows and columns of the bases), frequency-major: H x M x P."""
    p, h, w = x.shape
    m = b["w"].shape[0] // 2
    # columns first: (2M x w) @ (w x P*h) -> real and imaginary parts, each M x P x h
    re, im = (b["w"][:, :w] @ x.reshape(p * h, w).t()).split(m)
    re, im = re.reshape(m * p, h).t(), im.reshape(m * p, h).t()  # h x M*P views
    cos, sin = b["cos_h"][:, :h], b["sin_h"][:, :h]
    # then rows: e^{-i theta} (re + i im)
    x_re = torch.addmm(cos @ re, sin, im)
    x_im = torch.addmm(cos @ im, sin, re, alpha=-1)
    return x_re, x_im  # each H x M*P, that is H x M x P


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d(x, weight, bias) with stride 1, no padding, no groups, through the DFT. The result is in
    channels_last memory layout (the cheaper one to write from the frequency-major products)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    out_h, out_w = h - kh + 1, w - kw + 1
    b = bases(h, w, out_h, out_w, x.dtype, x.device)
    m = w // 2 + 1
    freqs = h * m
    x_re, x_im = spectrum(x.contiguous().view(n * c, h, w), b)
    w_re, w_im = (b["kernel"].view(2 * freqs, kh * kw) @ weight.reshape(o * c, kh * kw).t()).view(2, freqs, o, c)
    x_re, x_im = x_re.view(freqs, n, c), x_im.view(freqs, n, c)
    w_re, w_im = w_re.transpose(1, 2), w_im.transpose(1, 2)  # F x c x o
    # correlation: X times the kernel's conjugate, at every frequency a (n x c) @ (c x o) product
    y_re = torch.baddbmm(torch.bmm(x_re, w_re), x_im, w_im)
    y_im = torch.baddbmm(torch.bmm(x_im, w_re), x_re, w_im, alpha=-1)
    q = n * o
    # back: rows (H -> out_h, complex), then columns (M -> out_w, real)
    g = torch.addmm(b["inv_re"] @ y_re.view(h, m * q), b["inv_im"], y_im.view(h, m * q))  # out_h x 2 x M x q
    y = torch.matmul(b["inv_w"], g.view(out_h, 2 * m, q))  # out_h x out_w x q
    y = y.view(out_h, out_w, n, o).permute(2, 3, 0, 1).contiguous(memory_format=torch.channels_last)
    if bias is not None:
        y = y + bias.view(1, o, 1, 1)
    return y
