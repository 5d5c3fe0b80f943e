"""Sampling grids and the one bilinear sampler, shared by the data generator and the spatial transformer.

A grid says, for every output pixel, where in the input to read (x, y normalised to [-1, 1]): one
generator per family of transforms (affine 2x3, projective 3x3, thin-plate spline from control points),
then `sample`. align_corners is False everywhere: with it the identity reproduces the input and pixel
centres, not corners, sit on the grid. Grids and sampling always run in float32: a bfloat16 grid is
off by a fraction of a pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGN_CORNERS = False


def _fp32(device: torch.device):
    return torch.autocast(device.type, enabled=False)


def theta_from_params(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Sampling matrices [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]], shape N x 2 x 3.

    With y pointing down, sampling through this matrix turns the content counter-clockwise by `angle`
    (radians), shrinks it by `scale` and moves it by -(tx, ty) (normalised units).
    """
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack([torch.stack([c, -s, tx], -1), torch.stack([s, c, ty], -1)], -2)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def base_grid(size: int | tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """The identity grid, h x w x 2: pixel centres in normalised coordinates (align_corners=False)."""
    h, w = _size(size)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def affine_grid(theta: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """N x h x w x 2 grid of the 2x3 matrices theta (output coordinates -> input coordinates): torch's
    affine_grid written out as its own base grid times theta, bit for bit its values on the CPU. As a
    plain batched matmul it has a batching rule, so models stepped together under vmap (stacked.py) build
    their grids in one op; torch's has none, ran once per model and warned of a "performance drop"."""
    h, w = _size(size)
    with _fp32(theta.device):
        theta = theta.float()
        base = torch.ones(h, w, 3, device=theta.device)
        # torch's linspace_from_neg_one with align_corners=False (ALIGN_CORNERS): the same two roundings
        base[..., 0] = torch.linspace(-1, 1, w, device=theta.device) * (w - 1) / w
        base[..., 1] = (torch.linspace(-1, 1, h, device=theta.device) * (h - 1) / h).unsqueeze(-1)
        return base.view(1, h * w, 3).expand(theta.shape[0], -1, -1).bmm(theta.transpose(1, 2)).view(-1, h, w, 2)


def projective_grid(matrix: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """N x h x w x 2 grid of the 3x3 homographies `matrix` (output (x, y, 1) -> input, then divided by
    the third coordinate). A matrix whose last row is (0, 0, 1) gives the affine grid of its top rows."""
    h, w = _size(size)
    return project(matrix, base_grid(size, matrix.device).reshape(-1, 2)).reshape(-1, h, w, 2)


def homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3x3 matrices (N x 3 x 3, last entry 1) that send the four points src (4 x 2, or N x 4 x 2) to
    dst (N x 4 x 2): the direct linear transform, an 8 x 8 system per matrix, solved in float32."""
    with _fp32(dst.device):
        dst = dst.float()
        src = src.float().expand_as(dst)
        x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], -1)
        rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], -1)
        a = torch.cat([rows_u, rows_v], 1)  # N x 8 x 8
        h = torch.linalg.solve(a, torch.cat([u, v], 1))
        return torch.cat([h, torch.ones_like(h[:, :1])], 1).view(-1, 3, 3)


def project(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points (P x 2, or N x P x 2) through the 3x3 homographies `matrix` (N x 3 x 3): N x P x 2."""
    with _fp32(matrix.device):
        points = points.float()
        q = torch.cat([points, torch.ones_like(points[..., :1])], -1)
        q = torch.einsum("nij,npj->npi", matrix.float(), q.expand(matrix.shape[0], -1, -1))
        return q[..., :2] / q[..., 2:]


def affine_points(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points (P x 2, or N x P x 2) through the 2x3 matrices theta (N x 2 x 3): N x P x 2."""
    with _fp32(theta.device):
        theta = theta.float()
        return points.float() @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]


def control_points(k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A k x k lattice of thin-plate-spline control points spanning [-1, 1]^2, (k*k) x 2, row by row."""
    t = torch.linspace(-1.0, 1.0, k, device=device)
    return torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 2)


def _tps_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2 between every point of a (... x P x 2) and of b (K x 2), ... x P x K."""
    r2 = (a[..., :, None, :] - b).pow(2).sum(-1)
    return r2 * torch.log(r2.clamp_min(1e-12))


_TPS_INVERSE: dict[tuple[int, str], torch.Tensor] = {}
_TPS_GRID_WEIGHTS: dict[tuple[int, int, int, str], torch.Tensor] = {}


def _precise(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _tps_inverse(k: int, device: torch.device) -> torch.Tensor:
    """The inverse of the spline's linear system [[U(c, c), P], [P^T, 0]], which depends on the k x k
    control points alone: computed once per (k, device) in float64. A solve per call would cost more and
    cannot run inside a CUDA graph's capture (the uncaptured warm-up steps fill these caches)."""
    key = (k, str(device))
    if key not in _TPS_INVERSE:
        c = control_points(k).double()
        n_c = c.shape[0]
        p = torch.cat([torch.ones(n_c, 1, dtype=c.dtype), c], 1)
        system = torch.zeros(n_c + 3, n_c + 3, dtype=c.dtype)
        system[:n_c, :n_c] = _tps_kernel(c, c)
        system[:n_c, n_c:] = p
        system[n_c:, :n_c] = p.T
        _TPS_INVERSE[key] = torch.linalg.inv(system).to(device, _precise(device))
    return _TPS_INVERSE[key]


def _tps_weights(points: torch.Tensor, k: int) -> torch.Tensor:
    """W with spline(points) = W @ targets: the spline's value at each point is a fixed blend of where
    the control points go (... x P x k*k), computed in float64."""
    dtype = _precise(points.device)
    c = control_points(k, points.device).to(dtype)
    points = points.to(dtype)
    basis = torch.cat([_tps_kernel(points, c), torch.ones_like(points[..., :1]), points], -1)
    return basis @ _tps_inverse(k, points.device)[:, : k * k]


def tps_map(targets: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """The thin-plate spline that sends the k x k control points (control_points(k)) to `targets`
    (N x k*k x 2), evaluated at `points` (P x 2, or N x P x 2): N x P x 2. It bends as little as it can in
    between and reproduces any affine map exactly."""
    with _fp32(targets.device):
        return (_tps_weights(points, k) @ targets.to(_precise(targets.device))).float()


def tps_grid(targets: torch.Tensor, size: int | tuple[int, int], k: int) -> torch.Tensor:
    """N x h x w x 2 grid of the thin-plate spline that sends control point i (of control_points(k)) to
    targets[:, i]: output point c_i reads the input at targets[:, i]. targets == control_points(k) gives
    the identity grid. The blend weights of the grid's points are computed once per (k, size, device), so
    a transformer's step is one float32 matrix product."""
    h, w = _size(size)
    key = (k, h, w, str(targets.device))
    if key not in _TPS_GRID_WEIGHTS:
        _TPS_GRID_WEIGHTS[key] = _tps_weights(base_grid(size, targets.device).reshape(-1, 2), k).float()
    with _fp32(targets.device):
        return (_TPS_GRID_WEIGHTS[key] @ targets.float()).reshape(-1, h, w, 2)


def sample(images: torch.Tensor, grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear sampling of `images` (N x C x h x w) at `grid` (N x H x W x 2), float32; outside the
    images zeros (the canvas's background), or with `padding="border"` their edge (for inputs already
    normalised, whose background is not 0)."""
    with _fp32(images.device):
        return F.grid_sample(
            images.float(), grid.float(), mode="bilinear", padding_mode=padding, align_corners=ALIGN_CORNERS
        )


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


def fit_shift_range(
    box: torch.Tensor, angle_deg: torch.Tensor, scale: torch.Tensor, canvas: int, margin: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
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
