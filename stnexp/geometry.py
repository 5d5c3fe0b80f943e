"""The geometric primitive shared by the data generator and the spatial transformer.

Parameters -> a batch of 2x3 sampling matrices theta (output coordinates -> input coordinates, both
normalised to [-1, 1]) -> F.affine_grid + F.grid_sample. align_corners is False everywhere: with it, the
identity theta reproduces the input and pixel centres, not corners, sit on the grid. Warping always
runs in float32: a bfloat16 grid is off by a fraction of a pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGN_CORNERS = False


def theta_from_params(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Sampling matrices [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]], shape N x 2 x 3.

    With y pointing down, sampling through this matrix turns the content counter-clockwise by `angle`
    (radians), shrinks it by `scale` and moves it by -(tx, ty) (normalised units).
    """
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack([torch.stack([c, -s, tx], -1), torch.stack([s, c, ty], -1)], -2)


def distortion_theta(angle_deg: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """Theta that places an in_size digit into an out_size canvas: turned counter-clockwise by angle_deg,
    scaled by `scale`, its centre moved by `shift` (N x 2, pixels, x right and y down).

    The forward placement p_out = scale * R(angle) p_in + shift is inverted here, since grid_sample asks
    where each output pixel comes from. Square images only, so rotations stay rotations (no shear).
    """
    a = angle_deg * (math.pi / 180.0)
    zoom = out_size / (in_size * scale)
    # -(2 / (in_size * scale)) * R_cw(a) @ shift: the shift expressed in the input's normalised units
    k = -2.0 / (in_size * scale)
    c, s = torch.cos(a), torch.sin(a)
    tx = k * (c * shift[:, 0] - s * shift[:, 1])
    ty = k * (s * shift[:, 0] + c * shift[:, 1])
    return theta_from_params(a, zoom, tx, ty)


def warp(images: torch.Tensor, theta: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear sampling of `images` (N x C x h x w) through theta onto a size x size grid, zero padding, fp32."""
    h, w = (size, size) if isinstance(size, int) else size
    with torch.autocast(images.device.type, enabled=False):
        images, theta = images.float(), theta.float()
        grid = F.affine_grid(theta, [images.shape[0], images.shape[1], h, w], align_corners=ALIGN_CORNERS)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """Per image (N x h x w), the box around its non-zero pixels as (x0, x1, y0, y1) in pixels from the centre."""
    n, h, w = images.shape
    ink = images > 0
    cols, rows = ink.any(1), ink.any(2)
    ar_w = torch.arange(w, device=images.device)
    ar_h = torch.arange(h, device=images.device)
    big = torch.tensor(10**6, device=images.device)
    x0 = torch.where(cols, ar_w, big).min(1).values
    x1 = torch.where(cols, ar_w, -big).max(1).values + 1
    y0 = torch.where(rows, ar_h, big).min(1).values
    y1 = torch.where(rows, ar_h, -big).max(1).values + 1
    box = torch.stack([x0 - w / 2, x1 - w / 2, y0 - h / 2, y1 - h / 2], 1).float()
    empty = ~ink.flatten(1).any(1)
    # a blank image has no ink to keep inside; give it a point box at the centre
    return torch.where(empty[:, None], torch.zeros_like(box), box)


def fit_shift_range(box: torch.Tensor, angle_deg: torch.Tensor, scale: torch.Tensor, canvas: int, margin: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image, the [lo, hi] shift (N x 2 each) that keeps its turned and scaled ink box inside the
    canvas, `margin` pixels from the edge (bilinear sampling spreads ink by up to one pixel).
    Where the digit cannot fit, lo = hi = the centring shift."""
    a = angle_deg * (math.pi / 180.0)
    c, s = torch.cos(a)[:, None], torch.sin(a)[:, None]
    xs = box[:, [0, 1, 1, 0]]
    ys = box[:, [2, 2, 3, 3]]
    # counter-clockwise turn with y down: x' = x cos + y sin, y' = -x sin + y cos
    px = scale[:, None] * (xs * c + ys * s)
    py = scale[:, None] * (-xs * s + ys * c)
    lo_min = torch.stack([px.min(1).values, py.min(1).values], 1)
    hi_max = torch.stack([px.max(1).values, py.max(1).values], 1)
    half = canvas / 2 - margin
    lo, hi = -half - lo_min, half - hi_max
    mid = (lo + hi) / 2
    bad = lo > hi
    return torch.where(bad, mid, lo), torch.where(bad, mid, hi)
