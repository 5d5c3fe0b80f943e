"""Where the `train` command's request (requests.TrainRequest) goes: one run (launch.py) or a sweep of
child runs (sweeps.py). It sits above both, so that neither imports the other's
caller."""

from __future__ import annotations

from pathlib import Path

from stnexp import config as C
from stnexp.errors import UserError
from stnexp.requests import TrainRequest
from stnexp.store import artifacts as A
from stnexp.store import logs, runs
from stnexp.training import launch, sweeps


def start(req: TrainRequest) -> Path:
    """`stnexp train`: one run, or with --sweep a sweep of child runs; a run directory in place of the
    config continues that run with its own config.yaml (--resume). Returns the run (or sweep) folder;
    raises Interrupted after Ctrl-C (resumable)."""
    sets = list(req.sets) + ([f"device={req.device}"] if req.device else [])
    config_path = Path(req.config)
    if req.shard is not None and not req.sweep:
        raise UserError("--shard splits the children of a --sweep over processes: give --sweep too")
    if req.sweep:
        if config_path.is_dir():
            raise UserError(
                "--sweep takes a config file, not a run directory (resume a sweep with CFG --sweep ... --resume)"
            )
        how = sweeps.Request(req.out, req.resume, req.force, req.command, sweeps.parse_shard(req.shard))
        return sweeps.run(config_path, sets, list(req.sweep), how)
    target = req.out
    if config_path.is_dir():
        # a run directory in place of the config: continue it with its own config.yaml
        if not req.resume:
            raise UserError(
                f"{config_path}: a directory; to continue a run pass --resume, to start one give a config file"
            )
        found = runs.find_run(config_path, logs.logger())
        if req.out is not None and Path(req.out).resolve() != found.resolve():
            raise UserError(f"--out {req.out}: differs from the run directory given ({found}); give one of them")
        config_path, target = A.CONFIG.path(found), found
    return launch.train_into(C.load(config_path, sets), target, req.resume, req.force, req.command)
