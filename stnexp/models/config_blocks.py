"""The pieces of the config schema that stnexp.config and the backbone registry (backbones.py) share: the
strict frozen base of every config block, and the transformer block every backbone may hold."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stnexp.models import transforms

MAX_SIDE = 512  # the largest canvas and sampler output a config allows
Channels = Annotated[int, Field(ge=1, le=4096)]


class Strict(BaseModel):
    # inf and NaN are never a meaningful value of any key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TransformerConfig(Strict):
    """A spatial transformer inside a model: what it may do, where it sits, how it learns."""

    transform: Literal[tuple(transforms.FAMILIES)] = Field(  # type: ignore[valid-type]
        "affine", description=f"what the transformer may do (parameters): {transforms.describe()}"
    )
    at: Literal["input", "conv1"] = Field(
        "input",
        description="what the transformer warps: `input` (the image) or `conv1` (feature maps after the first conv "
        "block)",
    )
    out_size: Optional[int] = Field(
        None, ge=4, le=MAX_SIDE, description="side of the sampler's output grid; empty = the size of what it transforms"
    )
    loc_lr_scale: float = Field(
        1.0, gt=0.0, description="learning-rate multiplier for the localisation net's parameters"
    )
    loc: Optional[Literal["conv", "fc"]] = Field(
        None,
        description="localisation net: `conv` (downsample 2, conv 5x5 (20), pool 2, conv 5x5 (20), FC 20) or `fc` (FC "
        "32, FC 32); empty = conv in a cnn, fc in an fcn",
    )
    loc_norm: Literal["none", "batch"] = Field(
        "none", description="normalisation inside the localisation net, after each conv and its hidden FC: none | batch"
    )
    loc_width: int = Field(
        20,
        ge=1,
        le=1024,
        description="channels of the conv localisation net's convs and width of its hidden FC (the paper's: 20); "
        "ignored by `loc: fc`",
    )
    pool: int = Field(
        1,
        ge=1,
        le=8,
        description="average-pool the transformer's output by this factor before the layers behind it (the paper: 2 "
        "for RTS and TC)",
    )
    stages: int = Field(
        1,
        ge=1,
        le=4,
        description="compositional warps (Lin and Lucey, CVPR 2017): each stage after the first has its own "
        "localisation net, looks at the input as the warps so far place it and regresses one more affine matrix, "
        "composed with them by matrix product; the input is sampled once, through the product. `transform: affine` "
        "only; 1 = the paper's single warp",
    )

    @model_validator(mode="after")
    def _stages_compose(self) -> "TransformerConfig":
        if self.stages > 1 and self.transform != "affine":
            raise ValueError(
                f"stages: {self.stages} composes 2x3 matrices, which only `transform: affine` regresses (got "
                f"{self.transform})"
            )
        return self
