"""The kinds of distortion a variant applies to its digits. Each kind draws its parameters per digit from
its own named random stream, keeps them (the true distortion of every digit), and takes part in
rendering the digit on the variant's canvas, in this order:

- `pose`: rotation, scale and placement on the canvas (keys `rotation`, `scale`, `translation`,
  `canvas`); every variant has it.
- `projective` (key `corner_jitter`): each of the canvas's four corners moves by N(0, corner_jitter px)
  along x and y; the homography through the moved corners warps the posed digit.
- `elastic` (keys `elastic_jitter`, `elastic_grid`): each point of an elastic_grid x elastic_grid
  lattice over the canvas moves by N(0, elastic_jitter px); the thin-plate spline through them warps it.
- `clutter` (keys `patches`, `patch_size`): patches cut at random places from random digits of the same
  split are painted onto the canvas (pixel-wise maximum, so the digit stays whole).

The warps are sampling (backward) maps: a moved corner or control point says where that point of the
output reads the image before the warp, so the content there moves by minus the jitter, which has the
same distribution. All warps compose into one grid and the digit is sampled once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from stnexp import geometry, pose, seeds
from stnexp.config import ClutterKeys, ElasticKeys, PoseKeys, ProjectiveKeys, VariantConfig

IN_SIZE = 28  # MNIST digits are 28 x 28

# True parameters per digit, by name, each with the digits along its first dimension.
Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Kind:
    """One kind of distortion: `keys`, the class of its config keys (config/variants.py: its own, as a
    backbone's schema is; VariantConfig is all of them); `used(spec)` says whether a variant applies it,
    `identity(spec)` whether it then leaves every digit as it is, `sample(gen, spec, boxes, pool)` draws
    its parameters for len(boxes) digits (boxes: geometry.ink_boxes of the digits; pool: how many digits
    the split holds).
    A warping kind has `warp(params, spec, points)`: where each of `points` (P x 2 or N x P x 2, the
    canvas after this kind, normalised) reads the canvas before it, N x P x 2. A painting kind has
    `paint(images, params, spec, pool)`, applied to the sampled canvas."""

    keys: type
    used: Callable[[VariantConfig], bool]
    identity: Callable[[VariantConfig], bool]
    sample: Callable[[torch.Generator, VariantConfig, torch.Tensor, int], Params]
    warp: Optional[Callable[[Params, VariantConfig, torch.Tensor], torch.Tensor]] = None
    paint: Optional[Callable[[torch.Tensor, Params, VariantConfig, torch.Tensor], torch.Tensor]] = None


def _never(spec: VariantConfig) -> bool:
    return False


def _normal(gen: torch.Generator, shape: tuple[int, ...], std: float, device: torch.device) -> torch.Tensor:
    return (torch.randn(*shape, generator=gen, device=gen.device) * std).to(device)


# ---------------------------------------------------------------- pose: rotation, scale, placement


def _pose_identity(spec: VariantConfig) -> bool:
    return spec.canvas == IN_SIZE and spec.rotation == (0.0, 0.0) and spec.scale == (1.0, 1.0) and spec.translation == 0


def _pose_sample(gen: torch.Generator, spec: VariantConfig, boxes: torch.Tensor, pool: int) -> Params:
    """angle (degrees), scale, shift (N x 2, px) drawn uniformly in their ranges; translation 'fit' keeps
    each digit's ink box inside the canvas. One draw of N x 4 uniforms, as in version 0.1."""
    n, dev = boxes.shape[0], boxes.device
    u = torch.rand(n, 4, generator=gen, device=gen.device).to(dev)
    lo, hi = spec.rotation
    angle = lo + (hi - lo) * u[:, 0]
    lo, hi = spec.scale
    scale = lo + (hi - lo) * u[:, 1]
    if spec.translation == "fit":
        smin, smax = geometry.fit_shift_range(boxes, angle, scale, spec.canvas)
        shift = smin + (smax - smin) * u[:, 2:]
    else:
        shift = (2 * u[:, 2:] - 1) * float(spec.translation)
    return {pose.ANGLE.name: angle, pose.SCALE.name: scale, pose.SHIFT.name: shift}


def _pose_theta(params: Params, canvas: int) -> torch.Tensor:
    return pose.theta(params, IN_SIZE, canvas)


def pose_grid(params: Params, canvas: int) -> torch.Tensor:
    """The grid that reads each digit's pixels for its place on the canvas."""
    return geometry.affine_grid(_pose_theta(params, canvas), canvas)


def _pose_warp(params: Params, spec: VariantConfig, points: torch.Tensor) -> torch.Tensor:
    return geometry.affine_points(_pose_theta(params, spec.canvas), points)


# ---------------------------------------------------------------- projective: the four corners jitter

CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))  # the canvas's corners, normalised


def _projective_sample(gen: torch.Generator, spec: VariantConfig, boxes: torch.Tensor, pool: int) -> Params:
    """corners: N x 4 x 2, each corner's move in px (top-left, top-right, bottom-right, bottom-left)."""
    return {"corners": _normal(gen, (boxes.shape[0], 4, 2), spec.corner_jitter, boxes.device)}


def _projective_warp(params: Params, spec: VariantConfig, points: torch.Tensor) -> torch.Tensor:
    corners = torch.tensor(CORNERS, device=params["corners"].device)
    matrix = geometry.homography(corners, corners + params["corners"] * (2.0 / spec.canvas))
    return geometry.project(matrix, points)


# ---------------------------------------------------------------- elastic: a thin-plate spline


def _elastic_sample(gen: torch.Generator, spec: VariantConfig, boxes: torch.Tensor, pool: int) -> Params:
    """elastic: N x k*k x 2, each control point's move in px (geometry.control_points order)."""
    return {"elastic": _normal(gen, (boxes.shape[0], spec.elastic_grid**2, 2), spec.elastic_jitter, boxes.device)}


def _elastic_warp(params: Params, spec: VariantConfig, points: torch.Tensor) -> torch.Tensor:
    k, moves = spec.elastic_grid, params["elastic"]
    targets = geometry.control_points(k, moves.device) + moves * (2.0 / spec.canvas)
    return geometry.tps_map(targets, points, k)


# ---------------------------------------------------------------- clutter: patches of other digits


def _clutter_sample(gen: torch.Generator, spec: VariantConfig, boxes: torch.Tensor, pool: int) -> Params:
    """patch_digit: N x patches, the index (in the split) of the digit each patch is cut from;
    patch_from: N x patches x 2, its top-left (x, y) in that 28 x 28 digit; patch_at: N x patches x 2,
    where its top-left goes on the canvas."""
    n, k, dev = boxes.shape[0], spec.patches, boxes.device
    u = torch.rand(n, k, 5, generator=gen, device=gen.device).to(dev)
    src = (u[..., 0] * pool).long().clamp_max(pool - 1)
    cut = ((IN_SIZE - spec.patch_size + 1) * u[..., 1:3]).long()
    at = ((spec.canvas - spec.patch_size + 1) * u[..., 3:5]).long()
    return {"patch_digit": src, "patch_from": cut, "patch_at": at}


def _clutter_paint(images: torch.Tensor, params: Params, spec: VariantConfig, pool: torch.Tensor) -> torch.Tensor:
    n, c, ps = images.shape[0], spec.canvas, spec.patch_size
    ar = torch.arange(ps, device=images.device)
    src, cut, at = params["patch_digit"].flatten(), params["patch_from"].flatten(0, 1), params["patch_at"].flatten(0, 1)
    rows = (cut[:, 1, None, None] + ar[None, :, None]).expand(-1, ps, ps)
    cols = (cut[:, 0, None, None] + ar[None, None, :]).expand(-1, ps, ps)
    patches = pool[src[:, None, None].expand(-1, ps, ps), rows, cols].float().div_(255.0)  # N*k x ps x ps
    where = (at[:, 1, None, None] + ar[None, :, None]) * c + (at[:, 0, None, None] + ar[None, None, :])
    where = where.reshape(n, -1)
    out = images.reshape(n, c * c).clone()
    out.scatter_reduce_(1, where, patches.reshape(n, -1).to(out.dtype), reduce="amax")
    return out.view_as(images)


# pose is the base of every variant: it puts the digit on the canvas. The order is the order of application.
KINDS: dict[str, Kind] = {
    "pose": Kind(PoseKeys, lambda spec: True, _pose_identity, _pose_sample, warp=_pose_warp),
    "projective": Kind(
        ProjectiveKeys, lambda spec: spec.corner_jitter > 0, _never, _projective_sample, warp=_projective_warp
    ),
    "elastic": Kind(ElasticKeys, lambda spec: spec.elastic_jitter > 0, _never, _elastic_sample, warp=_elastic_warp),
    "clutter": Kind(ClutterKeys, lambda spec: spec.patches > 0, _never, _clutter_sample, paint=_clutter_paint),
}


# ---------------------------------------------------------------- all kinds together


def used(spec: VariantConfig) -> list[str]:
    """The kinds a variant applies, in the order they apply."""
    return [name for name, kind in KINDS.items() if kind.used(spec)]


def is_identity(spec: VariantConfig) -> bool:
    """Whether the variant leaves every digit as it is (its training batches then skip rendering)."""
    return all(KINDS[name].identity(spec) for name in used(spec))


def generators(device: torch.device | str, spec: VariantConfig, *parts: object) -> dict[str, torch.Generator]:
    """One random stream per kind the variant uses, named by `parts` (seed, variant, split, ...). Pose
    draws from the stream named by `parts` alone, as in version 0.1, so existing variants keep their
    digits bit for bit; every other kind draws from its own stream, named after it as well."""
    return {
        name: seeds.generator(device, *parts) if name == "pose" else seeds.generator(device, *parts, name)
        for name in used(spec)
    }


def sample(
    gens: dict[str, torch.Generator], spec: VariantConfig, boxes: torch.Tensor, pool: int | None = None
) -> Params:
    """Parameters of every kind the variant uses for len(boxes) digits; `pool` is the number of digits in
    their split (clutter cuts its patches from them), by default len(boxes)."""
    pool = len(boxes) if pool is None else pool
    params: Params = {}
    for name in gens:
        params.update(KINDS[name].sample(gens[name], spec, boxes, pool))
    return params


def render(digits: torch.Tensor, params: Params, spec: VariantConfig, pool: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 digits N x 28 x 28 -> float N x 1 x canvas x canvas in [0, 1], background 0. `pool` holds
    the split's digits that params["patch_digit"] indexes (default: `digits`)."""
    x = digits.unsqueeze(1).float().div_(255.0)
    kinds = [KINDS[name] for name in used(spec)]
    warps = [k.warp for k in kinds if k.warp is not None]
    if len(warps) == 1:  # pose alone: torch's affine grid, bit for bit what version 0.1 made
        grid = pose_grid(params, spec.canvas)
    else:
        # from the output canvas back to the digit: the last warp applied is the first undone
        points = geometry.base_grid(spec.canvas, x.device).reshape(-1, 2)
        for warp in reversed(warps):
            points = warp(params, spec, points)
        grid = points.view(-1, spec.canvas, spec.canvas, 2)
    images = geometry.sample(x, grid)
    for kind in kinds:
        if kind.paint is not None:
            images = kind.paint(images, params, spec, digits if pool is None else pool)
    return images


def take(params: Params, index: slice | torch.Tensor) -> Params:
    """The parameters of some of the digits."""
    return {k: v[index] for k, v in params.items()}
