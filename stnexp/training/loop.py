"""The training loop: for each variant and seed, every model steps on the same batches.

One batch is drawn per step and each model takes its own optimizer step on it (step.py). Weight
initialisation and batch order derive from the seed alone, so a model's result does not depend on which
other models share the run. Losses and accuracies accumulate on the device; the host reads them a few
times a second. How processes and steps share the work (torchrun, train.fuse) is modes.py's; what a
finished run writes is outputs.py's; the run directory, Ctrl-C and the ranks are launch.py's.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from stnexp import data
from stnexp.config import Config
from stnexp.device import autocast_dtype, configure, describe, precision
from stnexp.errors import UserError
from stnexp.results import outputs, pictures
from stnexp.store import artifacts as A
from stnexp.store import checkpoints
from stnexp.store.logs import duration
from stnexp.training import board, members, modes
from stnexp.training.members import Length, Member
from stnexp.training.modes import check_divergence
from stnexp.training.step import TrainStep

PROGRESS_EVERY = 0.5  # seconds between host reads of the device-side running sums (each read is a sync)
PLAIN_EVERY = 30.0  # seconds between progress lines when the output is not a terminal (a file, a CI log)
LEFT = "time left"  # the progress bar's key for the time left: a space, so that no model name can take it


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) during training: the last completed epoch's checkpoints are on disk and
    resumable (`nothing`: no epoch had completed, so there is nothing to resume; `signum`: the signal,
    for the exit code 128 + signum)."""

    def __init__(self, nothing: bool = False):
        super().__init__()
        self.nothing = nothing
        self.signum = 2  # SIGINT


@dataclass(frozen=True)
class Run:
    """What every group of a run shares."""

    cfg: Config
    dir: Path
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    log: logging.Logger
    stop: threading.Event
    split: data.Split
    tb: board.Board | None = None  # train.tensorboard: the open event writers
    mode: modes.Process = field(default_factory=modes.Single)  # how the processes share the work (modes.py)
    bundles_after: int = 0  # groups (or lockstep bundles) still to train after the current one: the time left

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files."""
        return self.mode.writes


@dataclass
class Group:
    """The models of one (variant, seed), their shared batch stream and validation set."""

    variant: str
    seed: int
    stream: data.Stream
    val: data.Fixed | None
    length: Length
    members: list[Member]
    steps: dict[str, TrainStep]


@dataclass
class Epoch:
    """One epoch of a group as it ran: its number, the models that trained, the steps taken and each
    model's compute seconds (models stepped together share their step's time equally)."""

    number: int
    active: list[Member]
    steps: int
    seconds: dict[str, float]


def train(
    cfg: Config,
    run_dir: Path,
    device: torch.device,
    log: logging.Logger,
    stop: threading.Event | None = None,
    world=None,
) -> list[dict]:
    """Train every (variant, seed) group of the config into `run_dir`, resuming what its checkpoints hold;
    then score best and last checkpoints on the test sets and write the result tables. Under torchrun
    (`world`) this rank trains its share (modes.py) and rank 0 alone scores and writes the tables."""
    threading.Thread(target=_import_ahead, daemon=True).start()
    configure(device, cfg.train.deterministic)
    dtype = autocast_dtype(cfg.train.amp, device)
    log.info(f"device {device} ({describe(device)}), precision {'bf16 autocast' if dtype else 'fp32'}")
    t0 = time.perf_counter()
    split = data.split(cfg.data, device)
    log.debug(f"digits on {device} in {time.perf_counter() - t0:.2f}s")
    mode = modes.process(world)
    tb = board.Board(Path(run_dir)) if cfg.train.tensorboard and mode.writes else None
    run = Run(cfg, Path(run_dir), device, dtype, log, stop or threading.Event(), split, tb, mode)
    mine = mode.mine([(vname, seed) for vname in cfg.data.variants for seed in cfg.seeds])
    history, interrupted = _train_all(run, mine, fused_wanted(run))
    interrupted = mode.after(run, mine, history, interrupted)
    if not run.writes:
        if interrupted:
            raise Interrupted()
        return []
    run.stop.finishing = True  # a Ctrl-C from here on stops nothing that a resume would keep (launch.install_stops)
    rows = outputs.finish(outputs.Trained(run.cfg, run.dir, run.device, run.split, run.log), interrupted)
    if interrupted:
        raise Interrupted(nothing=not rows)  # nothing: Ctrl-C before any epoch ended, no checkpoint
    log.info(f"finished in {duration(time.perf_counter() - t0)}; run directory: {run.dir}")
    return rows


def _import_ahead() -> None:
    """What the run will import anyway, imported beside the loading of the digits and the first steps: the
    first optimizer imports torch._dynamo (about 1 s on a 2-core CPU), the figures at the end matplotlib
    (about 0.3 s)."""
    importlib.import_module("torch._dynamo")
    pictures.pyplot()


def _train_all(run: Run, mine: list[tuple[str, int]], fuse: bool) -> tuple[list[dict], bool]:
    """Train this process's (variant, seed) groups, bundle by bundle: the history of every epoch, and
    whether Ctrl-C stopped it. The time it took goes to train.log (debug)."""
    history: list[dict] = []
    t0 = time.perf_counter()
    try:
        bundles = modes.stepping(fuse).bundles(mine)  # the groups that train at the same time
        for i, bundle in enumerate(bundles):
            now = replace(run, bundles_after=len(bundles) - 1 - i)
            trained = [make_group(now, vname, seed) for vname, seed in bundle]
            train_groups(now, trained, history, fuse)
            history += [r for g in trained for m in g.members for r in m.history]
    except Interrupted:
        return history, True
    finally:
        if run.tb is not None:
            run.tb.close()
        run.log.debug(f"training: {time.perf_counter() - t0:.2f}s")
    return history, False


def fused_wanted(run: Run) -> bool:
    from stnexp.training import fused

    fuse = fused.wanted(run.cfg.train, run.device)
    if fuse:
        run.log.info(
            "train.fuse: each variant's seeds train in lockstep, all their models' steps taken together"
            + (" in one CUDA graph" if run.cfg.train.cuda_graphs and run.device.type == "cuda" else "")
        )
    return fuse


def make_group(run: Run, vname: str, seed: int) -> Group:
    """The group's batch stream, validation set and members, each resumed from its last checkpoint."""
    cfg = run.cfg
    spec = cfg.variant(vname)
    stream = data.Stream(run.split.train, spec, seed, vname, cfg.train.batch_size, cfg.data.resample_train)
    per_epoch, total = cfg.steps()
    length = Length(per_epoch, total, math.ceil(total / per_epoch))
    group_members = [members.build(cfg, name, vname, seed, length, run.device) for name in cfg.models]
    for m in group_members:
        path = A.CHECKPOINT.path(run.dir, variant=vname, model=m.name, seed=seed, kind="last")
        ck = run.mode.last_checkpoint(path)
        if ck is not None:
            members.restore(m, ck, cfg, path)
        if cfg.train.compile:
            m.model.compile()
        run.mode.wrap(m, run.device)
    val = data.fixed(run.split.val, spec, seed, vname, "val") if cfg.data.val_size else None
    steps = {m.name: TrainStep(m, cfg.train, run.dtype) for m in group_members}
    return Group(vname, seed, stream, val, length, group_members, steps)


def train_groups(run: Run, groups: list[Group], earlier: list[dict], fuse: bool = False) -> None:
    """Train groups' models to the end, epoch by epoch, the groups in lockstep (one group: as it is);
    with `fuse` every step of all their models is taken together (modes.Fused). `earlier` holds the
    metrics of groups done before."""
    todo = []
    for group in groups:
        name, first = f"{group.variant} seed {group.seed}", min(m.epoch for m in group.members)
        if first >= group.length.epochs or all(m.diverged for m in group.members):
            run.log.info(f"{name}: already trained")
            continue
        if first:
            run.log.info(f"{name}: resuming after epoch {first}")
        todo.append(group)
    if not todo:
        return
    stepper = modes.stepping(fuse)
    first = min(m.epoch for g in todo for m in g.members)
    for number in range(first + 1, max(g.length.epochs for g in todo) + 1):
        parts = [
            (g, active) for g in todo if (active := [m for m in g.members if m.epoch < number and m.diverged is None])
        ]
        if not parts:
            continue
        for (group, _), epoch in zip(parts, run_epoch(run, parts, number, stepper)):
            end_epoch(run, group, epoch)
        if run.writes:
            A.write_metrics(run.dir, earlier + [r for g in groups for m in g.members for r in m.history])


def run_epoch(
    run: Run, parts: list[tuple[Group, list[Member]]], number: int, stepper: modes.OneByOne | None = None
) -> list[Epoch]:
    """Step each group's `active` models through epoch `number` of its stream, the groups in lockstep;
    returns each group's epoch with its steps and seconds. `stepper` (modes.py) takes the steps: one model
    after another by default. A model whose running loss stops being finite stops (diverged)."""
    stepper = stepper or modes.OneByOne()
    group0 = parts[0][0]
    per_epoch, total = group0.length.steps_per_epoch, group0.length.total
    steps = min(per_epoch, total - (number - 1) * per_epoch)
    epochs = [Epoch(number, active, 0, {}) for _, active in parts]
    stepper.start(run.device, [m for _, active in parts for m in active])
    for group, active in parts:
        for m in active:
            m.model.train()
            group.steps[m.name].sums.zero()
    label = f"{group0.variant} s{','.join(str(g.seed) for g, _ in parts)}"
    desc = f"{label} epoch {number}/{group0.length.epochs}"
    # disable=None: no bar when the output is not a terminal (the plain lines below stand in for it)
    bar = tqdm(total=steps, desc=desc, unit="step", leave=False, dynamic_ncols=True, disable=None)
    started = last_read = last_line = time.perf_counter()
    done = 0
    part = run.mode.part(group0.stream.batch_size)
    for batches in zip(*(g.stream.epoch(number) for g, _ in parts)):
        if done == steps:
            break
        step_all(stepper, parts, [(x[part], y[part]) for x, y in batches])  # data-parallel: this rank's shard
        done += 1
        bar.update(1)
        if time.perf_counter() - last_read > PROGRESS_EVERY or done == steps:
            last_read = time.perf_counter()
            post = progress_all(run, parts, epochs, done, last_read - started)
            bar.set_postfix(post, refresh=False)
            if bar.disable and last_read - last_line >= PLAIN_EVERY and done < steps:
                last_line = last_read
                run.log.info(progress_line(label, group0, number, (done, steps), post, last_read - started))
        if run.mode.stopping(run, parts, epochs, done, steps):
            bar.close()
            raise Interrupted()
    bar.close()
    n_active = sum(len(e.active) for e in epochs)
    for epoch in epochs:
        epoch.steps = done
        epoch.seconds = {m.name: stepper.seconds(m, n_active) for m in epoch.active}
    return epochs


def step_all(stepper: modes.OneByOne, parts: list[tuple[Group, list[Member]]], batches: list[tuple]) -> None:
    """One optimizer step of every model of the groups that has not diverged, each on its group's batch."""
    live = [
        (g.steps[m.name], m, batch) for (g, active), batch in zip(parts, batches) for m in active if m.diverged is None
    ]
    stepper.step(live)
    for _, m, _ in live:
        m.step += 1


def progress_all(run: Run, parts: list[tuple[Group, list[Member]]], epochs: list[Epoch], done: int, seconds: float):
    """The progress bar's numbers: each model's running loss and accuracy (by seed when groups train in
    lockstep) and the time left."""
    post = {}
    for (group, _), epoch in zip(parts, epochs):
        numbers = progress(run, group, epoch, done)
        post.update(numbers if len(parts) == 1 else {f"{k} s{group.seed}": v for k, v in numbers.items()})
    post[LEFT] = time_left(run, parts[0][0], epochs[0].number, done, seconds)
    return post


def progress(run: Run, group: Group, epoch: Epoch, done: int) -> dict[str, str]:
    """Each model's running loss and accuracy (a host sync); marks a model whose loss is not finite."""
    post = {}
    for m in epoch.active:
        sums = group.steps[m.name].sums
        loss = float(sums.loss) / done
        post[m.name] = (
            f"loss {loss:.3f} acc {int(sums.correct) / (done * group.stream.batch_size // run.mode.share):.3f}"
        )
        if run.mode.checks_progress:  # data-parallel ranks decide together (modes.Data.stopping)
            check_divergence(run, group, m, loss, epoch.number)
    return post


def progress_line(
    label: str, group: Group, number: int, done_of: tuple[int, int], post: dict[str, str], seconds: float
) -> str:
    """The progress bar as one plain line: where the epoch is, its pace, each model's running numbers and
    the time left (post[LEFT], from time_left)."""
    done, steps = done_of
    models = ", ".join(f"{name} {numbers}" for name, numbers in post.items() if name != LEFT)
    return (
        f"{label} epoch {number}/{group.length.epochs} step {done}/{steps}, "
        f"{done / max(seconds, 1e-9) * group.stream.batch_size:,.0f} images/s, {models}, about {post[LEFT]} left"
    )


def time_left(run: Run, group: Group, number: int, done: int, seconds: float) -> str:
    """The training time the group (or the groups in lockstep) still needs at this epoch's pace, and with
    groups still to come the whole run's, each taken to cost as much as this one (validation and
    scoring not counted): an estimate."""
    per_second = done / max(seconds, 1e-9)
    here = group.length.total - (number - 1) * group.length.steps_per_epoch - done
    text = duration(here / per_second)
    if run.bundles_after:
        text += f" (group), {duration((here + run.bundles_after * group.length.total) / per_second)} (run)"
    return text


def _metrics_row(group: Group, m, epoch: Epoch, loss: float, accuracy: tuple[float, float | None], n_images: int):
    """One model's epoch as a row of metrics.csv; `accuracy`: on its training batches, and on validation."""
    seconds = epoch.seconds[m.name]
    train_acc, val_acc = accuracy
    return {
        "variant": group.variant,
        "seed": group.seed,
        "model": m.name,
        "epoch": epoch.number,
        "step": m.step,
        "train_loss": loss,
        "train_acc": train_acc,
        "val_acc": val_acc,
        "lr": float(m.opt.param_groups[0]["lr"]),
        "seconds": round(seconds, 3),
        "images_per_s": round(n_images / seconds, 1) if seconds else None,
    }


@torch.no_grad()
def end_epoch(run: Run, group: Group, epoch: Epoch) -> None:
    """Per model: record the epoch's metrics, validate, and write the last (and a new best) checkpoint."""
    cfg, n_images = run.cfg, epoch.steps * group.stream.batch_size
    summary = []
    for m in epoch.active:
        sums = group.steps[m.name].sums
        seconds = epoch.seconds[m.name]
        m.seconds += seconds
        loss_sum, correct = float(sums.loss), int(sums.correct)
        loss_sum, correct = run.mode.epoch_sums(loss_sum, correct)
        loss = loss_sum / max(1, epoch.steps)
        check_divergence(run, group, m, loss, epoch.number)
        validate = (
            group.val is not None
            and m.diverged is None
            and (epoch.number % cfg.train.eval_every == 0 or epoch.number == group.length.epochs)
        )
        val_acc = validation(run, m, group.val) if validate else None
        train_acc = correct / max(1, n_images)
        m.history.append(_metrics_row(group, m, epoch, loss, (train_acc, val_acc), n_images))
        if run.tb is not None:
            run.tb.epoch(m.history[-1], m.model, group.val.images if group.val is not None else None)
        m.epoch = epoch.number
        score = (
            float(epoch.number) if group.val is None else val_acc
        )  # without a validation set the newest epoch is "best"
        if m.diverged is None and score is not None and score > m.best_val:
            m.best_val, m.best_epoch = score, epoch.number
            save(run, m, "best")
        save(run, m, "last")
        if m.diverged is not None:
            summary.append(f"{m.name} diverged")
        elif val_acc is not None:
            summary.append(f"{m.name} val {100 * val_acc:.2f}%")
        else:
            summary.append(f"{m.name} train {100 * train_acc:.2f}%")
    run.log.info(f"{group.variant} s{group.seed} epoch {epoch.number}/{group.length.epochs}: " + ", ".join(summary))


def validation(run: Run, m: Member, val: data.Fixed) -> float:
    """Validation accuracy (in data mode the ranks score a share of the digits each)."""
    return run.mode.correct(m.model, val, run.dtype) / len(val.labels)


def save(run: Run, m: Member, kind: str) -> None:
    if not run.mode.saves:  # data-parallel: rank 0 holds the same weights and writes them
        return
    path = A.CHECKPOINT.path(run.dir, variant=m.variant, model=m.name, seed=m.seed, kind=kind)
    if not A.CONFIG.path(run.dir).is_file():  # mkdir below would make a run directory without its files again
        raise UserError(
            f"{run.dir}: the run directory (or its {A.CONFIG.pattern}) went away while it trained; stopped, "
            "writing nothing more"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save(path, members.payload(m, run.cfg, kind, precision(run.dtype)))
