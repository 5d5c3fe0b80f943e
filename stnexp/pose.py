"""The parts of a digit's pose, declared once: its angle, scale and shift. Each says its name in a
variant's drawn parameters, its unit, the variant key that sets its range, how `eval --sweep` fixes it,
how a digit's value is measured for the error-by-distortion tables, and how it is read back from a
sampling matrix (theta) as a residual. Distortions, analysis, eval, pictures and transforms ask this;
adding a part (shear, say) is an entry here with its place in the matrix (distortion_theta) and its
read-back (residual), its draw (data/distortions.py) and its range key (config/variants.py's PoseKeys).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from stnexp import geometry

DIGIT = 28  # the side of an MNIST digit, px: the frame residuals are measured in


@dataclass(frozen=True)
class Part:
    """One part of the pose. `name`: its key in a variant's drawn parameters (N values, or N x 2 for the
    shift) and in a transform family's `moves`; `sweep`: its `eval --sweep` key; `range_key`: the
    variant key that sets its range; `measure`: one number per digit for the tables by distortion;
    `fix(value, like)`: every digit's parameter set to `value`; `residual`: the key it is read back as
    from a theta, in `residual_unit`; `cannot`: what a transformer that cannot change it is said to do;
    `circular`: an angle (its spread is taken about its circular mean)."""

    name: str
    unit: str
    sweep: str
    range_key: str
    measure: Callable[[torch.Tensor], torch.Tensor]
    fix: Callable[[float, torch.Tensor], torch.Tensor]
    residual: str
    residual_unit: str
    cannot: str
    circular: bool = False
    positive: bool = False  # swept values must be > 0


def _every(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, float(value))


def _to_the_right(value: float, like: torch.Tensor) -> torch.Tensor:
    """The digit's centre `value` px to the right of the canvas's centre."""
    return torch.tensor([[float(value), 0.0]], dtype=like.dtype, device=like.device).expand(len(like), 2).clone()


ANGLE = Part(
    name="angle",
    unit="degrees",
    sweep="rotation",
    range_key="rotation",
    measure=lambda v: v,
    fix=_every,
    residual="angle",
    residual_unit="degrees",
    cannot="cannot rotate",
    circular=True,
)
SCALE = Part(
    name="scale",
    unit="factor",
    sweep="scale",
    range_key="scale",
    measure=lambda v: v,
    fix=_every,
    residual="log_scale",
    residual_unit="log of the factor",
    cannot="cannot scale",
    positive=True,
)
SHIFT = Part(
    name="shift",
    unit="px from the centre",
    sweep="shift",
    range_key="translation",
    measure=lambda v: v.norm(dim=1),
    fix=_to_the_right,
    residual="shift",
    residual_unit="px from the centre",
    cannot="cannot shift",
)
PARTS = (ANGLE, SCALE, SHIFT)
NAMES = tuple(p.name for p in PARTS)
BY_SWEEP = {p.sweep: p for p in PARTS}
BY_RESIDUAL = {p.residual: p for p in PARTS}
# the unit of every name a figure's axis may carry: a part's, its residual's and its sweep key's
UNITS = {
    **{p.sweep: p.unit for p in PARTS},
    **{p.residual: p.residual_unit for p in PARTS},
    **{p.name: p.unit for p in PARTS},
}


def distortion_theta(
    angle_deg: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, in_size: int, out_size: int
) -> torch.Tensor:
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
    return geometry.theta_from_params(a, zoom, tx, ty)


def theta(params: dict[str, torch.Tensor], in_size: int, out_size: int) -> torch.Tensor:
    """The sampling matrix that places each in_size digit on an out_size canvas in its pose."""
    return distortion_theta(params[ANGLE.name], params[SCALE.name], params[SHIFT.name], in_size, out_size)


def residual(theta_model: torch.Tensor, params: dict[str, torch.Tensor], canvas: int) -> dict[str, torch.Tensor]:
    """Where each digit ends up after the transformer: the transformer's theta (its output -> the canvas)
    composed with the true pose (the canvas -> the undistorted digit) is one affine map from what the
    classifier sees to the digit. Its rotation (degrees), log scale and shift (pixels of the 28 px digit)
    are the residual pose, by each part's `residual` key. With no transformer (theta = identity) they are
    the distortion itself."""
    d = theta(params, DIGIT, canvas).double()
    t = theta_model.double()
    lin = d[:, :, :2] @ t[:, :, :2]
    trans = (d[:, :, :2] @ t[:, :, 2:])[..., 0] + d[:, :, 2]
    rot = torch.rad2deg(torch.atan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1]))
    log_scale = 0.5 * torch.log(torch.linalg.det(lin).abs())
    return {ANGLE.residual: rot, SCALE.residual: log_scale, SHIFT.residual: trans * (DIGIT / 2)}
