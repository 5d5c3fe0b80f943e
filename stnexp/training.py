"""Side-by-side training: for each variant and seed, every model steps on the same batches.

One batch is drawn per step and each model takes its own optimizer step on it. Weight initialisation and
batch order derive from the seed alone, so a model's result does not depend on which other models share
the run. Losses and accuracies accumulate on the device; the host reads them a few times a second.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stnexp import checkpoints, evaluation, models, pictures, reporting, runs, seeds, variants
from stnexp.config import Config
from stnexp.device import autocast_dtype, channels_last, configure, describe
from stnexp.errors import UserError

METRIC_FIELDS = ["variant", "seed", "model", "epoch", "step", "train_loss", "train_acc", "val_acc", "lr", "seconds", "images_per_s"]
PROGRESS_EVERY = 0.5  # seconds between host reads of the device-side running sums (each read is a sync)
PICTURE_DIGITS = 32


class Interrupted(Exception):
    """Ctrl-C during training: the last completed epoch's checkpoints are on disk and resumable."""


@dataclass
class Member:
    """One model of a (variant, seed) group and the state its training carries between epochs."""

    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    dropout: bool
    epoch: int = 0
    step: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    diverged: int | None = None
    seconds: float = 0.0
    history: list = field(default_factory=list)
    rng: dict | None = None
    graph: "GraphedStep | None" = None
    # per-epoch running sums (device tensors, read a few times a second) and timing
    loss_sum: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    timer: "Timer | None" = None
    done_steps: int = 0


def lr_factor(cfg: Config, steps_per_epoch: int, total: int):
    """The learning-rate multiplier as a function of the step (LambdaLR), for every `train.schedule`."""
    t = cfg.train
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
            peak = max(1, int(0.3 * total))
            if step < peak:
                return 0.04 + 0.96 * step / peak
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - peak) / max(1, total - peak))))
        return 1.0

    return factor


def make_optimizer(cfg: Config, model: nn.Module, loc_lr_scale: float) -> torch.optim.Optimizer:
    t = cfg.train
    groups = models.param_groups(model, t.lr, loc_lr_scale)
    # on CUDA: one fused kernel per step instead of a handful per parameter, and capturable in a graph
    cuda = next(model.parameters()).device.type == "cuda"
    extra = {"fused": True} if cuda else {}
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, **extra)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=t.lr, weight_decay=t.weight_decay, **({"fused": True, "capturable": True} if cuda else {}))


def build_member(cfg: Config, name: str, in_size: int, seed: int, steps_per_epoch: int, total: int, device: torch.device) -> Member:
    mcfg = cfg.models[name]
    torch.manual_seed(seeds.derive(seed, "init", name))
    model = models.build(mcfg, in_size).to(device)
    if channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model, getattr(mcfg, "loc_lr_scale", 1.0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps_per_epoch, total))
    m = Member(name, model, opt, sched, dropout=mcfg.dropout > 0)
    if m.dropout:  # dropout draws from the global RNG: give each model its own stream
        m.rng = _rng_state(device, seeds.derive(seed, "dropout", name))
    return m


def _rng_state(device: torch.device, seed: int | None = None) -> dict:
    if seed is not None:
        torch.manual_seed(seed)
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(device: torch.device, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def payload(cfg: Config, m: Member, variant: str, seed: int, in_size: int, kind: str) -> dict:
    return {
        "kind": kind, "variant": variant, "model_name": m.name, "seed": seed, "in_size": in_size,
        "config": cfg.model_dump(mode="json"), "config_digest": cfg.digest(),
        "model": m.model.state_dict(), "optimizer": _plain_lrs(m.opt.state_dict()), "scheduler": _plain_lrs(m.sched.state_dict()),
        "epoch": m.epoch, "step": m.step, "best_val": m.best_val, "best_epoch": m.best_epoch,
        "diverged": m.diverged, "train_seconds": m.seconds, "history": m.history,
        "rng": m.rng or {}, "global_rng": _rng_state(next(m.model.parameters()).device),
    }


def _plain_lrs(state: dict) -> dict:
    """Learning rates as plain floats in checkpoints (a graphed step keeps them in device tensors)."""
    for group in state.get("param_groups", []):
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    if "_last_lr" in state:
        state["_last_lr"] = [float(v) for v in state["_last_lr"]]
    return state


def restore(m: Member, ck: dict, cfg: Config, path: Path) -> None:
    if ck.get("config_digest") != cfg.digest():
        raise UserError(f"{path}: made by a different config than this run's; resume with the run's config")
    problem = models.mismatch(m.model, ck["model"])
    if problem:
        raise UserError(f"{path}: does not fit the configured model ({problem})")
    m.model.load_state_dict(ck["model"])
    m.opt.load_state_dict(ck["optimizer"])
    m.sched.load_state_dict(ck["scheduler"])
    m.epoch, m.step, m.best_val, m.best_epoch = ck["epoch"], ck["step"], ck["best_val"], ck["best_epoch"]
    m.diverged, m.seconds, m.history = ck["diverged"], ck["train_seconds"], list(ck["history"])
    m.rng = ck["rng"] or None
    if ck.get("global_rng"):  # nothing in a run draws from it today; restored so that nothing ever can drift
        _set_rng(next(m.model.parameters()).device, ck["global_rng"])


class Timer:
    """Per-model compute time. CPU work is synchronous, so wall time is right; on CUDA, events are
    recorded around each step and read once per epoch, so timing adds no sync to the step."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list = []
        self.seconds = 0.0

    def __enter__(self):
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((self.start, end))
        else:
            self.seconds += time.perf_counter() - self.t0

    def read(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            self.seconds += sum(a.elapsed_time(b) for a, b in self.events) / 1000.0
            self.events.clear()
        s, self.seconds = self.seconds, 0.0
        return s


def train(cfg: Config, run: Path, device: torch.device, log, stop: threading.Event | None = None) -> list[dict]:
    """Train every (variant, seed) group of the config into `run`, resuming what its checkpoints hold;
    then score best and last checkpoints on the test sets and write the result tables."""
    stop = stop or threading.Event()
    configure(device, cfg.train.deterministic)
    dtype = autocast_dtype(cfg.train.amp, device)
    log.info(f"device {device} ({describe(device)}), precision {'bf16 autocast' if dtype else 'fp32'}")
    t0 = time.perf_counter()
    split = variants.split(cfg.data, device)
    log.debug(f"digits on {device} in {time.perf_counter() - t0:.2f}s")
    history: list[dict] = []
    interrupted = False
    try:
        for vname in cfg.data.variants:
            for seed in cfg.seeds:
                members = train_group(cfg, vname, seed, split, run, device, dtype, log, stop, history)
                history += [r for m in members for r in m.history]
    except Interrupted:
        interrupted = True
    rows = score(cfg, run, split, device, dtype, log)
    reporting.write(run, "results", rows, reporting.results_markdown(rows, interrupted), reporting.RESULT_FIELDS)
    log.info("\n" + reporting.results_markdown([r for r in rows if r["checkpoint"] == "best"], interrupted))
    log.info(f"results: {run / 'results.md'}")
    if interrupted:
        raise Interrupted()
    return rows


def train_group(cfg: Config, vname: str, seed: int, split, run: Path, device, dtype, log, stop, done_history) -> list[Member]:
    spec = cfg.variant(vname)
    stream = variants.Stream(split.train_x, split.train_y, spec, seed, vname, cfg.train.batch_size, cfg.data.resample_train)
    steps_per_epoch = len(stream)
    total = cfg.train.iterations or (cfg.train.epochs or 10) * steps_per_epoch
    n_epochs = math.ceil(total / steps_per_epoch)
    members = [build_member(cfg, name, spec.canvas, seed, steps_per_epoch, total, device) for name in cfg.models]
    for m in members:
        path = runs.checkpoint_path(run, vname, m.name, seed, "last")
        if path.exists():
            restore(m, checkpoints.load(path), cfg, path)
    if cfg.train.compile:
        for m in members:
            m.model.compile()
    val = variants.fixed(split.val_x, split.val_y, spec, seed, vname, "val") if cfg.data.val_size else None
    first = min(m.epoch for m in members)
    if first >= n_epochs or all(m.diverged for m in members):
        log.info(f"{vname} seed {seed}: already trained")
        return members
    if first:
        log.info(f"{vname} seed {seed}: resuming after epoch {first}")
    for epoch in range(first + 1, n_epochs + 1):
        active = [m for m in members if m.epoch < epoch and m.diverged is None]
        if not active:
            continue
        steps = min(steps_per_epoch, total - (epoch - 1) * steps_per_epoch)
        run_epoch(active, stream, epoch, n_epochs, steps, cfg, vname, seed, device, dtype, log, stop)
        end_epoch(active, val, epoch, n_epochs, steps * stream.batch_size, cfg, vname, seed, spec.canvas, run, dtype, log)
        write_metrics(run, done_history + [r for m in members for r in m.history])
    return members


def run_epoch(active: list[Member], stream, epoch: int, n_epochs: int, steps: int, cfg: Config, vname: str, seed: int, device, dtype, log, stop) -> None:
    ls = cfg.train.label_smoothing
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext
    for m in active:
        m.model.train()
        if m.graph is None:
            m.loss_sum = torch.zeros((), device=device)
            m.correct = torch.zeros((), dtype=torch.long, device=device)
        else:  # a captured graph adds into these very tensors
            m.loss_sum.zero_()
            m.correct.zero_()
        m.timer = Timer(device)
    bar = tqdm(total=steps, desc=f"{vname} s{seed} epoch {epoch}/{n_epochs}", unit="step", leave=False, dynamic_ncols=True, disable=None)  # no bar when not a terminal
    last_read = time.perf_counter()
    done = 0
    for x, y in stream.epoch(epoch):
        if done == steps:
            break
        for m in active:
            if m.diverged is not None:
                continue
            with m.timer:
                if m.graph is None and use_graphs(cfg, m, device):
                    m.graph = GraphedStep(m, x, y, dtype, ls)
                if m.graph is not None:
                    m.graph.replay(x, y)
                else:
                    with _own_rng(m, device) if m.dropout else nullcontext():
                        step(m, x, y, autocast, ls)
                m.sched.step()
            m.step += 1
        done += 1
        bar.update(1)
        if time.perf_counter() - last_read > PROGRESS_EVERY or done == steps:
            last_read = time.perf_counter()
            post = {}
            for m in active:
                loss = float(m.loss_sum) / done  # a host sync, a few times a second
                post[m.name] = f"loss {loss:.3f} acc {int(m.correct) / (done * stream.batch_size):.3f}"
                if not math.isfinite(loss) and m.diverged is None:
                    m.diverged = epoch
                    log.warning(f"{vname} s{seed} {m.name}: loss is {loss} at epoch {epoch}; stopping this model (diverged)")
            bar.set_postfix(post, refresh=False)
        if stop.is_set():
            bar.close()
            raise Interrupted()
    bar.close()
    for m in active:
        m.done_steps = done


def step(m: Member, x: torch.Tensor, y: torch.Tensor, autocast, ls: float) -> None:
    """One training step of one model; the running loss and accuracy stay on the device."""
    with autocast():
        logits = m.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=ls)
    m.opt.zero_grad(set_to_none=True)
    loss.backward()
    m.opt.step()
    m.loss_sum += loss.detach()
    m.correct += (logits.argmax(1) == y).sum()


def use_graphs(cfg: Config, m: Member, device: torch.device) -> bool:
    return cfg.train.cuda_graphs and device.type == "cuda" and not m.dropout


class GraphedStep:
    """A model's whole training step (forward, loss, backward, fused optimizer step, running sums)
    captured once as a CUDA graph and replayed: these nets are tiny, so an eager step spends its time
    launching ~100 kernels, not running them. Learning rates live in device tensors that the scheduler
    fills between replays. Capture needs a few warm-up steps; the weights, buffers and optimizer state
    are put back afterwards, so the run trains exactly as many steps as the eager one."""

    WARMUP = 3

    def __init__(self, m: Member, x: torch.Tensor, y: torch.Tensor, dtype, ls: float):
        self.m = m
        self.x, self.y = x.clone(), y.clone()
        for group in m.opt.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=x.device)
        saved_model = {k: v.clone() for k, v in m.model.state_dict().items()}
        saved_opt = {p: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()} for p, st in m.opt.state.items()}
        autocast = (lambda: torch.autocast("cuda", dtype=dtype, cache_enabled=False)) if dtype is not None else nullcontext
        sums = (m.loss_sum.clone(), m.correct.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                step(m, self.x, self.y, autocast, ls)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        m.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            with autocast():
                logits = m.model(self.x)
                loss = F.cross_entropy(logits, self.y, label_smoothing=ls)
            loss.backward()
            m.opt.step()
            m.loss_sum += loss.detach()
            m.correct += (logits.argmax(1) == self.y).sum()
        # undo the warm-up: same tensors (the graph holds their addresses), the values from before
        with torch.no_grad():
            for k, v in m.model.state_dict().items():
                v.copy_(saved_model[k])
            for p, st in m.opt.state.items():
                before = saved_opt.get(p, {})
                for k, v in st.items():
                    if torch.is_tensor(v):
                        # a state that did not exist yet starts at zero: SGD's first momentum step
                        # (buf = grad) and Adam's zero moments at step 0 are exactly that
                        v.copy_(before[k]) if k in before else v.zero_()
            m.loss_sum.copy_(sums[0])
            m.correct.copy_(sums[1])

    def replay(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()


@torch.no_grad()
def end_epoch(active, val, epoch, n_epochs, n_images, cfg: Config, vname, seed, in_size, run: Path, dtype, log) -> None:
    summary = []
    for m in active:
        seconds = m.timer.read()
        m.seconds += seconds
        loss = float(m.loss_sum) / max(1, m.done_steps)
        if not math.isfinite(loss) and m.diverged is None:
            m.diverged = epoch
            log.warning(f"{vname} s{seed} {m.name}: loss is {loss} at epoch {epoch}; stopping this model (diverged)")
        validate = val is not None and m.diverged is None and (epoch % cfg.train.eval_every == 0 or epoch == n_epochs)
        val_acc = evaluation.correct(m.model, val.images, val.labels, dtype) / len(val.labels) if validate else None
        m.history.append({
            "variant": vname, "seed": seed, "model": m.name, "epoch": epoch, "step": m.step,
            "train_loss": loss, "train_acc": int(m.correct) / max(1, n_images),
            "val_acc": val_acc, "lr": float(m.opt.param_groups[0]["lr"]),
            "seconds": round(seconds, 3), "images_per_s": round(n_images / seconds, 1) if seconds else None,
        })
        m.epoch = epoch
        score = float(epoch) if val is None else val_acc  # without a validation set the newest epoch is "best"
        if m.diverged is None and score is not None and score > m.best_val:
            m.best_val, m.best_epoch = score, epoch
            checkpoints.save(_ckpt(run, vname, m, seed, "best"), payload(cfg, m, vname, seed, in_size, "best"))
        checkpoints.save(_ckpt(run, vname, m, seed, "last"), payload(cfg, m, vname, seed, in_size, "last"))
        if m.diverged is not None:
            summary.append(f"{m.name} diverged")
        elif val_acc is not None:
            summary.append(f"{m.name} val {100 * val_acc:.2f}%")
        else:
            summary.append(f"{m.name} train {100 * int(m.correct) / max(1, n_images):.2f}%")
    log.info(f"{vname} s{seed} epoch {epoch}/{n_epochs}: " + ", ".join(summary))


def _ckpt(run: Path, vname: str, m: Member, seed: int, kind: str) -> Path:
    path = runs.checkpoint_path(run, vname, m.name, seed, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class _own_rng:
    """Swap a model's own RNG state in for its step (dropout) and out again afterwards."""

    def __init__(self, m: Member, device):
        self.m, self.device = m, device

    def __enter__(self):
        self.saved = _rng_state(self.device)
        _set_rng(self.device, self.m.rng)

    def __exit__(self, *exc):
        self.m.rng = _rng_state(self.device)
        _set_rng(self.device, self.saved)


def write_metrics(run: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    checkpoints.atomic_text(run / "metrics.csv", buf.getvalue())


def score(cfg: Config, run: Path, split, device, dtype, log) -> list[dict]:
    """Test accuracy of every best and last checkpoint on disk, loaded back from the files (as `stnexp
    eval` does), plus the transformer pictures. Groups without checkpoints (interrupted early) are skipped."""
    rows = []
    for vname in cfg.data.variants:
        spec = cfg.variant(vname)
        for seed in cfg.seeds:
            test = None
            for name in cfg.models:
                last = runs.checkpoint_path(run, vname, name, seed, "last")
                diverged = checkpoints.load(last)["diverged"] if last.exists() else None
                for kind in ("best", "last"):
                    path = runs.checkpoint_path(run, vname, name, seed, kind)
                    if not path.exists():
                        continue
                    if test is None:
                        test = variants.fixed(split.test_x, split.test_y, spec, seed, vname, "test")
                    ck = checkpoints.load(path)
                    model = runs.model_from_checkpoint(ck, path, device)
                    acc = evaluation.correct(model, test.images, test.labels, dtype) / len(test.labels)
                    status = f"diverged at epoch {diverged}" if diverged else "ok"
                    rows.append({
                        "variant": vname, "model": name, "seed": seed, "checkpoint": kind, "accuracy": acc,
                        "error": 100.0 * (1 - acc), "n_test": len(test.labels), "params": models.n_params(model),
                        "train_seconds": round(ck["train_seconds"], 2), "status": status,
                    })
                    if kind == "best" and hasattr(model, "stn"):
                        picture(model, test.images[:PICTURE_DIGITS], runs.stn_picture_path(run, vname, name, seed))
    return rows


@torch.no_grad()
def picture(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """Test digits beside what the transformer made of them (at conv1: its theta applied to the image)."""
    from stnexp import geometry

    model.eval()
    theta = model.theta(x)
    size = model.stn.out_size if model.at == "input" else x.shape[-1]
    return pictures.pairs(x, geometry.warp(x, theta, size), path)


def install_sigint(stop: threading.Event):
    """First Ctrl-C: stop at the next step boundary (resumable); a second one interrupts at once."""

    def handler(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    return signal.signal(signal.SIGINT, handler)
