"""The optimizer and the learning-rate schedule of `train`: one recipe for every model of a run, with
the localisation net of a transformer in its own parameter group (`stn.loc_lr_scale`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from stnexp import models
from stnexp.config import TrainConfig
from stnexp.models.backbones import BackboneConfig


def lr_factor(t: TrainConfig, steps_per_epoch: int, total: int):
    """The learning-rate multiplier as a function of the step (LambdaLR), for every `train.schedule`."""
    unit = 1 if t.iterations else steps_per_epoch  # `every` and `warmup` count epochs unless training by iterations
    warm = t.warmup * unit

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if t.schedule == "step":
            return t.gamma ** (step // (t.every * unit))
        if t.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        if t.schedule == "onecycle":  # linear rise over 30% of training from lr/25, then cosine down to ~0
            # a warm-up takes the place of that rise: after it the cycle would fall back to lr/25 and climb again
            peak = warm if warm else max(1, int(0.3 * total))
            if step < peak:
                return 0.04 + 0.96 * step / peak
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - peak) / max(1, total - peak))))
        return 1.0

    return factor


def optimizer(t: TrainConfig, model: nn.Module, mcfg: BackboneConfig) -> torch.optim.Optimizer:
    # weight_decay is also each group's default: AdamW's own default (0.01) must never apply
    groups = models.param_groups(model, t.lr, mcfg.stn.loc_lr_scale if mcfg.stn else 1.0, t.weight_decay)
    # on CUDA: one fused kernel per step instead of a handful per parameter, and capturable in a graph
    cuda = next(model.parameters()).device.type == "cuda"
    extra = {"fused": True} if cuda else {}
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, **extra)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=t.lr, weight_decay=t.weight_decay, **({"fused": True, "capturable": True} if cuda else {}))


def scheduler(
    t: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(t, steps_per_epoch, total))


def plain_lrs(state: dict) -> dict:
    """Learning rates as plain floats in checkpoints (a graphed step keeps them in device tensors)."""
    for group in state.get("param_groups", []):
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    if "_last_lr" in state:
        state["_last_lr"] = [float(v) for v in state["_last_lr"]]
    return state
