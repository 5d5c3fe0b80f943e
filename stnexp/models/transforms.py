"""The transform families a spatial transformer can regress: how many parameters each has, the identity
it starts from, and how its parameters become a sampling grid. Config, models and pictures ask this
registry; a new family is one entry here (and, where it needs one, a grid generator in geometry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from stnexp import geometry, pose


@dataclass(frozen=True)
class Family:
    """One family: `n_params` regressed numbers starting at `identity`; `theta` turns them into 2x3
    matrices where the family is affine (None otherwise); `grid(params, size)` gives the sampling grid;
    `moves` the parts of a pose (pose.py) an affine family can change."""

    what: str
    identity: tuple[float, ...]
    grid: Callable[[torch.Tensor, "int | tuple[int, int]"], torch.Tensor]
    theta: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    moves: tuple[str, ...] = ()

    @property
    def n_params(self) -> int:
        return len(self.identity)


def _affine(
    theta: Callable[[torch.Tensor], torch.Tensor],
    what: str,
    identity: tuple[float, ...],
    moves: tuple[str, ...] = pose.NAMES,
) -> Family:
    return Family(what, identity, lambda p, size: geometry.affine_grid(theta(p), size), theta, moves)


def _zero(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p[:, 0])


def _one(p: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(p[:, 0])


# The homography's denominator g x + h y + 1 over the output grid [-1, 1]^2 is at least 1 - (|g| + |h|):
# where |g| + |h| reaches 1 it crosses zero inside the image, and the map folds it over (points on both
# sides of the line sent to opposite infinities). Capping |g| + |h| at PERSPECTIVE_CAP keeps it at 0.1 or
# more; below the cap the regressed values pass unchanged, so no map that never folded changes.
PERSPECTIVE_CAP = 0.9


def _homography(p: torch.Tensor) -> torch.Tensor:
    """The 3x3 matrices (last entry 1) of regressed projective parameters, perspective row capped."""
    gh = p[:, 6:8]
    reach = gh.abs().sum(1, keepdim=True)
    gh = gh * torch.clamp(PERSPECTIVE_CAP / reach.clamp_min(1e-12), max=1.0)
    return torch.cat([p[:, :6], gh, _one(p)[:, None]], 1).view(-1, 3, 3)


TPS_POINTS = 4  # the paper's 16 control points

FAMILIES: dict[str, Family] = {
    "affine": _affine(lambda p: p.view(-1, 2, 3), "any 2x3 matrix", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),
    # (scale, tx, ty): zooms and moves, cannot turn
    "attention": _affine(
        lambda p: geometry.theta_from_params(_zero(p), p[:, 0], p[:, 1], p[:, 2]),
        "scale + shift",
        (1.0, 0.0, 0.0),
        ("scale", "shift"),
    ),
    # (angle, scale, tx, ty)
    "similarity": _affine(
        lambda p: geometry.theta_from_params(p[:, 0], p[:, 1], p[:, 2], p[:, 3]),
        "rotation + scale + shift",
        (0.0, 1.0, 0.0, 0.0),
    ),
    "translation": _affine(
        lambda p: geometry.theta_from_params(_zero(p), _one(p), p[:, 0], p[:, 1]), "shift", (0.0, 0.0), ("shift",)
    ),
    "rotation": _affine(
        lambda p: geometry.theta_from_params(p[:, 0], _one(p), _zero(p), _zero(p)), "rotation", (0.0,), ("angle",)
    ),
    # a 3x3 homography with its last entry fixed at 1
    "projective": Family(
        "homography",
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
        lambda p, size: geometry.projective_grid(_homography(p), size),
    ),
    # where each of TPS_POINTS x TPS_POINTS control points reads the input, (x, y) per point
    "tps": Family(
        f"thin-plate spline, {TPS_POINTS}x{TPS_POINTS} control points",
        tuple(geometry.control_points(TPS_POINTS).flatten().tolist()),
        lambda p, size: geometry.tps_grid(p.view(p.shape[0], -1, 2), size, TPS_POINTS),
    ),
}


def describe() -> str:
    """The families in a few words each, for the config reference."""
    return ", ".join(f"{name} ({f.what}, {f.n_params})" for name, f in FAMILIES.items())


def theta(name: str, params: torch.Tensor) -> torch.Tensor:
    """2x3 matrices of an affine family's parameters, in float32."""
    family = FAMILIES[name]
    if family.theta is None:
        raise ValueError(f"transform {name!r} is not affine: it has no 2x3 matrix")
    with torch.autocast(params.device.type, enabled=False):
        return family.theta(params.float())


def grid(name: str, params: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The sampling grid of a family's parameters (N x n_params), in float32."""
    with torch.autocast(params.device.type, enabled=False):
        return FAMILIES[name].grid(params.float(), size)
