"""A model: a backbone of the registry (backbones.py) with an optional spatial transformer
(transformer.py), built for one image size; its parameter count and groups, and what keeps a state dict
from loading into it."""

from __future__ import annotations

import torch
from torch import nn

from stnexp.models.backbones import BACKBONES, BackboneConfig, Model, checked_plan


def build(cfg: BackboneConfig, in_size: int) -> Model:
    return BACKBONES[cfg.arch].module(cfg, checked_plan(cfg, in_size))


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
    return [
        {"params": rest, "lr": lr, "name": "model"},
        {"params": list(model.stn.parameters()), "lr": lr * loc_lr_scale, "name": "loc"},
    ]


def mismatch(model: nn.Module, state: dict) -> str | None:
    """What keeps `state` from loading into `model`, in a few words (None when it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} is {list(state[k].shape)} in the checkpoint, {list(own[k].shape)} in the model"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    parts = shapes[:2]
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if extra:
        parts.append(f"unexpected {', '.join(extra[:3])}")
    return "; ".join(parts) or None
