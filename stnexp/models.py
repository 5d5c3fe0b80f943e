"""The classifiers: the paper's CNN and the same CNN behind a spatial transformer (STN-CNN).

Both take images in [0, 1] with background 0 and normalise them as their first, fixed step. The
transformer samples the raw image (or conv1's feature maps), so zero padding matches the background
and no bright frame invites it to zoom out (the collapse pitfall).
"""

from __future__ import annotations

import torch
from torch import nn

from stnexp import geometry
from stnexp.config import CNNConfig, STNConfig

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
N_CLASSES = 10
N_PARAMS = {"affine": 6, "attention": 3, "similarity": 4, "translation": 2, "rotation": 1}
IDENTITY = {
    "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    "attention": [1.0, 0.0, 0.0],  # scale, tx, ty
    "similarity": [0.0, 1.0, 0.0, 0.0],  # angle, scale, tx, ty
    "translation": [0.0, 0.0],
    "rotation": [0.0],
}


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MNIST_MEAN) / MNIST_STD


def conv_block(c_in: int, c_out: int, kernel: int, norm: str) -> nn.Sequential:
    """conv -> ReLU -> max-pool 2. Without batch norm the pool runs before the ReLU: max-pooling commutes
    with any monotonic function, so the output is the same, and the ReLU (forward and backward) touches
    4x fewer values (a fifth of the CNN's CPU step time went to them). Batch norm may flip signs, so
    there the textbook order stays."""
    if norm == "batch":
        return nn.Sequential(nn.Conv2d(c_in, c_out, kernel), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel), nn.MaxPool2d(2), nn.ReLU(inplace=True))


def after_block(size: int, kernel: int) -> int:
    return (size - kernel + 1) // 2


def params_to_theta(transform: str, p: torch.Tensor) -> torch.Tensor:
    """Regressed parameters -> 2x3 theta, through the same primitive that distorts the data."""
    if transform == "affine":
        return p.view(-1, 2, 3)
    zero, one = torch.zeros_like(p[:, 0]), torch.ones_like(p[:, 0])
    if transform == "attention":
        return geometry.theta_from_params(zero, p[:, 0], p[:, 1], p[:, 2])
    if transform == "similarity":
        return geometry.theta_from_params(p[:, 0], p[:, 1], p[:, 2], p[:, 3])
    if transform == "translation":
        return geometry.theta_from_params(zero, one, p[:, 0], p[:, 1])
    if transform == "rotation":
        return geometry.theta_from_params(p[:, 0], one, zero, zero)
    raise ValueError(transform)


class Transformer(nn.Module):
    """Localisation net (the paper's: downsample x2, conv 5x5 (20), pool, conv 5x5 (20), FC 20, regression)
    plus grid generator and bilinear sampler. The convs are valid, as in the paper, where the input is
    large enough (28 px and up); smaller inputs (conv1's feature maps) get zero-padded convs."""

    def __init__(self, channels: int, in_size: int, out_size: int, transform: str):
        super().__init__()
        self.transform, self.out_size = transform, out_size
        pad = 0 if (in_size // 2 - 4) // 2 - 4 >= 1 else 2
        side = (in_size // 2 - 4 + 2 * pad) // 2 - 4 + 2 * pad
        self.loc = nn.Sequential(
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
        self.regress = nn.Linear(20, N_PARAMS[transform])
        # start at the identity: the classifier first sees the untouched input
        nn.init.zeros_(self.regress.weight)
        with torch.no_grad():
            self.regress.bias.copy_(torch.tensor(IDENTITY[transform]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        p = self.regress(self.loc(x))
        with torch.autocast(x.device.type, enabled=False):
            return params_to_theta(self.transform, p.float())

    def forward(self, loc_input: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return geometry.warp(source, self.theta(loc_input), self.out_size)


class CNN(nn.Module):
    """conv 9x9 -> ReLU -> pool 2 -> conv 7x7 -> ReLU -> pool 2 -> linear (valid convolutions)."""

    def __init__(self, cfg: CNNConfig, in_size: int):
        super().__init__()
        c1, c2 = cfg.channels
        self.block1 = conv_block(1, c1, 9, cfg.norm)
        self.block2 = conv_block(c1, c2, 7, cfg.norm)
        side = after_block(after_block(in_size, 9), 7)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(c2 * side * side, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(normalise(x)))
        return self.classifier(self.dropout(x.flatten(1)))


class STNCNN(nn.Module):
    """A spatial transformer at the input (warps the image) or after conv1 (warps its feature maps),
    then the rest of the CNN. Layer names match CNN's, so a CNN's weights load into it."""

    def __init__(self, cfg: STNConfig, in_size: int):
        super().__init__()
        c1, c2 = cfg.channels
        self.at = cfg.at
        self.block1 = conv_block(1, c1, 9, cfg.norm)
        if cfg.at == "input":
            out = cfg.out_size or in_size
            self.stn = Transformer(1, in_size, out, cfg.transform)
            side = after_block(after_block(out, 9), 7)
        else:
            feat = after_block(in_size, 9)
            out = cfg.out_size or feat
            self.stn = Transformer(c1, feat, out, cfg.transform)
            side = after_block(out, 7)
        if side < 1:
            raise ValueError(f"out_size {out} is too small for the CNN behind the transformer")
        self.block2 = conv_block(c1, c2, 7, cfg.norm)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(c2 * side * side, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.at == "input":
            # the loc net sees the normalised image; the sampler reads the raw one (background 0 = padding)
            x = self.block1(normalise(self.stn(normalise(x), x)))
        else:
            f = self.block1(normalise(x))
            x = self.stn(f, f)
        return self.classifier(self.dropout(self.block2(x).flatten(1)))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's theta for images x (at conv1: computed from the feature maps)."""
        return self.stn.theta(normalise(x) if self.at == "input" else self.block1(normalise(x)))


def build(cfg: CNNConfig | STNConfig, in_size: int) -> nn.Module:
    return CNN(cfg, in_size) if cfg.arch == "cnn" else STNCNN(cfg, in_size)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_groups(model: nn.Module, lr: float, loc_lr_scale: float) -> list[dict]:
    """Two optimizer groups for an STN-CNN: everything else at lr, the transformer at lr * loc_lr_scale."""
    stn = getattr(model, "stn", None)
    if stn is None:
        return [{"params": list(model.parameters()), "lr": lr, "name": "model"}]
    loc_ids = {id(p) for p in stn.parameters()}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    return [{"params": rest, "lr": lr, "name": "model"}, {"params": list(stn.parameters()), "lr": lr * loc_lr_scale, "name": "loc"}]


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
