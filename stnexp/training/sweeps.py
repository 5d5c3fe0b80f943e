"""`stnexp train CFG --sweep KEY=V1,V2 ...`: one child run per combination of the swept values (the cross
product over the --sweep options), each a normal run directory inside one sweep folder, and one table of
them all (sweep.md, .csv, .json).

    <out>/<name>/<timestamp>/          (or --out DIR)
        .stnexp-sweep                  the plan: config file, --set, --sweep, the children
        sweep.md  sweep.csv  sweep.json
        01-lr=0.01/  02-lr=0.05/ ...   child runs: config.yaml, checkpoints/, results.json, ...
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from stnexp import config as C
from stnexp.errors import UserError
from stnexp.results import sweep_table
from stnexp.store import artifacts as A
from stnexp.store import atomic, files, locks, logs, runs, sweep_plan
from stnexp.training import launch

MAX_CHILDREN = 1000  # runs in one sweep: each is a run directory and a config validated before any trains


def parse(item: str) -> tuple[str, list[str]]:
    """`train.lr=0.01,0.05` -> ('train.lr', ['0.01', '0.05']): values split at top-level commas (a value
    may be a YAML list or mapping), each checked to parse as YAML."""
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key or not text.strip():
        raise UserError(f"--sweep {C.cut(item)}: expected KEY=V1,V2,...")
    values, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if depth < 0:
            break
        if ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        raise UserError(f"--sweep {C.cut(item)}: unbalanced brackets")
    if any(not v for v in values):
        raise UserError(f"--sweep {C.cut(item)}: an empty value")
    for v in values:
        C.parse_set(f"{key}={v}")  # a value that is not YAML is refused here, naming the option
    if len(set(values)) != len(values):
        raise UserError(f"--sweep {C.cut(item)}: a value given twice")
    return key, values


def combinations(sweeps: list[str]) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """The swept keys and the children: (folder name, {key: value}) per combination, in order."""
    parsed = [parse(s) for s in sweeps]
    keys = [k for k, _ in parsed]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--sweep {twice[0]}: swept twice; give its values in one --sweep")
    count = math.prod(len(values) for _, values in parsed)
    if count > MAX_CHILDREN:
        raise UserError(
            f"--sweep: {' x '.join(str(len(v)) for _, v in parsed)} = {count:,} runs, more than {MAX_CHILDREN:,} in "
            "one sweep"
        )
    children = []
    for i, combo in enumerate(itertools.product(*[values for _, values in parsed]), 1):
        values = dict(zip(keys, combo))
        label = "-".join(f"{k.split('.')[-1]}={v}" for k, v in values.items())
        children.append((f"{i:02d}-" + re.sub(r"[^A-Za-z0-9_.=+-]", "_", label)[:80], values))
    return keys, children


class Request(NamedTuple):
    """How to run a sweep: where (--out), whether to continue or overwrite it, the command line, and
    which share of its children this process trains (--shard: (I, N), or None for all)."""

    out: Path | None
    resume: bool
    force: bool
    command: str
    shard: tuple[int, int] | None = None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`--shard I/N` -> (I, N), 0 <= I < N."""
    if text is None:
        return None
    m = re.fullmatch(r"([0-9]{1,6})/([0-9]{1,6})", text)  # ASCII digits: \d takes any script's
    if not m or not int(m[1]) < int(m[2]):
        raise UserError(f"--shard {C.cut(text)}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def run(cfg_path: Path, sets: list[str], sweeps: list[str], how: Request) -> Path:
    """Train every child of the sweep (skipping, with --resume or --shard, those already finished; with
    --shard only this shard's), then write the sweep table (also after Ctrl-C or an error: what finished
    so far, whichever shard finished it). Every child's config is validated before anything is trained."""
    if how.resume and how.force:
        raise UserError("--resume and --force exclude each other")
    if how.shard and how.force:
        raise UserError("--shard and --force exclude each other: one shard would clear what the others trained")
    if how.shard is not None and how.out is None:
        raise UserError("--shard: name the sweep folder that every shard shares with --out")
    keys, children = combinations(sweeps)
    cfgs = {name: C.load(cfg_path, sets + [f"{k}={v}" for k, v in values.items()]) for name, values in children}
    base = C.load(cfg_path, sets)
    _check(cfgs)
    spec = _spec(cfg_path, sets, sweeps, children, base, how)
    with _turn(Path(how.out) if how.shard is not None else None):
        # a shard joins the sweep another shard made, as --resume would (the same plan, or exit 2); shards
        # that start together take turns here, so one makes the plan and the others find it
        joining = how.resume or (how.shard is not None and sweep_plan.read(Path(how.out)) is not None)
        parent = _parent(base, how.out, joining, how.force, spec)
    mine = children if how.shard is None else children[how.shard[0] :: how.shard[1]]
    log = logs.logger()
    log.info(
        f"sweep of {len(children)} runs in {parent}"
        + (f", this shard ({how.shard[0]}/{how.shard[1]}) trains {len(mine)}" if how.shard else "")
        + (
            f": {how.shard[1]} shards for {len(children)} children leave this one none"
            if how.shard and not mine
            else ""
        )
    )
    try:
        for name, values in mine:
            child = parent / name
            started = A.CONFIG.path(child).is_file() and (joining or how.shard is not None)
            if started and runs.status(child) == "finished":
                log.info(f"{name}: finished already")
                continue
            log.info(f"{name}: {', '.join(f'{k}={v}' for k, v in values.items())}")
            launch.train_into(cfgs[name], child, started, False, how.command)
    finally:
        logs.logger()
        with _turn(parent if how.shard is not None else None):  # the last shard to write it sees every child
            sweep_table.write(parent, keys, children)
        log.info(f"sweep table: {A.SWEEP_TABLE.path(parent)}")
    return parent


def _check(cfgs: dict[str, C.Config]) -> None:
    """What train checks before it makes a directory (the device, TensorBoard), for every child first."""
    from stnexp.device import resolve
    from stnexp.training import board

    for cfg in cfgs.values():
        resolve(cfg.device)
        board.check(cfg.train.tensorboard)


def _spec(cfg_path: Path, sets: list[str], sweeps: list[str], children, base: C.Config, how: Request) -> dict:
    """The plan the sweep folder keeps: what was asked, the children's names, the config's digest, and
    for shards their N."""
    spec = {
        "config": str(Path(cfg_path).resolve()),
        "set": sets,
        "sweep": sweeps,
        "children": [name for name, _ in children],
        "digest": base.digest(),
    }
    if how.shard is not None:
        spec["shards"] = how.shard[1]  # a shard of another N would train children that one of these trains
    return spec


@contextmanager
def _turn(folder: Path | None) -> Iterator[None]:
    """Hold the sweep folder's lock for the body (making the folder): shards of one sweep, on one machine
    or on several sharing a filesystem with working flock, take turns. None: no lock (one process)."""
    if folder is None:
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: exists and is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        held = locks.exclusive(A.SWEEP_LOCK.path(folder), wait=True)
    except OSError as e:
        raise UserError(f"--out {folder}: not writable ({e.strerror or e})") from None
    try:
        yield
    finally:
        held.close()


def _parent(base: C.Config, out: Path | None, resume: bool, force: bool, spec: dict) -> Path:
    """The sweep folder: --out, the newest sweep of this config (--resume), or a new timestamped one."""
    root = Path(base.out) / base.name
    if out is None and resume:
        found = sorted(p for p in root.glob("*") if A.SWEEP_PLAN.path(p).is_file()) if root.is_dir() else []
        if not found:
            raise UserError(f"--resume: no sweep of {base.name!r} under {root}; name one with --out")
        out = found[-1]
    if out is None:
        out = root / time.strftime("%Y%m%d-%H%M%S")
        while out.exists():
            time.sleep(1)
            out = root / time.strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    old = sweep_plan.read(out)
    if resume:
        _same_sweep(out, old, spec)
    elif out.is_dir() and any(p.name != A.SWEEP_LOCK.path(out).name for p in out.iterdir()):
        _overwrite(out, old, force)
    if out.is_dir():  # no child may be a link to a run elsewhere, which training it would clear
        sweep_plan.children(out, spec)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(A.SWEEP_PLAN.path(out), json.dumps(spec, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"--out {out}: not writable ({e.strerror or e})") from None
    return out


def _same_sweep(out: Path, old: dict | None, spec: dict) -> None:
    """--resume (or a shard joining): the plan in `out` must be this sweep's, split the same way."""
    if old is None:
        raise UserError(f"--resume: {out} holds no sweep to resume (no {A.SWEEP_PLAN.pattern})")
    if {k: old.get(k) for k in ("set", "sweep")} != {k: spec[k] for k in ("set", "sweep")}:
        raise UserError(
            f"--resume: the sweep differs from the one in {out} (--sweep {' '.join(old.get('sweep', []))}); "
            "resume with the same options"
        )
    if old.get("shards") and spec.get("shards") and old["shards"] != spec["shards"]:
        raise UserError(
            f"--shard: the sweep in {out} is split into {old['shards']} shards, not {spec['shards']}; every "
            "shard of a sweep takes the same N"
        )
    if old.get("shards") and not spec.get("shards"):
        spec["shards"] = old["shards"]  # a plain --resume keeps the plan's split
    # plans before 0.2 have no digest: a started child still refuses another config when resumed
    if old.get("digest", spec["digest"]) != spec["digest"]:
        raise UserError(
            f"--resume: the config differs from the one the sweep in {out} was made with ({old.get('config')}); "
            "resume with that config"
        )


def _overwrite(out: Path, old: dict | None, force: bool) -> None:
    """A sweep into a folder that holds something: only with --force, only a sweep, and only the files of
    the runs and tables that its plan names are removed."""
    if not force:
        raise UserError(f"--out {out}: not empty; pass --resume to continue that sweep or --force to overwrite it")
    if old is None:
        raise UserError(
            f"--out {out}: not a sweep folder (no {A.SWEEP_PLAN.pattern}); --force overwrites only sweeps, pick "
            "an empty or new folder"
        )
    for child in sweep_plan.children(out, old):
        if child.is_dir() and files.is_run(child):
            runs.clear(child, remove_dir=True)
    for path in A.SWEEP_TABLE.paths(out):
        path.unlink(missing_ok=True)
