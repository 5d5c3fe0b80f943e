"""The launch of `stnexp train`: the run directory (new, resumed or overwritten) and its lock, Ctrl-C, and
under torchrun the ranks; then the loop (loop.py) trains into it."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path

import torch

from stnexp import artifacts as A, board, checkpoints, parallel, runs
from stnexp.config import Config
from stnexp.device import autocast_dtype, precision
from stnexp.errors import UserError
from stnexp.loop import Interrupted, train


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
