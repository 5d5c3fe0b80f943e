"""How a run shares its work, each way in one place that the loop (loop.py) calls.

Processes, by `train.parallel` under torchrun (parallel.py): `Single` (one process trains every group and
writes every file), `Jobs` (the groups are dealt over the ranks; rank 0 gathers their checkpoints and
writes the tables) and `Data` (every rank steps every model on its shard of each batch; only rank 0
writes). Stepping, by `train.fuse`: `OneByOne` (each model steps alone and is timed alone) and `Fused`
(the steps of all models of a variant's seeds taken together, fused.Together). A new mode is a new
class here and an entry in `process` or `stepping`.
"""

from __future__ import annotations

import math
import time

import torch

from stnexp.results import scoring
from stnexp.store import artifacts as A
from stnexp.store import atomic, checkpoints
from stnexp.training import fused, parallel
from stnexp.training.members import Member
from stnexp.training.step import TrainStep

AGREE_EVERY = 50  # steps between the data-parallel ranks' agreement on Ctrl-C and divergence (one tiny all-reduce)


# ---------------------------------------------------------------- processes


class Process:
    """How the processes of a run share its work, as each of them sees it. What a mode does not override
    is what one process alone does: train every group, write every file, decide alone when to stop."""

    world: parallel.World | None = None
    checks_progress = True  # a loss that stops being finite is caught at each progress read

    def __init__(self, world: parallel.World | None = None):
        self.world = world

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0 of several)."""
        return self.world is None or self.world.leader

    @property
    def saves(self) -> bool:
        """Whether this process writes the checkpoints of the groups it trains."""
        return True

    @property
    def share(self) -> int:
        """Into how many processes each batch is split."""
        return 1

    def mine(self, groups: list) -> list:
        """The (variant, seed) groups this process trains."""
        return groups

    def last_checkpoint(self, path) -> dict | None:
        """The checkpoint a model resumes from (None: it starts afresh)."""
        return checkpoints.load(path) if path.exists() else None

    def wrap(self, m: Member, device: torch.device) -> None:
        """Ready a model for this mode's steps."""

    def part(self, batch_size: int) -> slice:
        """This process's part of each batch."""
        return slice(None)

    def stopping(self, run, parts: list, epochs: list, done: int, steps: int) -> bool:
        """Whether to stop after this step (Ctrl-C)."""
        return run.stop.is_set()

    def epoch_sums(self, loss_sum: float, correct: int) -> tuple[float, int]:
        """An epoch's summed loss and correct count over the whole batches."""
        return loss_sum, correct

    def correct(self, model, val, dtype) -> int:
        """Correctly classified validation digits."""
        return scoring.correct(model, val.images, val.labels, dtype)

    def after(self, run, mine: list, history: list[dict], interrupted: bool) -> bool:
        """What follows training, before scoring; returns whether some process was interrupted."""
        return interrupted


class Single(Process):
    """One process: it trains every group, writes every file and decides alone when to stop."""


class Jobs(Process):
    """torchrun, `train.parallel: jobs`: every rank trains its share of the groups on its own device."""

    def mine(self, groups: list) -> list:
        return parallel.deal(groups, self.world)

    def after(self, run, mine: list, history: list[dict], interrupted: bool) -> bool:
        """Every other rank sends rank 0 the checkpoints of its groups and their metrics rows, so the run
        directory need not be shared between machines; rank 0 writes the files it does not already have
        and adds the rows to `history`, in the config's order, and writes metrics.csv."""
        files = {}
        if not self.writes:
            for vname, seed in mine:
                for name in run.cfg.models:
                    for kind in A.CHECKPOINT_KINDS:
                        path = A.CHECKPOINT.path(run.dir, variant=vname, model=name, seed=seed, kind=kind)
                        if path.exists():
                            files[path.relative_to(run.dir).as_posix()] = path.read_bytes()
        got = parallel.to_leader(
            self.world, {"files": files, "history": [] if self.writes else history, "interrupted": interrupted}
        )
        if got is not None:
            for part in got[1:]:
                for name, blob in part["files"].items():
                    path = run.dir / name
                    if not path.is_file() or path.read_bytes() != blob:  # on a shared folder: already there
                        path.parent.mkdir(parents=True, exist_ok=True)
                        atomic.write(path, lambda f, blob=blob: f.write(blob))
                history += part["history"]
            interrupted = any(part["interrupted"] for part in got)
        groups = [(v, s) for v in run.cfg.data.variants for s in run.cfg.seeds]
        history.sort(key=lambda r: groups.index((r["variant"], r["seed"])))
        if self.writes:
            A.write_metrics(run.dir, history)
        return interrupted


class Data(Process):
    """torchrun, `train.parallel: data`: every rank steps every model on its shard of each batch
    (DistributedDataParallel averages the gradients); rank 0 holds the same weights and writes."""

    checks_progress = False  # the ranks decide together (stopping)

    @property
    def saves(self) -> bool:
        return self.world.leader

    @property
    def share(self) -> int:
        return self.world.size

    def last_checkpoint(self, path) -> dict | None:
        # the ranks resume from rank 0's checkpoint, whether or not they see its folder
        return parallel.from_leader(self.world, super().last_checkpoint(path) if self.world.leader else None)

    def wrap(self, m: Member, device: torch.device) -> None:
        from torch.nn.parallel import DistributedDataParallel

        m.ddp = DistributedDataParallel(m.model, device_ids=[device.index] if device.type == "cuda" else None)

    def part(self, batch_size: int) -> slice:
        return parallel.shard(self.world, batch_size)

    def stopping(self, run, parts: list, epochs: list, done: int, steps: int) -> bool:
        """Ctrl-C and divergence only at steps where every rank asks: a model diverged if its loss is
        not finite on some rank, and all stop if Ctrl-C reached some rank."""
        if done % AGREE_EVERY and done != steps:
            return False
        stop = False
        for (group, _), epoch in zip(parts, epochs):  # every group's all-reduce runs on every rank
            active = [m for m in epoch.active if m.diverged is None]
            flags = parallel.any_rank(
                self.world,
                [run.stop.is_set()] + [not math.isfinite(float(group.steps[m.name].sums.loss)) for m in active],
            )
            for m, bad in zip(active, flags[1:]):
                if bad:
                    check_divergence(run, group, m, float("nan"), epoch.number)
            if flags[0]:
                run.stop.set()
            stop = stop or flags[0]
        return stop

    def epoch_sums(self, loss_sum: float, correct: int) -> tuple[float, int]:
        # each rank summed its shards: the mean of the shards' losses is the batch's
        loss_sum, correct = parallel.total(self.world, [loss_sum, correct])
        return loss_sum / self.world.size, int(correct)

    def correct(self, model, val, dtype) -> int:
        """The ranks score a share of the digits each and add the counts."""
        w = self.world
        (n,) = parallel.total(
            w, [scoring.correct(model, val.images[w.rank :: w.size], val.labels[w.rank :: w.size], dtype)]
        )
        return int(n)


def check_divergence(run, group, m: Member, loss: float, epoch: int) -> None:
    """A model whose running loss stops being finite stops (diverged), whatever the mode."""
    if not math.isfinite(loss) and m.diverged is None:
        m.diverged = epoch
        run.log.warning(
            f"{group.variant} s{group.seed} {m.name}: loss is {loss} at epoch {epoch}; stopping this model (diverged)"
        )


def process(world: parallel.World | None) -> Process:
    return {None: Single, "jobs": Jobs, "data": Data}[world.mode if world else None](world)


# ---------------------------------------------------------------- stepping


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


class OneByOne:
    """Each model takes its step after the other, timed alone; each (variant, seed) group trains alone."""

    @staticmethod
    def bundles(groups: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
        """The groups that train at the same time."""
        return [[g] for g in groups]

    def start(self, device: torch.device, active: list[Member]) -> None:
        """Before an epoch of these models."""
        self.timers = {id(m): Timer(device) for m in active}

    def step(self, live: list[tuple[TrainStep, Member, tuple]]) -> None:
        """One optimizer step of each (step, model, its group's batch)."""
        for step, m, (x, y) in live:
            with self.timers[id(m)]:
                step(x, y)
                m.sched.step()

    def seconds(self, m: Member, n_active: int) -> float:
        """A model's compute seconds of the epoch."""
        return self.timers[id(m)].read()


class Fused(OneByOne):
    """train.fuse: all seeds of a variant in lockstep (their lengths are equal), every step of all
    their models taken together through fused.Together under one timer, whose time the models share
    equally."""

    def __init__(self):
        self.key = self.together = None
        self._shared: float | None = None

    @staticmethod
    def bundles(groups: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
        return [[g for g in groups if g[0] == v] for v in dict.fromkeys(v for v, _ in groups)]

    def start(self, device: torch.device, active: list[Member]) -> None:
        self.timer, self._shared = Timer(device), None

    def step(self, live: list[tuple[TrainStep, Member, tuple]]) -> None:
        if not live:
            return
        with self.timer:
            self.joint([step for step, _, _ in live])([x for *_, (x, _) in live], [y for *_, (_, y) in live])
            for _, m, _ in live:
                m.sched.step()

    def joint(self, steps: list[TrainStep]) -> fused.Together:
        """The Together of these steps, made (and on CUDA captured) anew only when the set of models
        changes: one diverged, or a group resumed from an earlier epoch than the others. The old one
        goes first, so its graph's memory is free before the new capture."""
        key = tuple(map(id, steps))
        if self.key != key:
            self.key = self.together = None
            self.key, self.together = key, fused.Together(steps)
        return self.together

    def seconds(self, m: Member, n_active: int) -> float:
        if self._shared is None:
            self._shared = self.timer.read() / n_active
        return self._shared


def stepping(fuse: bool) -> OneByOne:
    """A stepper for one bundle of groups (a new one each: the fused step is made for its models)."""
    return Fused() if fuse else OneByOne()
