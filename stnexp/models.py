"""The classifiers: the paper's CNN and FCN, each optionally with a spatial transformer.

A model is a backbone (`arch: cnn` or `arch: fcn`) plus an optional transformer block (`stn:`), so
`model.stn` is a `Transformer` or None. Models take images in [0, 1] with background 0 and normalise them
as their first, fixed step. The transformer samples the raw image (or conv1's feature maps), so zero
padding matches the background and no bright frame invites it to zoom out (the collapse pitfall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from stnexp import geometry, spectral, transforms
from stnexp.config import CNNConfig, FCNConfig, TransformerConfig

ModelConfig = Union[CNNConfig, FCNConfig]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
N_CLASSES = 10
MAX_SIZE = 1024  # the largest image side searched for the smallest one that fits
CONV1_KERNEL = 9  # the paper's first convolution: 9x9, valid


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MNIST_MEAN) / MNIST_STD


def conv_block(c_in: int, c_out: int, kernel: int, norm: str) -> nn.Sequential:
    """conv -> ReLU -> max-pool 2. Without batch norm the pool runs before the ReLU: max-pooling commutes
    with any monotonic function, so the output is the same, and the ReLU (forward and backward) touches
    4x fewer values (a fifth of the CNN's CPU step time went to them). Batch norm may flip signs, so
    there the textbook order stays."""
    conv = (ImageConv if c_in == 1 else Conv)(c_in, c_out, kernel)
    if norm == "batch":
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(conv, nn.MaxPool2d(2), nn.ReLU(inplace=True))


def _plain(conv: nn.Conv2d) -> bool:
    return conv.stride == (1, 1) and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1


class Conv(nn.Conv2d):
    """A valid convolution of feature maps (conv2), as nn.Conv2d (the same weights, draws and state_dict
    keys), whose training steps on the CPU in fp32 go through the DFT (spectral.conv2d): oneDNN's
    backward of conv2 took about 3x its forward there, some 75 of a 145 ms CNN step (batch 128; README,
    Performance), and forward and backward through the DFT together take about half of oneDNN's.
    Evaluation (no gradient: scores stay nn.Conv2d's), CUDA (cuDNN) and bf16 autocast (oneDNN's AMX
    kernels) take nn.Conv2d's path. `fast_grad` False: always nn.Conv2d's (the conventional pipeline of
    scripts/bench.py). Under vmap (fused.Stack) neither input reports that it requires a gradient, so
    the plain path runs there."""

    fast_grad = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.fast_grad and _plain(self) and x.device.type == "cpu" and torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu") and (x.requires_grad or self.weight.requires_grad)):
            return spectral.conv2d(x, self.weight, self.bias)
        return super().forward(x)


class ImageConv(nn.Conv2d):
    """A valid convolution of one-channel images (conv1), as nn.Conv2d (the same weights, draws and
    state_dict keys), whose gradient with respect to the images, when one is needed (behind a
    transformer at the input), is computed on the CPU as a depthwise convolution summed over the
    channels: oneDNN's own for one input channel took about 5x the forward pass, some 110 ms of a
    245 ms ST-CNN step (batch 128, fp32; README, Performance). `fast_grad` False: nn.Conv2d's own backward (the
    conventional pipeline of scripts/bench.py). Under vmap (fused.Stack) images do not report that
    they require a gradient, so the plain path runs there."""

    fast_grad = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_grad and _plain(self) and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled():
            return _ImageConvFn.apply(x, self.weight, self.bias)
        return super().forward(x)


class _ImageConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        # under autocast conv2d would run in its lower precision: do the same casts here, by hand, and
        # keep what the convolution saw for the backward pass
        ctx.dtypes = (x.dtype, w.dtype, b.dtype if b is not None else None)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        x, w, b = x.to(dtype), w.to(dtype), (b.to(dtype) if b is not None else None)
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x, w, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        g = g.to(x.dtype)
        _, gw, gb = torch.ops.aten.convolution_backward(g, x, w, [w.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                        [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]])
        gx = None
        if ctx.needs_input_grad[0]:
            # the full correlation of each channel's gradient with its own flipped kernel, then the sum
            # over channels: a depthwise forward conv, which oneDNN runs fast (faster than the same as
            # a transposed conv, 4x faster than one conv from all channels to one)
            gx = F.conv2d(g, w.flip(2, 3), groups=w.shape[0], padding=(w.shape[-2] - 1, w.shape[-1] - 1)).sum(1, keepdim=True)
        dx, dw, db = ctx.dtypes
        return (gx.to(dx) if gx is not None else None, gw.to(dw) if gw is not None else None,
                gb.to(db) if gb is not None else None)


def after_block(size: int, kernel: int) -> int:
    """Side after a valid conv of `kernel` and a max-pool of 2."""
    return (size - kernel + 1) // 2


# ---------------------------------------------------------------- sizes, checked before anything is built


def loc_padding(size: int) -> int:
    """The paper's localisation convs are valid where the input is large enough (28 px and up); smaller
    inputs (conv1's feature maps) get zero-padded convs."""
    return 0 if (size // 2 - 4) // 2 - 4 >= 1 else 2


def loc_side(size: int) -> int:
    """Side of the localisation net's last feature map for a size x size input."""
    pad = loc_padding(size)
    return (size // 2 - 4 + 2 * pad) // 2 - 4 + 2 * pad


@dataclass(frozen=True)
class Plan:
    """The sizes a model's layers work at for one input size: what the transformer looks at and makes
    (before its pooling), and `side`: the side of the last feature map (of the flattened image in an
    fcn). `problem` says what does not fit (None when all does)."""

    loc_in: Optional[int]
    stn_out: Optional[int]
    side: int
    problem: Optional[str]


def loc_kind(cfg: ModelConfig) -> str:
    """The localisation net of a model's transformer: as configured, else conv in a cnn, fc in an fcn."""
    return cfg.stn.loc or ("fc" if cfg.arch == "fcn" else "conv")


def plan(cfg: ModelConfig, in_size: int) -> Plan:
    """The layer sizes of model `cfg` on in_size x in_size images: the one place that knows them."""
    stn = cfg.stn
    loc_in = stn_out = None
    seen = in_size  # what the layers behind the transformer see
    if stn is not None:
        loc_in = in_size if stn.at == "input" else after_block(in_size, CONV1_KERNEL)
        stn_out = stn.out_size or loc_in
        seen = stn_out // stn.pool
    if cfg.arch == "fcn":
        side = seen
    elif stn is not None and stn.at == "conv1":
        side = after_block(seen, 7)
    else:
        side = after_block(after_block(seen, CONV1_KERNEL), 7)
    problem = None
    if loc_in is not None and loc_kind(cfg) == "conv" and loc_side(loc_in) < 1:
        problem = f"the localisation net needs {'images' if stn.at == 'input' else 'conv1 maps'} of at least 4 px, got {loc_in}"
    elif side < 1:
        problem = "the layers behind the transformer get no pixel" if stn is not None and cfg.arch == "fcn" else "the conv layers leave no pixel"
    return Plan(loc_in, stn_out, side, problem)


def checked_plan(cfg: ModelConfig, in_size: int) -> Plan:
    """plan(), or ValueError saying what does not fit (config validation reports it to users first)."""
    p = plan(cfg, in_size)
    if p.problem:
        raise ValueError(f"{in_size}x{in_size} images do not fit this model: {p.problem}")
    return p


def fits(cfg: ModelConfig, in_size: int) -> bool:
    return plan(cfg, in_size).problem is None


def smallest_input(cfg: ModelConfig) -> Optional[int]:
    """The smallest image side model `cfg` takes (None: none up to MAX_SIZE, its out_size is too small)."""
    return next((s for s in range(1, MAX_SIZE + 1) if fits(cfg, s)), None)


def smallest_out_size(cfg: ModelConfig) -> Optional[int]:
    """When the transformer's out_size is too small for the layers behind it (no image size fits), the
    smallest out_size that works; else None."""
    if cfg.stn is None or cfg.stn.out_size is None or smallest_input(cfg) is not None:
        return None

    def with_out(o: int) -> ModelConfig:
        return cfg.model_copy(update={"stn": cfg.stn.model_copy(update={"out_size": o})})

    return next((o for o in range(1, MAX_SIZE + 1) if fits(with_out(o), MAX_SIZE)), None)


# ---------------------------------------------------------------- the modules


def conv_loc(channels: int, in_size: int) -> nn.Sequential:
    """The paper's ST-CNN localisation net: downsample x2, conv 5x5 (20), pool 2, conv 5x5 (20), FC 20."""
    pad, side = loc_padding(in_size), loc_side(in_size)
    return nn.Sequential(
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 20, 5, padding=pad),
        nn.MaxPool2d(2),  # before the ReLU: the same values, less work (see conv_block)
        nn.ReLU(inplace=True),
        nn.Conv2d(20, 20, 5, padding=pad),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(20 * side * side, 20),
        nn.ReLU(inplace=True),
    )


FC_LOC = 32  # the paper's ST-FCN localisation net: fully connected layers of 32 units


def fc_loc(channels: int, in_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(channels * in_size * in_size, FC_LOC), nn.ReLU(inplace=True), nn.Linear(FC_LOC, FC_LOC), nn.ReLU(inplace=True)
    )


class Transformer(nn.Module):
    """Localisation net (`conv_loc` or `fc_loc`) plus grid generator and bilinear sampler, for any family
    of transforms, then an optional average pool of what it made."""

    def __init__(self, channels: int, in_size: int, out_size: int, cfg: TransformerConfig, loc: str):
        super().__init__()
        self.transform, self.out_size, self.pool = cfg.transform, out_size, cfg.pool
        self.loc = conv_loc(channels, in_size) if loc == "conv" else fc_loc(channels, in_size)
        family = transforms.FAMILIES[cfg.transform]
        self.regress = nn.Linear(20 if loc == "conv" else FC_LOC, family.n_params)
        # start at the identity: the classifier first sees the untouched input
        nn.init.zeros_(self.regress.weight)
        with torch.no_grad():
            self.regress.bias.copy_(torch.tensor(family.identity))

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """The regressed transform parameters (N x n_params) for the localisation input x, in float32."""
        p = self.regress(self.loc(x))
        return p.float()

    def forward(self, loc_input: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        grid = transforms.grid(self.transform, self.params(loc_input), self.out_size)
        out = geometry.sample(source, grid)
        return F.avg_pool2d(out, self.pool) if self.pool > 1 else out


class _Transforming(nn.Module):
    """What the pictures and analyses ask of any model with a transformer."""

    at: Optional[str]
    stn: Optional[Transformer]

    def loc_input(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform_params(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's parameters for images x (at conv1: computed from the feature maps)."""
        return self.stn.params(self.loc_input(x))

    def transformed_images(self, x: torch.Tensor) -> torch.Tensor:
        """What the transformer makes of the images x (at conv1: its transform applied to the image),
        at the sampler's resolution (before any pooling)."""
        size = self.stn.out_size if self.at == "input" else x.shape[-1]
        return geometry.sample(x, transforms.grid(self.stn.transform, self.transform_params(x), size))


class CNN(_Transforming):
    """conv 9x9 -> ReLU -> pool 2 -> conv 7x7 -> ReLU -> pool 2 -> linear (valid convolutions), with an
    optional spatial transformer at the input (warps the image) or after conv1 (warps its feature maps).
    Layer names are the same with and without it, so a CNN's weights load into an ST-CNN."""

    def __init__(self, cfg: CNNConfig, in_size: int):
        super().__init__()
        p = checked_plan(cfg, in_size)
        c1, c2 = cfg.channels
        self.at = cfg.stn.at if cfg.stn else None
        # creation order block1, stn, block2, classifier: weights drawn from a seed stay those of 0.1
        self.block1 = conv_block(1, c1, CONV1_KERNEL, cfg.norm)
        self.stn = None
        if cfg.stn is not None:
            self.stn = Transformer(1 if self.at == "input" else c1, p.loc_in, p.stn_out, cfg.stn, loc_kind(cfg))
        self.block2 = conv_block(c1, c2, 7, cfg.norm)
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

    def __init__(self, cfg: FCNConfig, in_size: int):
        super().__init__()
        p = checked_plan(cfg, in_size)
        h1, h2 = cfg.hidden
        self.at = "input" if cfg.stn else None
        self.stn = Transformer(1, p.loc_in, p.stn_out, cfg.stn, loc_kind(cfg)) if cfg.stn else None
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(p.side * p.side, h1), nn.ReLU(inplace=True), nn.Linear(h1, h2), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(h2, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalise(self.stn(normalise(x), x)) if self.stn is not None else normalise(x)
        return self.classifier(self.dropout(self.hidden(x)))

    def loc_input(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x)


Model = Union[CNN, FCN]


def build(cfg: ModelConfig, in_size: int) -> Model:
    return FCN(cfg, in_size) if cfg.arch == "fcn" else CNN(cfg, in_size)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_counts(cfg) -> dict[str, dict[str, int]]:
    """Parameters of every model of a config (config.Config) on every variant's canvas, by model then
    variant, counted on the meta device (nothing is allocated)."""
    out: dict[str, dict[str, int]] = {}
    for mname, mcfg in cfg.models.items():
        with torch.device("meta"):
            out[mname] = {v: n_params(build(mcfg, cfg.variant(v).canvas)) for v in cfg.data.variants}
    return out


def param_groups(model: Model, lr: float, loc_lr_scale: float) -> list[dict]:
    """Optimizer groups: everything at lr, and a transformer's localisation net at lr * loc_lr_scale."""
    if model.stn is None:
        return [{"params": list(model.parameters()), "lr": lr, "name": "model"}]
    loc_ids = {id(p) for p in model.stn.parameters()}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    return [{"params": rest, "lr": lr, "name": "model"}, {"params": list(model.stn.parameters()), "lr": lr * loc_lr_scale, "name": "loc"}]


def mismatch(model: nn.Module, state: dict) -> str | None:
    """What keeps `state` from loading into `model`, in a few words (None when it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} is {list(state[k].shape)} in the checkpoint, {list(own[k].shape)} in the model" for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    parts = shapes[:2]
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if extra:
        parts.append(f"unexpected {', '.join(extra[:3])}")
    return "; ".join(parts) or None
