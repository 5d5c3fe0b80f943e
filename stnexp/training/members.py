"""A member: one model of a (variant, seed) group in training, with its optimizer, schedule and
progress, and the state of it that goes into a checkpoint and comes back out on --resume."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from stnexp import config as C
from stnexp import models, seeds
from stnexp.config import Config
from stnexp.device import channels_last
from stnexp.errors import UserError
from stnexp.models import backbones
from stnexp.training import optim


class Length(NamedTuple):
    """How long a group trains: optimizer steps per epoch, steps in all, epochs (the last may be partial)."""

    steps_per_epoch: int
    total: int
    epochs: int


@dataclass
class Member:
    """One model in training. Everything below `sched` is what a checkpoint carries besides the weights."""

    name: str
    variant: str
    seed: int
    in_size: int
    model: backbones.Model
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0
    step: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    diverged: int | None = None
    seconds: float = 0.0
    history: list = field(default_factory=list)
    # the model's own random stream (dropout draws from it), so what other models draw does not matter
    rng: dict | None = None
    # train.parallel: data: the DistributedDataParallel wrapper the step calls (the same parameters)
    ddp: torch.nn.Module | None = None

    @property
    def dropout(self) -> bool:
        return self.model.dropout.p > 0


def build(cfg: Config, name: str, variant: str, seed: int, length: Length, device: torch.device) -> Member:
    """A fresh member: weights drawn from (seed, model name) alone, on `device`."""
    mcfg = cfg.models[name]
    in_size = cfg.variant(variant).canvas
    torch.manual_seed(seeds.derive(seed, "init", name))
    model = models.build(mcfg, in_size).to(device)
    if channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    opt = optim.optimizer(cfg.train, model, mcfg)
    sched = optim.scheduler(cfg.train, opt, length.steps_per_epoch, length.total)
    m = Member(name, variant, seed, in_size, model, opt, sched)
    if m.dropout:
        m.rng = rng_state(device, seeds.derive(seed, "dropout", name))
    return m


def payload(m: Member, cfg: Config, kind: str, precision: str) -> dict:
    """What a checkpoint of `m` holds (kind: best | last). The keys are those of version 0.1, and
    `precision` (bf16 | fp32), which the model trained at and is scored at wherever it is evaluated."""
    return {
        "precision": precision,
        "kind": kind,
        "variant": m.variant,
        "model_name": m.name,
        "seed": m.seed,
        "in_size": m.in_size,
        "config": cfg.model_dump(mode="json"),
        "config_digest": cfg.digest(),
        "model": m.model.state_dict(),
        "optimizer": optim.plain_lrs(m.opt.state_dict()),
        "scheduler": optim.plain_lrs(m.sched.state_dict()),
        "epoch": m.epoch,
        "step": m.step,
        "best_val": m.best_val,
        "best_epoch": m.best_epoch,
        "diverged": m.diverged,
        "train_seconds": m.seconds,
        "history": m.history,
        "rng": m.rng or {},
        "global_rng": rng_state(_device(m)),
    }


def restore(m: Member, ck: dict, cfg: Config, path: Path, kind: str = "last") -> None:
    """Continue `m` from checkpoint `ck`, which must come from this very config and be the `kind`
    checkpoint of this very member (a file swapped with another seed's or model's is refused)."""
    # compared through today's reading of the checkpoint's config, so runs of older versions resume too
    if C.validate(ck["config"]).digest() != cfg.digest():
        raise UserError(f"{path}: made by a different config than this run's; resume with the run's config")
    mine = {"model_name": m.name, "variant": m.variant, "seed": m.seed, "kind": kind, "in_size": m.in_size}
    wrong = [f"{key} {ck.get(key)!r}, not {want!r}" for key, want in mine.items() if ck.get(key) != want]
    if wrong:
        raise UserError(
            f"{path}: the checkpoint of another slot ({'; '.join(wrong)}); put back the file this run wrote there"
        )
    problem = models.mismatch(m.model, ck["model"])
    if problem:
        raise UserError(f"{path}: does not fit the configured model ({problem})")
    _resumable(ck, path)
    m.model.load_state_dict(ck["model"])
    if len(ck["optimizer"].get("param_groups", ())) != len(m.opt.param_groups):
        raise UserError(
            f"{path}: its optimizer has {len(ck['optimizer']['param_groups'])} parameter groups, this version's "
            f"{len(m.opt.param_groups)}: made before weight decay left biases, norms and the transformer's "
            "regressor alone (stnexp 0.3); start the run again, or resume it with the stnexp that made it"
        )
    try:
        m.opt.load_state_dict(ck["optimizer"])
        m.sched.load_state_dict(ck["scheduler"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: malformed checkpoint: its optimizer or schedule does not load ({first})") from None
    for group in m.opt.param_groups:  # a buffer of another shape would fail only at the first step
        for p in group["params"]:
            for key, v in m.opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise UserError(
                        f"{path}: malformed checkpoint: the optimizer's {key} of a {tuple(p.shape)} parameter is "
                        f"{tuple(v.shape)}"
                    )
    m.epoch, m.step, m.best_val, m.best_epoch = ck["epoch"], ck["step"], ck["best_val"], ck["best_epoch"]
    m.diverged, m.seconds, m.history = ck["diverged"], ck["train_seconds"], list(ck["history"])
    m.rng = ck["rng"] or None
    if ck.get("global_rng"):  # nothing in a run draws from it today; restored so that nothing ever can drift
        set_rng(_device(m), ck["global_rng"])


def _resumable(ck: dict, path: Path) -> None:
    """What resume restores beyond the weights and the optimizer, checked before anything is: the
    history's records and the random states (which are used only later, one step or one epoch on)."""
    if not all(isinstance(h, dict) for h in ck["history"]):
        raise UserError(f"{path}: malformed checkpoint: 'history' holds entries that are not records")
    for key in ("rng", "global_rng"):
        state = ck.get(key)
        if state and not (isinstance(state, dict) and _rng_ok(state.get("torch"), torch.get_rng_state().numel())):
            raise UserError(f"{path}: malformed checkpoint: {key!r} is not a random generator's state")
        if state and "cuda" in state and not _rng_ok(state["cuda"], None):
            raise UserError(f"{path}: malformed checkpoint: {key!r} holds no CUDA generator's state")


def _rng_ok(t, size: int | None) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and t.dtype == torch.uint8
        and t.dim() == 1
        and t.layout == torch.strided
        and (size is None or t.numel() == size)
    )


def _device(m: Member) -> torch.device:
    return next(m.model.parameters()).device


def rng_state(device: torch.device, seed: int | None = None) -> dict:
    if seed is not None:
        torch.manual_seed(seed)
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng(device: torch.device, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def own_rng(m: Member):
    """Swap the member's own random state in for a step (dropout) and out again afterwards."""
    device = _device(m)
    saved = rng_state(device)
    set_rng(device, m.rng)
    try:
        yield
    finally:
        m.rng = rng_state(device)
        set_rng(device, saved)
