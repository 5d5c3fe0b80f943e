"""The kinds of distortion a variant applies to its digits. Each kind draws its parameters per digit from
its own named random stream, keeps them (the true distortion of every digit), and takes part in
rendering the digit on the variant's canvas.

Today there is one kind, `pose`: rotation, scale and placement on the canvas (a variant's `rotation`,
`scale`, `translation` and `canvas` keys). A new kind (projective corners, elastic TPS jitter, clutter
patches) is an entry in KINDS with its config block in config.VariantConfig: `sample` draws its
parameters, `render` composes its grid (geometry.projective_grid / tps_grid) or paints onto the canvas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from stnexp import geometry, seeds
from stnexp.config import VariantConfig

IN_SIZE = 28  # MNIST digits are 28 x 28

# True parameters per digit, by name, each with the digits along its first dimension.
Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Kind:
    """One kind of distortion: `used(spec)` says whether a variant applies it, `identity(spec)` whether
    it then leaves every digit as it is, `sample(gen, spec, boxes)` draws its parameters for len(boxes)
    digits (boxes: geometry.ink_boxes of the digits)."""

    used: Callable[[VariantConfig], bool]
    identity: Callable[[VariantConfig], bool]
    sample: Callable[[torch.Generator, VariantConfig, torch.Tensor], Params]


# ---------------------------------------------------------------- pose: rotation, scale, placement


def _pose_identity(spec: VariantConfig) -> bool:
    return spec.canvas == IN_SIZE and spec.rotation == (0.0, 0.0) and spec.scale == (1.0, 1.0) and spec.translation == 0


def _pose_sample(gen: torch.Generator, spec: VariantConfig, boxes: torch.Tensor) -> Params:
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
    return {"angle": angle, "scale": scale, "shift": shift}


def pose_grid(params: Params, canvas: int) -> torch.Tensor:
    """The grid that reads each digit's pixels for its place on the canvas."""
    theta = geometry.distortion_theta(params["angle"], params["scale"], params["shift"], IN_SIZE, canvas)
    return geometry.affine_grid(theta, canvas)


# pose is the base of every variant: it puts the digit on the canvas
KINDS: dict[str, Kind] = {"pose": Kind(lambda spec: True, _pose_identity, _pose_sample)}


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
    return {name: seeds.generator(device, *parts) if name == "pose" else seeds.generator(device, *parts, name) for name in used(spec)}


def sample(gens: dict[str, torch.Generator], spec: VariantConfig, boxes: torch.Tensor) -> Params:
    """Parameters of every kind the variant uses for len(boxes) digits."""
    params: Params = {}
    for name in gens:
        params.update(KINDS[name].sample(gens[name], spec, boxes))
    return params


def render(digits: torch.Tensor, params: Params, spec: VariantConfig) -> torch.Tensor:
    """uint8 digits N x 28 x 28 -> float N x 1 x canvas x canvas in [0, 1], background 0."""
    x = digits.unsqueeze(1).float().div_(255.0)
    return geometry.sample(x, pose_grid(params, spec.canvas))


def take(params: Params, index: slice | torch.Tensor) -> Params:
    """The parameters of some of the digits."""
    return {k: v[index] for k, v in params.items()}
