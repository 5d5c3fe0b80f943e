"""A variant's schema: the presets, and the keys of each kind of distortion (pose, projective, elastic,
clutter) as a class of its own, which data/distortions.py's Kind names; VariantConfig is all of them
and the canvas. Like every key, each is declared once here, with its default and description."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from stnexp.config.messages import did_you_mean, shown
from stnexp.models.config_blocks import MAX_SIDE, Strict

# Each preset is a full set of distortion ranges; a variant may name one and override any range.
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {
    "plain": {"canvas": 28, "rotation": (0.0, 0.0), "scale": (1.0, 1.0), "translation": 0.0},
    "rotated": {"canvas": 28, "rotation": (-90.0, 90.0), "scale": (1.0, 1.0), "translation": 0.0},
    "rts": {"canvas": 42, "rotation": (-45.0, 45.0), "scale": (0.7, 1.2), "translation": "fit"},
    "translated": {"canvas": 42, "rotation": (0.0, 0.0), "scale": (1.0, 1.0), "translation": "fit"},
    "scaled": {"canvas": 28, "rotation": (0.0, 0.0), "scale": (0.7, 1.2), "translation": 0.0},
    # the paper's P, E and TC (docs/paper-protocol.md): projective corners, elastic TPS, translated + clutter
    "projective": {"canvas": 28, "rotation": (0.0, 0.0), "scale": (0.75, 1.0), "translation": 0.0,
                   "corner_jitter": 5.0},
    "elastic": {"canvas": 28, "rotation": (0.0, 0.0), "scale": (0.75, 1.0), "translation": 0.0,
                "elastic_jitter": 1.5, "elastic_grid": 4},
    "cluttered": {"canvas": 60, "rotation": (0.0, 0.0), "scale": (1.0, 1.0), "translation": "fit",
                  "patches": 6, "patch_size": 6},
}
# fmt: on


def _range(value: Any, positive: bool) -> tuple[float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_finite(v) for v in value)
    if ok:
        lo, hi = float(value[0]), float(value[1])
        ok = lo <= hi and (lo > 0 or not positive)
    if not ok:
        said = shown(list(value)) if isinstance(value, (list, tuple)) else shown(value)
        rule = "0 < min <= max" if positive else "min <= max"
        raise ValueError(f"expected [min, max] of finite numbers with {rule}, got {said}")
    return lo, hi


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class PoseKeys(Strict):
    """The pose: rotation, scale and shift of the digit on the canvas (every variant has one)."""

    rotation: tuple[float, float] = Field((0.0, 0.0), description="[min, max] rotation in degrees, drawn uniformly")
    scale: tuple[float, float] = Field((1.0, 1.0), description="[min, max] scale factor of the digit, drawn uniformly")
    translation: Union[Literal["fit"], float] = Field(
        0.0,
        description="max shift of the digit's centre in px along each axis (uniform), or `fit`: anywhere the "
        "distorted digit stays inside the canvas",
    )

    @field_validator("rotation", mode="before")
    @classmethod
    def _rotation(cls, v: Any) -> tuple[float, float]:
        return _range(v, positive=False)

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, v: Any) -> tuple[float, float]:
        return _range(v, positive=True)

    @field_validator("translation", mode="before")
    @classmethod
    def _translation(cls, v: Any) -> Any:
        if v == "fit" or (_finite(v) and v >= 0):
            return v
        raise ValueError(f"expected a finite shift >= 0 in px or 'fit', got {shown(v)}")


class ProjectiveKeys(Strict):
    """The projective warp of the canvas."""

    corner_jitter: float = Field(
        0.0,
        ge=0.0,
        le=MAX_SIDE,
        description="projective warp: each corner of the canvas moves by N(0, this) px along x and y; 0 = none",
    )


class ElasticKeys(Strict):
    """The elastic warp of the canvas (a thin-plate spline)."""

    elastic_jitter: float = Field(
        0.0,
        ge=0.0,
        le=MAX_SIDE,
        description="elastic warp: each thin-plate-spline control point moves by N(0, this) px along x and y; 0 = none",
    )
    elastic_grid: int = Field(
        4,
        ge=2,
        le=16,
        description="elastic warp: control points per side of the lattice over the canvas (4 = the paper's 16 points)",
    )


class ClutterKeys(Strict):
    """Clutter: patches of other digits painted onto the canvas."""

    patches: int = Field(
        0,
        ge=0,
        le=256,
        description="clutter: patches cut at random places from random digits of the same split, painted onto the "
        "canvas; 0 = none",
    )
    patch_size: int = Field(6, ge=1, le=28, description="clutter: side of each patch in px (at most 28 and the canvas)")


class _Canvas(Strict):
    """What every variant has besides its distortions: a preset to start from, the canvas."""

    preset: Optional[str] = Field(
        None,
        description=f"start from a named preset: {', '.join(PRESETS)}; a variant named like a preset uses it by "
        "default",
    )
    canvas: int = Field(
        28, ge=8, le=MAX_SIDE, description="side of the square output image in pixels (MNIST digits are 28x28)"
    )


class VariantConfig(ClutterKeys, ElasticKeys, ProjectiveKeys, PoseKeys, _Canvas):
    """One distorted-MNIST variant: a preset, or ranges, or a preset with some ranges overridden; its keys
    are those of each kind of distortion (PoseKeys ... ClutterKeys) and the canvas."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            name = data["preset"]
            if name not in PRESETS:
                hint = did_you_mean(str(name), PRESETS)
                raise ValueError(f"preset: unknown preset {name!r}{hint} (choose from {', '.join(PRESETS)})")
            data = {**PRESETS[name], **data}
        return data

    @model_validator(mode="after")
    def _patch_fits(self) -> "VariantConfig":
        if self.patches and self.patch_size > self.canvas:
            raise ValueError(f"patch_size: {self.patch_size} is larger than the canvas ({self.canvas})")
        return self
