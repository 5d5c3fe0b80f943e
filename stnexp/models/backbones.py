"""The backbones, one registry entry each (`arch: cnn`, `arch: fcn`): the config schema, the module, the
size plan (the side of its last feature map for what it is given) and the paper's row. A new backbone
is a schema, a module and an entry in BACKBONES; config, models, paper and optim ask the registry.

A model is a backbone plus an optional transformer block (`stn:`, transformer.py), so `model.stn` is a
`Transformer` or None. Models take images in [0, 1] with background 0 and normalise them as their first,
fixed step. The transformer samples the raw image (or conv1's feature maps), so zero padding matches the
background and no bright frame invites it to zoom out (the collapse pitfall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from stnexp import geometry
from stnexp.models import transforms
from stnexp.models.config_blocks import Channels, Strict, TransformerConfig
from stnexp.models.kernels import Conv, ImageConv
from stnexp.models.transformer import Transformer, loc_side

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
N_CLASSES = 10
MAX_SIZE = 1024  # the largest image side searched for the smallest one that fits
CONV1_KERNEL = 9  # the paper's first convolution: 9x9, valid
CONV2_KERNEL = 7


# ---------------------------------------------------------------- the schemas


class CNNConfig(Strict):
    arch: Literal["cnn"] = Field(
        description="`cnn`: conv 9x9 -> ReLU -> pool 2 -> conv 7x7 -> ReLU -> pool 2 -> linear"
    )
    channels: tuple[Channels, Channels] = Field((32, 64), description="output channels of the two conv layers")
    norm: Literal["none", "batch"] = Field("none", description="normalisation after each conv: none | batch")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the classifier")
    stn: Optional[TransformerConfig] = Field(
        None, description="a spatial transformer in the model (the `stn.*` keys below); empty = none"
    )


def _at_input(v: Optional[TransformerConfig], whose: str) -> Optional[TransformerConfig]:
    """The check of backbones whose transformer can only warp the image."""
    if v is not None and v.at != "input":
        raise ValueError(f"at: {whose} transformer can only be at `input`, got {v.at!r}")
    return v


class FCNConfig(Strict):
    arch: Literal["fcn"] = Field(description="`fcn`: linear -> ReLU -> linear -> ReLU -> linear on the flattened image")
    hidden: tuple[Channels, Channels] = Field((256, 200), description="widths of the two hidden fully connected layers")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the classifier")
    stn: Optional[TransformerConfig] = Field(
        None,
        description="a spatial transformer at the input (the `stn.*` keys below; `at` must be `input`); empty = none",
    )

    _input_only = field_validator("stn")(classmethod(lambda cls, v: _at_input(v, "an fcn has no conv1, so its")))


PTN_CHANNELS = (16, 16, 16, 16, 32, 32, 32, 64, 64, 64)
PTN_STRIDES = (1, 2, 1, 1, 2, 1, 1, 2, 1, 1)


class PTNConfig(Strict):
    arch: Literal["ptn-cnn"] = Field(
        description="`ptn-cnn`: the plain CNN of Polar Transformer Networks (Esteves et al., ICLR 2018): 3x3 conv "
        "-> batch norm -> ReLU blocks, subsampled by strided convs, global average pooling -> linear"
    )
    channels: tuple[Channels, ...] = Field(PTN_CHANNELS, description="output channels of each 3x3 conv block")
    strides: tuple[Literal[1, 2], ...] = Field(PTN_STRIDES, description="stride of each conv block (1 or 2)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the classifier")
    stn: Optional[TransformerConfig] = Field(
        None,
        description="a spatial transformer at the input (the `stn.*` keys below; `at` must be `input`); empty = none",
    )

    _input_only = field_validator("stn")(classmethod(lambda cls, v: _at_input(v, "a ptn-cnn's")))

    @model_validator(mode="after")
    def _one_stride_a_block(self) -> "PTNConfig":
        # after: a default `strides` beside a given `channels` is checked too
        if len(self.strides) != len(self.channels):
            raise ValueError(f"strides: one per conv block, got {len(self.strides)} for {len(self.channels)} channels")
        return self


BackboneConfig = Union[CNNConfig, FCNConfig, PTNConfig]


# ---------------------------------------------------------------- the modules


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MNIST_MEAN) / MNIST_STD


def conv_block(c_in: int, c_out: int, kernel: int, norm: str) -> nn.Sequential:
    """conv -> ReLU -> max-pool 2. Without batch norm the pool runs before the ReLU: max-pooling commutes
    with any monotonic function, so the output is the same, and the ReLU (forward and backward) touches
    4x fewer values (a large share of the CNN's CPU step went to them: docs/performance.md). Batch norm
    may flip signs, so
    there the textbook order stays."""
    conv = (ImageConv if c_in == 1 else Conv)(c_in, c_out, kernel)  # kernels.py: stnexp's CPU kernels
    if norm == "batch":
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(conv, nn.MaxPool2d(2), nn.ReLU(inplace=True))


def after_block(size: int, kernel: int) -> int:
    """Side after a valid conv of `kernel` and a max-pool of 2."""
    return (size - kernel + 1) // 2


class _Transforming(nn.Module):
    """The contract of every backbone's module, what training, the pictures and the analyses ask of it:
    `at` and `stn` (its transformer, None without one); `dropout`, the nn.Dropout before its classifier
    (p = 0: none; with p > 0 each model draws from its own random stream); and, for a backbone that
    takes a transformer at conv1, `conv1_kernel`: the valid KxK conv (then a pool of 2) before it, which
    fixes where its feature maps lie in the image (analysis reads conv1 thetas in that frame; a backbone
    without it gets no rectification at conv1, and says so)."""

    at: Optional[str]
    stn: Optional[Transformer]
    dropout: nn.Dropout
    conv1_kernel: Optional[int] = None

    def loc_input(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform_params(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's parameters for images x (at conv1: computed from the feature maps)."""
        return self.stn.params(self.loc_input(x))

    def sampling_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Where in the images x the transformer samples (N x H x W x 2, in the sampler's [-1, 1]
        coordinates; at conv1: its transform on the image), at the sampler's resolution."""
        size = self.stn.out_size if self.at == "input" else x.shape[-1]
        return transforms.grid(self.stn.transform, self.transform_params(x), size)

    def transformed_images(self, x: torch.Tensor) -> torch.Tensor:
        """What the transformer makes of the images x (at conv1: its transform applied to the image),
        at the sampler's resolution (before any pooling)."""
        return geometry.sample(x, self.sampling_grid(x))


class CNN(_Transforming):
    """conv 9x9 -> ReLU -> pool 2 -> conv 7x7 -> ReLU -> pool 2 -> linear (valid convolutions), with an
    optional spatial transformer at the input (warps the image) or after conv1 (warps its feature maps).
    Layer names are the same with and without it, so a CNN's weights load into an ST-CNN."""

    conv1_kernel = CONV1_KERNEL

    def __init__(self, cfg: CNNConfig, p: Plan):
        super().__init__()
        c1, c2 = cfg.channels
        self.at = cfg.stn.at if cfg.stn else None
        # creation order block1, stn, block2, classifier: weights drawn from a seed stay those of 0.1
        self.block1 = conv_block(1, c1, CONV1_KERNEL, cfg.norm)
        self.stn = None
        if cfg.stn is not None:
            self.stn = Transformer(1 if self.at == "input" else c1, p.loc_in, p.stn_out, cfg.stn, loc_kind(cfg))
        self.block2 = conv_block(c1, c2, CONV2_KERNEL, cfg.norm)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(c2 * p.side * p.side, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.at == "input":
            # the loc net sees the normalised image; the sampler reads the raw one (background 0 = padding)
            x = self.block1(normalise(self.stn(normalise(x), x)))
        elif self.at == "conv1":
            f = self.block1(normalise(x))
            x = self.stn(f, f)
        else:
            x = self.block1(normalise(x))
        return self.classifier(self.dropout(self.block2(x).flatten(1)))

    def loc_input(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x) if self.at == "input" else self.block1(normalise(x))


class FCN(_Transforming):
    """linear -> ReLU -> linear -> ReLU -> linear on the flattened image, with an optional spatial
    transformer at the input."""

    def __init__(self, cfg: FCNConfig, p: Plan):
        super().__init__()
        h1, h2 = cfg.hidden
        self.at = "input" if cfg.stn else None
        self.stn = Transformer(1, p.loc_in, p.stn_out, cfg.stn, loc_kind(cfg)) if cfg.stn else None
        self.hidden = nn.Sequential(
            nn.Flatten(),
            nn.Linear(p.side * p.side, h1),
            nn.ReLU(inplace=True),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(h2, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalise(self.stn(normalise(x), x)) if self.stn is not None else normalise(x)
        return self.classifier(self.dropout(self.hidden(x)))

    def loc_input(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x)


class PTN(_Transforming):
    """Polar Transformer Networks' plain CNN (daniilidis-group/polar-transformer-networks, arch.py): padded
    3x3 conv -> batch norm -> ReLU blocks, strided convs to subsample, global average pooling and one linear
    layer, with an optional spatial transformer at the input. Few parameters (about 129k at the defaults)
    and no large fully connected head."""

    def __init__(self, cfg: PTNConfig, p: Plan):
        super().__init__()
        self.at = "input" if cfg.stn else None
        self.stn = Transformer(1, p.loc_in, p.stn_out, cfg.stn, loc_kind(cfg)) if cfg.stn else None
        layers, c_in = [], 1
        for c_out, stride in zip(cfg.channels, cfg.strides):
            conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)  # bias: batch norm's
            layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(c_in, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalise(self.stn(normalise(x), x)) if self.stn is not None else normalise(x)
        return self.classifier(self.dropout(self.features(x).mean((2, 3))))

    def loc_input(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x)


Model = Union[CNN, FCN, PTN]


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Backbone:
    """One backbone. `side(cfg, seen)`: the side of its last feature map (of the flattened image in an
    fcn) when its layers behind the transformer see seen x seen px; `conv1(in_size)`: the side of its
    first block's maps, where a transformer may sit at `conv1` (None: it has none); `loc`: the
    localisation net its transformers get by default; `paper`: its name in the paper's Table 1 rows
    (None: not one of the paper's)."""

    schema: type[Strict]
    module: Callable[..., nn.Module]
    side: Callable[[BackboneConfig, int], int]
    loc: Literal["conv", "fc"]
    paper: Optional[str]
    conv1: Optional[Callable[[int], int]] = None


def _cnn_side(cfg: CNNConfig, seen: int) -> int:
    if cfg.stn is not None and cfg.stn.at == "conv1":
        return after_block(seen, CONV2_KERNEL)
    return after_block(after_block(seen, CONV1_KERNEL), CONV2_KERNEL)


def _ptn_side(cfg: PTNConfig, seen: int) -> int:
    for stride in cfg.strides:
        seen = (seen + stride - 1) // stride  # a padded 3x3 conv
    return seen


BACKBONES: dict[str, Backbone] = {
    "cnn": Backbone(CNNConfig, CNN, _cnn_side, "conv", "CNN", conv1=lambda size: after_block(size, CONV1_KERNEL)),
    "fcn": Backbone(FCNConfig, FCN, lambda cfg, seen: seen, "fc", "FCN"),
    "ptn-cnn": Backbone(PTNConfig, PTN, _ptn_side, "conv", None),
}


# ---------------------------------------------------------------- sizes, checked before anything is built


@dataclass(frozen=True)
class Plan:
    """The sizes a model's layers work at for one input size: what the transformer looks at and makes
    (before its pooling), and `side`: the side of the last feature map (of the flattened image in an
    fcn). `problem` says what does not fit (None when all does)."""

    loc_in: Optional[int]
    stn_out: Optional[int]
    side: int
    problem: Optional[str]


def loc_kind(cfg: BackboneConfig) -> str:
    """The localisation net of a model's transformer: as configured, else conv in a cnn, fc in an fcn."""
    return cfg.stn.loc or BACKBONES[cfg.arch].loc


def sizes(cfg: BackboneConfig, in_size: int) -> Plan:
    """The layer sizes of model `cfg` on in_size x in_size images: the one place that knows them."""
    stn, backbone = cfg.stn, BACKBONES[cfg.arch]
    loc_in = stn_out = None
    seen = in_size  # what the layers behind the transformer see
    if stn is not None:
        loc_in = in_size if stn.at == "input" else backbone.conv1(in_size)
        stn_out = stn.out_size or loc_in
        seen = stn_out // stn.pool
    side = backbone.side(cfg, seen)
    problem = None
    if loc_in is not None and loc_kind(cfg) == "conv" and loc_side(loc_in) < 1:
        what = "images" if stn.at == "input" else "conv1 maps"
        problem = f"the localisation net needs {what} of at least 4 px, got {loc_in}"
    elif side < 1:
        problem = (
            "the layers behind the transformer get no pixel"
            if stn is not None and cfg.arch == "fcn"
            else "the conv layers leave no pixel"
        )
    return Plan(loc_in, stn_out, side, problem)


def checked_plan(cfg: BackboneConfig, in_size: int) -> Plan:
    """sizes(), or ValueError saying what does not fit (config validation reports it to users first)."""
    p = sizes(cfg, in_size)
    if p.problem:
        raise ValueError(f"{in_size}x{in_size} images do not fit this model: {p.problem}")
    return p


def fits(cfg: BackboneConfig, in_size: int) -> bool:
    return sizes(cfg, in_size).problem is None


def smallest_input(cfg: BackboneConfig) -> Optional[int]:
    """The smallest image side model `cfg` takes (None: none up to MAX_SIZE, its out_size is too small)."""
    return next((s for s in range(1, MAX_SIZE + 1) if fits(cfg, s)), None)


def smallest_out_size(cfg: BackboneConfig) -> Optional[int]:
    """When the transformer's out_size is too small for the layers behind it (no image size fits), the
    smallest out_size that works; else None."""
    if cfg.stn is None or cfg.stn.out_size is None or smallest_input(cfg) is not None:
        return None

    def with_out(o: int) -> BackboneConfig:
        return cfg.model_copy(update={"stn": cfg.stn.model_copy(update={"out_size": o})})

    return next((o for o in range(1, MAX_SIZE + 1) if fits(with_out(o), MAX_SIZE)), None)
