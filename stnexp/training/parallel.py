"""Training across processes started by torchrun (`train.parallel`), with torch.distributed alone.

`jobs`: the (variant, seed) groups are dealt out over the ranks, each training its groups on its own
device; at the end every rank sends the checkpoints it wrote to rank 0 (so the run directory need not
be shared between machines), and rank 0 scores them all and writes the one run directory's tables.
`data`: every rank trains every group on its shard of each global batch (DistributedDataParallel
averages the gradients), so N ranks take the steps one process takes on whole batches; only rank 0
writes. Objects travel over a gloo group, so that with nccl for the gradients the bookkeeping needs no
GPU memory.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stnexp.errors import SharedError, UserError

LAUNCH = "torchrun --nproc_per_node=N -m stnexp train CFG"


@dataclass(frozen=True)
class World:
    """This process's place among the ranks."""

    mode: str  # jobs | data
    rank: int
    size: int
    local_rank: int
    objects: object  # the gloo process group for objects and flags

    @property
    def leader(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or anything else that sets its environment)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _launch_env() -> tuple[int, int, int]:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them, checked: every process says what is wrong
    (a RANK left in the shell has no torchrun and no other process behind it)."""
    env = os.environ

    def number(key: str, default: str | None = None) -> int:
        text = env.get(key, default)
        if text is None or not text.strip().isdigit():
            raise UserError(f"{key}={str(text)[:40]!r}: expected a whole number >= 0, as torchrun sets it")
        return int(text)

    size = number("WORLD_SIZE")
    rank, local = number("RANK"), number("LOCAL_RANK", env["RANK"])
    if not 1 <= size or rank >= size:
        raise UserError(f"RANK={rank} and WORLD_SIZE={size}: expected 0 <= RANK < WORLD_SIZE")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise UserError(
            f"RANK={rank} and WORLD_SIZE={size} are set but {' and '.join(missing)} not: to run as one process unset "
            f"RANK and WORLD_SIZE; to run several, start them with {LAUNCH}"
        )
    return rank, size, local


def rank_of(mode: str) -> tuple[int, int, int] | None:
    """(rank, size, local rank) under torchrun for `train.parallel: mode`; None to run as one process.
    Every rank checks the same things, so each refuses alike and none waits for another."""
    if not launched():
        if mode == "data":
            raise UserError(f"train.parallel: data needs several processes; start them with {LAUNCH}")
        return None
    rank, size, local = _launch_env()
    if mode == "off":
        if size > 1:
            raise SharedError(
                f"train.parallel: off, but torchrun started {size} processes; set train.parallel: jobs or data"
            )
        return None
    return rank, size, local


def device_of(name: str, local_rank: int) -> str:
    """A rank's device: `cuda:LOCAL_RANK` when the run is on CUDA, the configured one otherwise. Every
    rank of a machine checks that the machine has a GPU for each of its processes, so that rank 0's
    machine refuses as a whole (another machine's ranks say it themselves)."""
    if not (name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())):
        return name
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if per_machine > count:
        error = SharedError if int(os.environ.get("GROUP_RANK", 0)) == 0 else UserError
        raise error(
            f"device: {per_machine} processes on this machine need as many GPUs, it has {count} CUDA device(s); start "
            f"at most {count} per machine (--nproc_per_node)"
        )
    return f"cuda:{local_rank}"


def start(mode: str, rank: int, size: int, local_rank: int, device: torch.device) -> World:
    """Join the process group (nccl on CUDA, gloo on CPU) and make the gloo group for objects."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # a rank whose groups finish early waits for the others at the end: hours in a Table 1 run
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(days=7))
    objects = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    return World(mode, rank, size, local_rank, objects)


def settle(world: World) -> None:
    """Wait until every rank is done before any tears its group down: a rank that destroyed its gloo group
    while a peer still wrote the run's tables was seen to abort ("terminate called without an active
    exception"). Only on success: after a failure the launcher ends the other ranks."""
    dist.barrier(group=world.objects)


def stop(world: World | None) -> None:
    if world is not None and dist.is_initialized():
        dist.destroy_process_group()


def from_leader(world: World, value):
    """Rank 0's `value`, on every rank."""
    box = [value if world.leader else None]
    dist.broadcast_object_list(box, src=0, group=world.objects)
    return box[0]


def to_leader(world: World, value) -> list | None:
    """Every rank's `value`, as a list by rank on rank 0 (None on the others)."""
    found = [None] * world.size if world.leader else None
    dist.gather_object(value, found, dst=0, group=world.objects)
    return found


def any_rank(world: World, flags: list[bool]) -> list[bool]:
    """Each flag set on some rank: the ranks of a data-parallel run agree on stopping and divergence."""
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=world.objects)
    return [bool(v) for v in t.tolist()]


def total(world: World, values: list[float]) -> list[float]:
    """Sums over the ranks (validation counts, training sums of the shards)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=world.objects)
    return t.tolist()


def check(mode: str, size: int, n_groups: int, batch_size: int) -> None:
    """What a config must allow for `size` processes, checked by every rank before any joins."""
    if mode == "jobs" and n_groups < size:
        raise SharedError(
            f"train.parallel: jobs with {size} processes but only {n_groups} (variant, seed) group(s); start at most "
            f"{n_groups}"
        )
    if mode == "data" and batch_size % size:
        raise SharedError(
            f"train.batch_size: {batch_size} does not split evenly over {size} processes (train.parallel: data)"
        )


def deal(groups: list, world: World) -> list:
    """The groups of this rank in jobs mode: every size-th from its rank on."""
    return groups[world.rank :: world.size]


def shard(world: World, batch_size: int) -> slice:
    """This rank's part of each global batch in data mode."""
    per = batch_size // world.size
    return slice(world.rank * per, (world.rank + 1) * per)
