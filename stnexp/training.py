"""Side-by-side training: for each variant and seed, every model steps on the same batches.

One batch is drawn per step and each model takes its own optimizer step on it (step.py). Weight
initialisation and batch order derive from the seed alone, so a model's result does not depend on which
other models share the run. Losses and accuracies accumulate on the device; the host reads them a few
times a second. At the end the checkpoints are scored from disk, as `stnexp eval` scores them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from stnexp import analysis, artifacts as A, board, checkpoints, data, evaluation, fused, members, parallel, pictures, report, reporting, runs
from stnexp.config import Config
from stnexp.errors import UserError
from stnexp.device import autocast_dtype, configure, describe, precision
from stnexp.members import Length, Member
from stnexp.step import TrainStep

PROGRESS_EVERY = 0.5  # seconds between host reads of the device-side running sums (each read is a sync)
PLAIN_EVERY = 30.0  # seconds between progress lines when the output is not a terminal (a file, a CI log)
LEFT = "time left"  # the progress bar's key for the time left: a space, so that no model name can take it
PICTURE_DIGITS = 32
AGREE_EVERY = 50  # steps between the data-parallel ranks' agreement on Ctrl-C and divergence (one tiny all-reduce)


class Interrupted(Exception):
    """Ctrl-C during training: the last completed epoch's checkpoints are on disk and resumable
    (`nothing`: no epoch had completed, so there is nothing to resume)."""

    def __init__(self, nothing: bool = False):
        super().__init__()
        self.nothing = nothing


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
    world: parallel.World | None = None  # under torchrun (train.parallel)
    bundles_after: int = 0  # groups (or lockstep bundles) still to train after the current one: the time left

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files: one process, or rank 0 of several (in jobs mode
        every rank writes its own groups' checkpoints too)."""
        return self.world is None or self.world.leader

    @property
    def data_parallel(self) -> bool:
        return self.world is not None and self.world.mode == "data"


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


@dataclass
class Epoch:
    """One epoch of a group as it ran: its number, the models that trained, the steps taken and each
    model's compute seconds (models stepped together share their step's time equally)."""

    number: int
    active: list[Member]
    steps: int
    seconds: dict[str, float]


def train(cfg: Config, run_dir: Path, device: torch.device, log: logging.Logger, stop: threading.Event | None = None,
          world: parallel.World | None = None) -> list[dict]:
    """Train every (variant, seed) group of the config into `run_dir`, resuming what its checkpoints hold;
    then score best and last checkpoints on the test sets and write the result tables. Under torchrun
    (`world`) this rank trains its share (parallel.py) and rank 0 alone scores and writes the tables."""
    configure(device, cfg.train.deterministic)
    dtype = autocast_dtype(cfg.train.amp, device)
    log.info(f"device {device} ({describe(device)}), precision {'bf16 autocast' if dtype else 'fp32'}")
    t0 = time.perf_counter()
    split = data.split(cfg.data, device)
    log.debug(f"digits on {device} in {time.perf_counter() - t0:.2f}s")
    tb = board.Board(Path(run_dir)) if cfg.train.tensorboard and (world is None or world.leader) else None
    run = Run(cfg, Path(run_dir), device, dtype, log, stop or threading.Event(), split, tb, world)
    groups = [(vname, seed) for vname in cfg.data.variants for seed in cfg.seeds]
    mine = parallel.deal(groups, world) if world is not None and world.mode == "jobs" else groups
    fuse = fused.wanted(cfg.train, device)
    if fuse:
        log.info("train.fuse: each variant's seeds train in lockstep, all their models' steps taken together"
                 + (" in one CUDA graph" if cfg.train.cuda_graphs and device.type == "cuda" else ""))
    history: list[dict] = []
    interrupted = False
    try:
        bundles = lockstep(mine, fuse)
        for i, bundle in enumerate(bundles):
            now = replace(run, bundles_after=len(bundles) - 1 - i)
            trained = [make_group(now, vname, seed) for vname, seed in bundle]
            train_groups(now, trained, history, fuse)
            history += [r for g in trained for m in g.members for r in m.history]
    except Interrupted:
        interrupted = True
    finally:
        if tb is not None:
            tb.close()
    if world is not None and world.mode == "jobs":
        interrupted = gather_jobs(run, mine, history, interrupted)
        history.sort(key=lambda r: groups.index((r["variant"], r["seed"])))
        if run.writes:
            A.write_metrics(run.dir, history)
    if not run.writes:
        if interrupted:
            raise Interrupted()
        return []
    rows = score(run)
    if interrupted and not rows:  # Ctrl-C before any epoch ended: no checkpoint, no table to write
        raise Interrupted(nothing=True)
    write_curves(run.dir)
    reporting.write(A.RESULTS.stem(run.dir), rows, reporting.results_markdown(rows, interrupted), reporting.RESULT_FIELDS)
    log.info("\n" + reporting.results_markdown([r for r in rows if r["checkpoint"] == "best"], interrupted))
    try:
        report.write([run.dir], report.make([run.dir], False), run.dir, html=True, markdown=False)
        log.info(f"results: {A.RESULTS.path(run.dir)}; all of it in one page: {A.REPORT.path(run.dir)}")
    except UserError as e:  # the tables are written; a page that cannot be made must not fail the run
        log.warning(f"results: {A.RESULTS.path(run.dir)}; no {A.REPORT.pattern}: {e}")
    runs.set_state(run.dir, "interrupted" if interrupted else "finished")
    if interrupted:
        raise Interrupted()
    log.info(f"finished in {duration(time.perf_counter() - t0)}; run directory: {run.dir}")
    return rows


def make_group(run: Run, vname: str, seed: int) -> Group:
    """The group's batch stream, validation set and members, each resumed from its last checkpoint."""
    cfg = run.cfg
    spec = cfg.variant(vname)
    stream = data.Stream(run.split.train, spec, seed, vname, cfg.train.batch_size, cfg.data.resample_train)
    per_epoch = len(stream)
    total = cfg.train.iterations or (cfg.train.epochs or 10) * per_epoch
    length = Length(per_epoch, total, math.ceil(total / per_epoch))
    group_members = [members.build(cfg, name, vname, seed, length, run.device) for name in cfg.models]
    for m in group_members:
        path = A.CHECKPOINT.path(run.dir, variant=vname, model=m.name, seed=seed, kind="last")
        # data-parallel ranks resume from rank 0's checkpoint, whether or not they see its folder
        ck = checkpoints.load(path) if (run.writes or not run.data_parallel) and path.exists() else None
        if run.data_parallel:
            ck = parallel.from_leader(run.world, ck)
        if ck is not None:
            members.restore(m, ck, cfg, path)
        if cfg.train.compile:
            m.model.compile()
        if run.data_parallel:
            from torch.nn.parallel import DistributedDataParallel

            m.ddp = DistributedDataParallel(m.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    val = data.fixed(run.split.val, spec, seed, vname, "val") if cfg.data.val_size else None
    steps = {m.name: TrainStep(m, cfg.train, run.dtype) for m in group_members}
    return Group(vname, seed, stream, val, length, group_members, steps)


def lockstep(groups: list[tuple[str, int]], fuse: bool) -> list[list[tuple[str, int]]]:
    """The (variant, seed) groups that train at the same time: with train.fuse all seeds of a variant
    (their lengths are equal), else each group alone."""
    if not fuse:
        return [[g] for g in groups]
    return [[g for g in groups if g[0] == v] for v in dict.fromkeys(v for v, _ in groups)]


def train_groups(run: Run, groups: list[Group], earlier: list[dict], fuse: bool = False) -> None:
    """Train groups' models to the end, epoch by epoch, the groups in lockstep (one group: as it is);
    with `fuse` every step of all their models is taken together (fused.Together). `earlier` holds the
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
    together: dict | None = {} if fuse else None
    first = min(m.epoch for g in todo for m in g.members)
    for number in range(first + 1, max(g.length.epochs for g in todo) + 1):
        parts = [(g, active) for g in todo if (active := [m for m in g.members if m.epoch < number and m.diverged is None])]
        if not parts:
            continue
        for (group, _), epoch in zip(parts, run_epoch(run, parts, number, together)):
            end_epoch(run, group, epoch)
        if run.writes:
            A.write_metrics(run.dir, earlier + [r for g in groups for m in g.members for r in m.history])


def run_epoch(run: Run, parts: list[tuple[Group, list[Member]]], number: int, together: dict | None = None) -> list[Epoch]:
    """Step each group's `active` models through epoch `number` of its stream, the groups in lockstep;
    returns each group's epoch with its steps and seconds. `together` None: one model after another,
    each timed alone; a dict: each step of all the models at once through fused.Together (kept in the
    dict between epochs). A model whose running loss stops being finite stops (diverged)."""
    group0 = parts[0][0]
    per_epoch, total = group0.length.steps_per_epoch, group0.length.total
    steps = min(per_epoch, total - (number - 1) * per_epoch)
    epochs = [Epoch(number, active, 0, {}) for _, active in parts]
    timers = {key: Timer(run.device) for key in ([None] if together is not None else [id(m) for _, active in parts for m in active])}
    for group, active in parts:
        for m in active:
            m.model.train()
            group.steps[m.name].sums.zero()
    label = f"{group0.variant} s{','.join(str(g.seed) for g, _ in parts)}"
    bar = tqdm(total=steps, desc=f"{label} epoch {number}/{group0.length.epochs}", unit="step", leave=False, dynamic_ncols=True, disable=None)  # no bar when not a terminal
    started = last_read = last_line = time.perf_counter()
    done = 0
    part = parallel.shard(run.world, group0.stream.batch_size) if run.data_parallel else slice(None)
    for batches in zip(*(g.stream.epoch(number) for g, _ in parts)):
        if done == steps:
            break
        batches = [(x[part], y[part]) for x, y in batches]  # data-parallel: this rank's shard of the batch every rank drew
        step_models([(g.steps[m.name], m, batch) for (g, active), batch in zip(parts, batches) for m in active if m.diverged is None], timers, together)
        done += 1
        bar.update(1)
        if time.perf_counter() - last_read > PROGRESS_EVERY or done == steps:
            last_read = time.perf_counter()
            post = {}
            for (group, _), epoch in zip(parts, epochs):
                numbers = progress(run, group, epoch, done)
                post.update(numbers if len(parts) == 1 else {f"{k} s{group.seed}": v for k, v in numbers.items()})
            post[LEFT] = time_left(run, group0, number, done, last_read - started)
            bar.set_postfix(post, refresh=False)
            if bar.disable and last_read - last_line >= PLAIN_EVERY and done < steps:
                last_line = last_read
                run.log.info(progress_line(label, group0, number, (done, steps), post, last_read - started))
        if run.data_parallel:  # Ctrl-C and divergence only at steps where every rank asks
            # a list, not a generator: every group's all-reduce must run on every rank
            stopping = (done % AGREE_EVERY == 0 or done == steps) and any([agree(run, g, e) for (g, _), e in zip(parts, epochs)])
        else:
            stopping = run.stop.is_set()
        if stopping:
            bar.close()
            raise Interrupted()
    bar.close()
    shared = timers[None].read() / sum(len(e.active) for e in epochs) if together is not None else None
    for epoch in epochs:
        epoch.steps = done
        epoch.seconds = {m.name: shared if shared is not None else timers[id(m)].read() for m in epoch.active}
    return epochs


def step_models(live: list[tuple[TrainStep, Member, tuple]], timers: dict, together: dict | None) -> None:
    """One optimizer step of each (step, model, its group's batch): one model after another, each
    timed alone, or all at once through fused.Together under one timer."""
    if together is None:
        for step, m, (x, y) in live:
            with timers[id(m)]:
                step(x, y)
                m.sched.step()
    elif live:
        with timers[None]:
            joint(together, [step for step, _, _ in live])([x for *_, (x, _) in live], [y for *_, (_, y) in live])
            for _, m, _ in live:
                m.sched.step()
    for _, m, _ in live:
        m.step += 1


def joint(cache: dict, steps: list[TrainStep]) -> fused.Together:
    """The Together of these steps, made (and on CUDA captured) anew only when the set of models changes:
    one diverged, or a group resumed from an earlier epoch than the others. The old one goes first, so
    its graph's memory is free before the new capture."""
    key = tuple(map(id, steps))
    if cache.get("key") != key:
        cache.clear()
        cache.update(key=key, step=fused.Together(steps))
    return cache["step"]


def progress(run: Run, group: Group, epoch: Epoch, done: int) -> dict[str, str]:
    """Each model's running loss and accuracy (a host sync); marks a model whose loss is not finite."""
    post = {}
    for m in epoch.active:
        sums = group.steps[m.name].sums
        loss = float(sums.loss) / done
        post[m.name] = f"loss {loss:.3f} acc {int(sums.correct) / (done * group.stream.batch_size // world_size(run)):.3f}"
        if not run.data_parallel:  # there the ranks decide together (agree)
            check_divergence(run, group, m, loss, epoch.number)
    return post


def world_size(run: Run) -> int:
    return run.world.size if run.data_parallel else 1


def agree(run: Run, group: Group, epoch: Epoch) -> bool:
    """Data-parallel ranks, at the same step: a model diverged if its loss is not finite on some rank,
    and all stop if Ctrl-C reached some rank. Returns whether to stop."""
    active = [m for m in epoch.active if m.diverged is None]
    flags = parallel.any_rank(run.world, [run.stop.is_set()] + [not math.isfinite(float(group.steps[m.name].sums.loss)) for m in active])
    for m, bad in zip(active, flags[1:]):
        if bad:
            check_divergence(run, group, m, float("nan"), epoch.number)
    if flags[0]:
        run.stop.set()
    return flags[0]


def progress_line(label: str, group: Group, number: int, done_of: tuple[int, int], post: dict[str, str], seconds: float) -> str:
    """The progress bar as one plain line: where the epoch is, its pace, each model's running numbers and
    the time left (post[LEFT], from time_left)."""
    done, steps = done_of
    models = ", ".join(f"{name} {numbers}" for name, numbers in post.items() if name != LEFT)
    return (f"{label} epoch {number}/{group.length.epochs} step {done}/{steps}, "
            f"{done / max(seconds, 1e-9) * group.stream.batch_size:,.0f} images/s, {models}, about {post[LEFT]} left")


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


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"


def check_divergence(run: Run, group: Group, m: Member, loss: float, epoch: int) -> None:
    if not math.isfinite(loss) and m.diverged is None:
        m.diverged = epoch
        run.log.warning(f"{group.variant} s{group.seed} {m.name}: loss is {loss} at epoch {epoch}; stopping this model (diverged)")


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
        if run.data_parallel:  # each rank summed its shards: the mean of the shards' losses is the batch's
            loss_sum, correct = parallel.total(run.world, [loss_sum, correct])
            loss_sum, correct = loss_sum / run.world.size, int(correct)
        loss = loss_sum / max(1, epoch.steps)
        check_divergence(run, group, m, loss, epoch.number)
        validate = group.val is not None and m.diverged is None and (epoch.number % cfg.train.eval_every == 0 or epoch.number == group.length.epochs)
        val_acc = validation(run, m, group.val) if validate else None
        train_acc = correct / max(1, n_images)
        m.history.append({
            "variant": group.variant, "seed": group.seed, "model": m.name, "epoch": epoch.number, "step": m.step,
            "train_loss": loss, "train_acc": train_acc, "val_acc": val_acc, "lr": float(m.opt.param_groups[0]["lr"]),
            "seconds": round(seconds, 3), "images_per_s": round(n_images / seconds, 1) if seconds else None,
        })
        if run.tb is not None:
            run.tb.epoch(m.history[-1], m.model, group.val.images if group.val is not None else None)
        m.epoch = epoch.number
        score = float(epoch.number) if group.val is None else val_acc  # without a validation set the newest epoch is "best"
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
    """Validation accuracy; data-parallel ranks score a share of the digits each and add the counts."""
    if not run.data_parallel:
        return evaluation.correct(m.model, val.images, val.labels, run.dtype) / len(val.labels)
    w = run.world
    (correct,) = parallel.total(w, [evaluation.correct(m.model, val.images[w.rank :: w.size], val.labels[w.rank :: w.size], run.dtype)])
    return int(correct) / len(val.labels)


def save(run: Run, m: Member, kind: str) -> None:
    if run.data_parallel and not run.writes:  # rank 0 holds the same weights and writes them
        return
    path = A.CHECKPOINT.path(run.dir, variant=m.variant, model=m.name, seed=m.seed, kind=kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save(path, members.payload(m, run.cfg, kind, precision(run.dtype)))


def gather_jobs(run: Run, mine: list[tuple[str, int]], history: list[dict], interrupted: bool) -> bool:
    """Jobs mode, after training: every other rank sends rank 0 the checkpoints of its groups and their
    metrics rows, so the run directory need not be shared between machines; rank 0 writes the files it
    does not already have and adds the rows to `history`. Returns whether some rank was interrupted."""
    files = {}
    if not run.writes:
        for vname, seed in mine:
            for name in run.cfg.models:
                for kind in A.CHECKPOINT_KINDS:
                    path = A.CHECKPOINT.path(run.dir, variant=vname, model=name, seed=seed, kind=kind)
                    if path.exists():
                        files[path.relative_to(run.dir).as_posix()] = path.read_bytes()
    got = parallel.to_leader(run.world, {"files": files, "history": [] if run.writes else history, "interrupted": interrupted})
    if got is None:
        return interrupted
    for part in got[1:]:
        for name, blob in part["files"].items():
            path = run.dir / name
            if not path.is_file() or path.read_bytes() != blob:  # on a shared folder: already there
                path.parent.mkdir(parents=True, exist_ok=True)
                checkpoints.atomic_write(path, lambda f: f.write(blob))
        history += part["history"]
    return any(part["interrupted"] for part in got)


def write_curves(run_dir: Path) -> None:
    """curves/<variant>/s<seed>.png from metrics.csv (the whole history, a resumed run's too)."""
    history = A.read_metrics(run_dir) or []
    for variant, seed in dict.fromkeys((r["variant"], r["seed"]) for r in history):
        mine = [r for r in history if (r["variant"], r["seed"]) == (variant, seed)]
        pictures.curves(mine, A.CURVES.path(run_dir, variant=variant, seed=seed), f"training curves: variant {variant}, seed {seed}")


def score(run: Run) -> list[dict]:
    """Test accuracy of every best and last checkpoint on disk, loaded back from the files through the
    scoring path of `stnexp eval`, plus the transformer pictures. Groups without checkpoints
    (interrupted early) are skipped."""
    tests = evaluation.TestSets(run.device)
    tests.know(run.cfg.data, run.split)
    paths = [
        path
        for vname in run.cfg.data.variants
        for seed in run.cfg.seeds
        for name in run.cfg.models
        for kind in A.CHECKPOINT_KINDS
        if (path := A.CHECKPOINT.path(run.dir, variant=vname, model=name, seed=seed, kind=kind)).exists()
    ]
    rows, right, errors, rectified, params = [], {}, {}, [], {}
    for scored in evaluation.score(paths, lambda ck, cfg: [tests.get(cfg, ck["variant"], ck["seed"])], run.device):
        rows += scored.rows
        ck, model = scored.checkpoint, scored.model
        if ck["kind"] != "best":
            continue
        key = (ck["variant"], ck["seed"], ck["model_name"])
        right[key], errors[key] = scored.right[0], scored.rows[0]["error"]
        test = tests.get(run.cfg, ck["variant"], ck["seed"])
        params[key[:2]] = test.params
        if model.stn is not None:
            path = A.STN.path(run.dir, variant=ck["variant"], model=ck["model_name"], seed=ck["seed"])
            pictures.transformer(model, test.images[:PICTURE_DIGITS], test.labels[:PICTURE_DIGITS], path,
                                 f"{ck['model_name']}, variant {ck['variant']}, seed {ck['seed']}")
            r = analysis.rectification(model, test.images, test.params, test.images.shape[-1])
            if r is not None:
                rectified.append({"variant": key[0], "seed": key[1], "model": key[2], **r.row})
                write_scatter(run.dir, key, r, model.stn.transform)
    binned = analysis.binned(right, params)
    write_analysis(run.dir, analysis.paired_rows(right, errors), rectified, binned)
    for variant, seed in dict.fromkeys((b["variant"], b["seed"]) for b in binned):
        mine = [b for b in binned if (b["variant"], b["seed"]) == (variant, seed)]
        pictures.invariance(mine, A.INVARIANCE.path(run.dir, variant=variant, seed=seed), f"test error by the true distortion of the digits: variant {variant}, seed {seed} (best checkpoints)")
    return rows


def write_scatter(run_dir: Path, key: tuple[str, int, str], r: analysis.Rectified, transform: str) -> None:
    """rectification/<variant>/<model>-s<seed>.png: how much of each digit's angle and scale the
    transformer undid, for the parts of the pose that vary and that its family can change."""
    variant, seed, name = key
    moves = {"angle": "angle", "log_scale": "scale"}
    parts = [p for p in r.true if moves[p] not in r.row["cannot"] and float(r.true[p].std()) > 1e-6]
    if parts:
        title = f"what {name} ({transform}{', at conv1' if r.row['at'] == 'conv1' else ''}) undid of each test digit's pose: variant {variant}, seed {seed}"
        pictures.scatter({p: r.true[p] for p in parts}, {p: r.undone[p] for p in parts}, A.RECTIFICATION.path(run_dir, variant=variant, model=name, seed=seed), title)


def write_analysis(run_dir: Path, paired: list[dict], rectified: list[dict], binned: list[dict]) -> None:
    """analysis.md and .json: McNemar per pair of models, rectification per transformer, and the error
    by the true distortion."""
    import json

    parts = [analysis.paired_markdown(paired)] if paired else []
    if rectified:
        parts.append(analysis.rectification_markdown(rectified))
    if binned:
        parts.append(analysis.binned_markdown(binned))
    if parts:
        checkpoints.atomic_text(A.ANALYSIS.file(run_dir, ".md"), "\n".join(parts))
        found = {"paired": paired, "rectification": rectified, "by_distortion": binned}
        checkpoints.atomic_text(A.ANALYSIS.file(run_dir, ".json"), json.dumps(found, indent=2) + "\n")


def train_into(cfg: Config, out: Path | None, resume: bool, force: bool, command: str) -> Path:
    """`stnexp train` for one config: make (or resume, or overwrite) the run directory, train into it with
    Ctrl-C handled, and leave nothing behind when bad input stops it before the first checkpoint.
    Under torchrun (`train.parallel`) every rank joins; rank 0 makes the directory. Raises Interrupted
    after Ctrl-C (the run is resumable)."""
    from stnexp.device import resolve

    spot = parallel.plan(cfg.train.parallel)
    torch_device = resolve(cfg.device if spot is None else parallel.device_of(cfg.device, spot[2]))
    board.check(cfg.train.tensorboard)
    if spot is None:
        return _train_into(cfg, out, resume, force, command, torch_device, None)
    rank, size, local = spot
    parallel.check(cfg.train.parallel, size, len(cfg.data.variants) * len(cfg.seeds), cfg.train.batch_size)
    world = parallel.start(cfg.train.parallel, rank, size, local, torch_device)
    try:
        if world.leader:
            return _train_into(cfg, out, resume, force, command, torch_device, world)
        return _follow(cfg, torch_device, world)
    finally:
        parallel.stop(world)


def _train_into(cfg: Config, out: Path | None, resume: bool, force: bool, command: str, device: torch.device, world: parallel.World | None) -> Path:
    from stnexp import config as C

    with contextlib.ExitStack() as stack:
        try:
            run = stack.enter_context(runs.prepare(cfg, out, resume, force))
        except UserError as e:
            if world is not None:  # the other ranks are waiting for the directory: tell them why there is none
                parallel.from_leader(world, {"error": str(e)})
            raise
        if world is not None:
            parallel.from_leader(world, {"run": str(run)})
        log = runs.logger(run)
        log.debug("command: " + command)
        stop = threading.Event()
        previous = install_sigint(stop)
        try:
            if not resume:
                checkpoints.atomic_text(A.CONFIG.path(run), C.dump(cfg))
            elif not A.CHECKPOINT.found(run):
                log.info(f"{run}: no checkpoint yet (no epoch had completed): training starts from the beginning")
            runs.write_env(run, device, precision(autocast_dtype(cfg.train.amp, device)), resume)
            log.info(f"run directory: {run}" + (f" ({world.size} processes, train.parallel: {world.mode})" if world else ""))
            train(cfg, run, device, log, stop, world)
        except UserError:
            # bad input found before anything was trained (missing data files, say): leave nothing behind
            if not resume and not A.CHECKPOINT.found(run):
                runs.logger(None)
                runs.clear(run, remove_dir=True)
            raise
        except Interrupted as e:
            if e.nothing:
                log.warning(f"interrupted before the first epoch ended: no checkpoint, nothing to resume; {run} holds the "
                            f"config, train.log and env.json (--resume --out {run} starts training from the beginning)")
            else:
                log.warning(f"interrupted: checkpoints of the last completed epoch are in {run}; continue with --resume --out {run}")
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
    return run


def _follow(cfg: Config, device: torch.device, world: parallel.World) -> Path:
    """A rank other than 0: train into the directory rank 0 made (its own copy of the path on another
    machine), logging as `[rank N]` (jobs) or only warnings (data: rank 0 reports for all)."""
    said = parallel.from_leader(world, None)
    if "error" in said:
        raise parallel.SharedError(said["error"])  # rank 0 says it
    run = Path(said["run"])
    log = runs.logger(None, quiet=world.mode == "data")
    for h in log.handlers:
        h.setFormatter(logging.Formatter(f"[rank {world.rank}] %(message)s"))
    stop = threading.Event()
    previous = install_sigint(stop)
    try:
        train(cfg, run, device, log, stop, world)
    finally:
        signal.signal(signal.SIGINT, previous)
    return run


def install_sigint(stop: threading.Event):
    """First Ctrl-C: stop at the next step boundary (resumable); a second one interrupts at once."""

    def handler(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    return signal.signal(signal.SIGINT, handler)
