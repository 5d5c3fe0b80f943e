"""A model: a backbone of the registry (backbones.py) with an optional spatial transformer
(transformer.py), built for one image size; its parameter count and groups, and what keeps a state dict
from loading into it."""

from __future__ import annotations

import torch
from torch import nn

from stnexp.models.backbones import BACKBONES, BackboneConfig, Model, checked_plan


def build(cfg: BackboneConfig, in_size: int) -> Model:
    """The module of a backbone config for in_size x in_size images. It checks each input's size: a digit
    of another size fails deep inside with a matrix-shape error that names neither the size nor the fix."""
    model = BACKBONES[cfg.arch].module(cfg, checked_plan(cfg, in_size))
    model.in_size = in_size
    model.register_forward_pre_hook(_check_size)
    return model


def _check_size(model: nn.Module, args: tuple) -> None:
    h, w = args[0].shape[-2:]
    if (h, w) != (model.in_size, model.in_size):
        s = model.in_size
        raise ValueError(
            f"this model takes {s} x {s} images (the canvas of the variant it trained on), not {h} x {w}: "
            f"stnexp.on_canvas(images, {s}) places 28 x 28 digits in the middle of it"
        )


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


def param_groups(model: Model, lr: float, loc_lr_scale: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups: everything at lr, and a transformer's localisation net at lr * loc_lr_scale.
    With weight decay each is split in two, and only conv and linear weights decay: biases and norms
    carry no scale to shrink, and decaying the transformer's regressor pulls theta toward zero, a zoom
    into one point, which would bias a weight-decay ablation against the ST-CNN. Without it the groups
    stay the two of earlier versions, so their checkpoints resume."""
    loc = list(model.stn.parameters()) if model.stn is not None else []
    loc_ids = {id(p) for p in loc}
    parts = [("model", [p for p in model.parameters() if id(p) not in loc_ids], lr)]
    if loc:
        parts.append(("loc", loc, lr * loc_lr_scale))
    if not weight_decay:
        return [{"params": params, "lr": at, "name": name} for name, params, at in parts]
    # by module, not by shape: the fused trainer stacks seeds, so a bias there has two dimensions
    norms = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm)
    regressors = {id(m) for m in model.stn.regressors()} if model.stn is not None else set()
    decay = {
        id(p)
        for module in model.modules()
        if not isinstance(module, norms) and id(module) not in regressors
        for pname, p in module.named_parameters(recurse=False)
        if pname == "weight"
    }
    groups = []
    for name, params, at in parts:
        decays = [p for p in params if id(p) in decay]
        rest = [p for p in params if id(p) not in decay]
        groups.append({"params": decays, "lr": at, "name": name, "weight_decay": weight_decay})
        groups.append({"params": rest, "lr": at, "name": f"{name}-no-decay", "weight_decay": 0.0})
    return groups


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
