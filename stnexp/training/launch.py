"""The launch of `stnexp train`: the run directory (new, resumed or overwritten) and its lock, Ctrl-C, and
under torchrun the ranks; then the loop (loop.py) trains into it."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import NamedTuple

import torch

from stnexp.config import Config
from stnexp.device import autocast_dtype, precision
from stnexp.errors import SharedError, UserError
from stnexp.store import artifacts as A
from stnexp.store import atomic, env, logs, runs
from stnexp.training import board, loop, parallel
from stnexp.training.loop import Interrupted


class Target(NamedTuple):
    """Where one config trains: --out (None: a new timestamped folder), and whether to continue or
    overwrite what is there."""

    out: Path | None
    resume: bool
    force: bool
    command: str


def train_into(cfg: Config, out: Path | None, resume: bool, force: bool, command: str) -> Path:
    """`stnexp train` for one config: make (or resume, or overwrite) the run directory, train into it with
    Ctrl-C handled, and leave nothing behind when bad input stops it before the first checkpoint.
    Under torchrun (`train.parallel`) every rank joins; rank 0 makes the directory. Raises Interrupted
    after Ctrl-C (the run is resumable)."""
    from stnexp.device import resolve

    spot = parallel.rank_of(cfg.train.parallel)
    torch_device = resolve(cfg.device if spot is None else parallel.device_of(cfg.device, spot[2]))
    board.check(cfg.train.tensorboard)
    target = Target(out, resume, force, command)
    if spot is None:
        return _train_into(cfg, target, torch_device, None)
    rank, size, local = spot
    parallel.check(cfg.train.parallel, size, len(cfg.data.variants) * len(cfg.seeds), cfg.train.batch_size)
    world = parallel.start(cfg.train.parallel, rank, size, local, torch_device)
    try:
        done = _train_into(cfg, target, torch_device, world) if world.leader else _follow(cfg, torch_device, world)
        parallel.settle(world)
        return done
    finally:
        parallel.stop(world)


def _interrupted(run: Path, nothing: bool) -> str:
    """What the log says of a run stopped by Ctrl-C or a signal, and how to go on."""
    if nothing:
        return (
            f"interrupted before the first epoch ended: no checkpoint, nothing to resume; {run} holds the "
            f"config, train.log and env.json (--resume --out {run} starts training from the beginning)"
        )
    return f"interrupted: checkpoints of the last completed epoch are in {run}; continue with --resume --out {run}"


def _train_into(cfg: Config, target: Target, device: torch.device, world: parallel.World | None) -> Path:
    from stnexp import config as C

    out, resume, force, command = target

    with contextlib.ExitStack() as stack:
        try:
            run = stack.enter_context(runs.prepare(cfg, out, resume, force))
        except UserError as e:
            if world is not None:  # the other ranks are waiting for the directory: tell them why there is none
                parallel.from_leader(world, {"error": str(e)})
            raise
        if world is not None:
            parallel.from_leader(world, {"run": str(run)})
        log = logs.logger(run)
        log.debug("command: " + command)
        stop = threading.Event()
        previous = install_stops(stop, log)
        try:
            if not resume:
                atomic.write_text(A.CONFIG.path(run), C.dump(cfg))
            elif not A.CHECKPOINT.found(run):
                log.info(f"{run}: no checkpoint yet (no epoch had completed): training starts from the beginning")
            env.write_env(run, device, precision(autocast_dtype(cfg.train.amp, device)), resume)
            log.info(
                f"run directory: {run}" + (f" ({world.size} processes, train.parallel: {world.mode})" if world else "")
            )
            loop.train(cfg, run, device, log, stop, world)
        except UserError:
            # bad input found before anything was trained (missing data files, say): leave nothing behind
            if not resume and not A.CHECKPOINT.found(run):
                logs.logger(None)
                runs.clear(run, remove_dir=True)
            raise
        except Interrupted as e:
            e.signum = getattr(stop, "signum", signal.SIGINT)
            log.warning(_interrupted(run, e.nothing))
            raise
        except KeyboardInterrupt:
            if getattr(stop, "finishing", False):  # the second Ctrl-C of install_stops, after training
                log.warning(
                    f"stopped during the final evaluation: the checkpoints are in {run}; --resume --out {run} "
                    "scores them and writes the outputs"
                )
            raise
        finally:
            restore_stops(previous)
    return run


def _follow(cfg: Config, device: torch.device, world: parallel.World) -> Path:
    """A rank other than 0: train into the directory rank 0 made (its own copy of the path on another
    machine), logging as `[rank N]` (jobs) or only warnings (data: rank 0 reports for all)."""
    said = parallel.from_leader(world, None)
    if "error" in said:
        raise SharedError(said["error"])  # rank 0 says it
    run = Path(said["run"])
    log = logs.logger(None, quiet=world.mode == "data")
    for h in log.handlers:
        h.setFormatter(logging.Formatter(f"[rank {world.rank}] %(message)s"))
    stop = threading.Event()
    previous = install_stops(stop, log)
    try:
        loop.train(cfg, run, device, log, stop, world)
    finally:
        restore_stops(previous)
    return run


STOPS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and what SLURM, docker and systemd send before a kill


def install_stops(stop: threading.Event, log: logging.Logger) -> dict:
    """Ctrl-C and SIGTERM alike. The first: stop at the next step boundary (resumable; `stop.signum` says
    which signal, for the exit code 128 + signum). Once training is over and the final evaluation runs
    (loop.train sets `stop.finishing`), it would change nothing, so it says so rather than look like a
    hang. A second one interrupts at once; the checkpoints are on disk by then. Returns the handlers it
    replaced, for restore_stops. Only the main thread can take signals: called from another (a thread
    pool, a web app) it installs nothing, and the run trains to its end."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        stop.signum = signum
        stop.set()
        for s in STOPS:
            signal.signal(s, signal.default_int_handler)
        said = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if getattr(stop, "finishing", False):
            log.warning(f"{said}: finishing the final evaluation (the checkpoints are saved); Ctrl-C again to stop")
        else:
            log.warning(f"{said}: stopping after this step; Ctrl-C again to stop at once")

    return {s: signal.signal(s, handler) for s in STOPS}


def restore_stops(previous: dict) -> None:
    for s, h in previous.items():
        signal.signal(s, h)
