"""The spatial transformer block: a localisation net (`conv_loc` or `fc_loc`) that regresses a transform
family's parameters, the grid generator and the bilinear sampler (transforms.py, geometry.py), then an
optional average pool of what it made. A backbone (backbones.py) places it at its input or on conv1's
feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stnexp import geometry
from stnexp.models import transforms
from stnexp.models.config_blocks import TransformerConfig


def loc_padding(size: int) -> int:
    """The paper's localisation convs are valid where the input is large enough (28 px and up); smaller
    inputs (conv1's feature maps) get zero-padded convs."""
    return 0 if (size // 2 - 4) // 2 - 4 >= 1 else 2


def loc_side(size: int) -> int:
    """Side of the localisation net's last feature map for a size x size input."""
    pad = loc_padding(size)
    return (size // 2 - 4 + 2 * pad) // 2 - 4 + 2 * pad


def conv_loc(channels: int, in_size: int, width: int = 20, norm: str = "none") -> nn.Sequential:
    """The paper's ST-CNN localisation net: downsample x2, conv 5x5 (20), pool 2, conv 5x5 (20), FC 20;
    `width` replaces the 20s. With `norm: batch` a batch norm follows each conv and the FC, as in the
    classifier: levers of the rectification search (configs/ablations/rectify.yaml). The defaults build
    exactly the layers (and state-dict names) of earlier versions, so old checkpoints load."""
    pad, side = loc_padding(in_size), loc_side(in_size)
    bn = norm == "batch"
    return nn.Sequential(
        nn.MaxPool2d(2),
        nn.Conv2d(channels, width, 5, padding=pad),
        *([nn.BatchNorm2d(width)] if bn else []),
        nn.MaxPool2d(2),  # before the ReLU: the same values, less work (see backbones.conv_block)
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 5, padding=pad),
        *([nn.BatchNorm2d(width)] if bn else []),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(width * side * side, width),
        *([nn.BatchNorm1d(width)] if bn else []),
        nn.ReLU(inplace=True),
    )


FC_LOC = 32  # the paper's ST-FCN localisation net: fully connected layers of 32 units


def fc_loc(channels: int, in_size: int, norm: str = "none") -> nn.Sequential:
    bn = [nn.BatchNorm1d(FC_LOC)] if norm == "batch" else []
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * in_size * in_size, FC_LOC),
        *bn,
        nn.ReLU(inplace=True),
        nn.Linear(FC_LOC, FC_LOC),
        *([nn.BatchNorm1d(FC_LOC)] if bn else []),
        nn.ReLU(inplace=True),
    )


class Transformer(nn.Module):
    """Localisation net (`conv_loc` or `fc_loc`) plus grid generator and bilinear sampler, for any family
    of transforms, then an optional average pool of what it made."""

    def __init__(self, channels: int, in_size: int, out_size: int, cfg: TransformerConfig, loc: str):
        super().__init__()
        self.transform, self.out_size, self.pool = cfg.transform, out_size, cfg.pool

        def loc_net() -> nn.Sequential:
            if loc == "conv":
                return conv_loc(channels, in_size, cfg.loc_width, cfg.loc_norm)
            return fc_loc(channels, in_size, cfg.loc_norm)

        family = transforms.FAMILIES[cfg.transform]
        width = cfg.loc_width if loc == "conv" else FC_LOC
        self.loc, self.regress = loc_net(), _regressor(width, family)
        # stn.stages > 1: a localisation net and regressor per later stage (none by default, so the state
        # dict of a single warp keeps its names and old checkpoints load)
        self.refine = nn.ModuleList(
            nn.ModuleDict({"loc": loc_net(), "regress": _regressor(width, family)}) for _ in range(cfg.stages - 1)
        )

    def regressors(self) -> list[nn.Linear]:
        """The layers that output the transform: weight decay leaves them alone (network.param_groups)."""
        return [self.regress, *(stage["regress"] for stage in self.refine)]

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """The regressed transform parameters (N x n_params) for the localisation input x, in float32: the
        regressor runs outside autocast on fp32 features, since a bf16 theta is off by up to 4e-3 (a scale of
        0.9996 comes out 1.0000), about 0.1 px at the canvas edge. The localisation convs keep the caller's
        precision. With stages, each later stage regresses from x warped by the product so far, and the
        parameters returned are the product's (an affine family's 2x3 matrix, so all downstream is as for
        one warp)."""
        p = _regressed(self.loc, self.regress, x)
        for stage in self.refine:
            # x is normalised (its background is not 0): outside it, its edge
            seen = geometry.sample(x, transforms.grid(self.transform, p, tuple(x.shape[-2:])), padding="border")
            p = _compose(p, _regressed(stage["loc"], stage["regress"], seen))
        return p

    def forward(self, loc_input: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        grid = transforms.grid(self.transform, self.params(loc_input), self.out_size)
        out = geometry.sample(source, grid)
        return F.avg_pool2d(out, self.pool) if self.pool > 1 else out


def _regressor(width: int, family: transforms.Family) -> nn.Linear:
    """The layer that outputs a family's parameters, starting at the identity: the classifier first sees
    the untouched input."""
    regress = nn.Linear(width, family.n_params)
    nn.init.zeros_(regress.weight)
    with torch.no_grad():
        regress.bias.copy_(torch.tensor(family.identity))
    return regress


def _regressed(loc: nn.Sequential, regress: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    features = loc(x)
    with torch.autocast(features.device.type, enabled=False):
        return regress(features.float())


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The affine parameters (N x 6) of sampling through `outer` what `inner` samples: output point u goes
    to inner(u), which outer sends on to the input, so the product is outer's 3x3 times inner's; in float32
    (outside autocast), as theta is."""
    with torch.autocast(outer.device.type, enabled=False):
        a, b = outer.float().view(-1, 2, 3), inner.float().view(-1, 2, 3)
        return torch.cat([a[:, :, :2] @ b[:, :, :2], a[:, :, :2] @ b[:, :, 2:] + a[:, :, 2:]], 2).flatten(1)
