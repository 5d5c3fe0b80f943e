"""The run directory's life: making or reusing it safely (<out>/<name>/<YYYYmmdd-HHMMSS>/ or --out DIR),
its lock and state, the files --force removes, and finding runs."""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stnexp.errors import UserError
from stnexp.store import artifacts as A
from stnexp.store.evals import eval_names
from stnexp.store.files import OWN_FILES, OWN_FOLDERS, is_run, refuse_folders, refuse_links, remove_if_empty
from stnexp.store.locks import Held, exclusive, held_by_another


@contextmanager
def prepare(cfg, out: Path | None, resume: bool, force: bool) -> Iterator[Path]:
    """The run directory for `stnexp train`, held for the body of the `with`: new, resumed (the config
    must match) or overwritten (--force: only a directory that stnexp made, and only the files its run
    wrote). A lock keeps a second process out while this one trains into it."""
    if resume and force:
        raise UserError("--resume and --force exclude each other")
    out = Path(out) if out is not None else _default_out(cfg, resume)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    non_empty = out.is_dir() and any(out.iterdir())
    if non_empty:
        refuse_links(out)
        refuse_folders(written_files(out))  # what --force removes and a run rewrites
    if resume:
        _same_config(cfg, out)
    elif non_empty:
        if not force:
            raise UserError(f"--out {out}: not empty; pass --resume to continue that run or --force to overwrite it")
        if not is_run(out):
            raise UserError(
                f"--out {out}: not a stnexp run directory (no {A.MARKER.pattern}); --force overwrites only runs, pick "
                "an empty or new folder"
            )
    made = [p for p in (out, *out.parents) if not p.exists()]  # what mkdir will make, removed again on failure
    try:
        out.mkdir(parents=True, exist_ok=True)
        held = _lock(out)
    except OSError as e:
        _remove_made(made)
        raise UserError(f"--out {out}: not writable ({e.strerror or e})") from None
    try:
        if non_empty and force:
            clear(out, remove_dir=False)
        try:
            set_state(out, "training")
        except UserError:
            held.close()
            _remove_made(made)
            raise
        yield out
    finally:
        held.close()


def _same_config(cfg, out: Path) -> None:
    """--resume: `out` holds a run of this very config (the keys that change results)."""
    from stnexp import config as C

    if not A.CONFIG.path(out).is_file():
        raise UserError(f"--resume: {out} holds no run to resume (no {A.CONFIG.pattern})")
    old = C.load(A.CONFIG.path(out))
    if old.digest() != cfg.digest():
        diff = _differences(old.results_view(), cfg.results_view())
        raise UserError(
            f"--resume: the config differs from the run's in {', '.join(diff[:5])}; resume with the same config"
        )


def _remove_made(made: list[Path]) -> None:
    """Remove the folders a failed start made (deepest first), and the lock file it left in them."""
    for folder in made:
        try:
            for leftover in (A.LOCK.path(folder), A.MARKER.path(folder)):
                leftover.unlink(missing_ok=True)
            folder.rmdir()
        except OSError:  # never made (its parent is a file, say), or not empty
            pass


def _default_out(cfg, resume: bool) -> Path:
    """<out>/<name>/<timestamp>: a new one, or for --resume the newest run there."""
    base = Path(cfg.out) / cfg.name
    if resume:
        found = sorted(p for p in base.glob("*") if A.CONFIG.path(p).is_file()) if base.is_dir() else []
        if not found:
            raise UserError(f"--resume: no run of {cfg.name!r} under {base}; name one with --out")
        return found[-1]
    out = base / time.strftime("%Y%m%d-%H%M%S")
    while out.exists():
        time.sleep(1)
        out = base / time.strftime("%Y%m%d-%H%M%S")
    return out


def _lock(run: Path) -> Held:
    held = exclusive(A.LOCK.path(run), wait=False)
    if held is None:
        holder = A.LOCK.path(run).read_text(errors="replace").strip()[:200] or "another process"
        raise UserError(f"--out {run}: a run is training into it ({holder}); wait for it to end or pick another --out")
    if held.fd is not None:
        os.ftruncate(held.fd, 0)
        os.write(
            held.fd, f"pid {os.getpid()} on {platform.node()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        )
    return held


def _version() -> str:
    import stnexp

    return stnexp.__version__


def written_files(run: Path) -> list[Path]:
    """The files a run wrote into its directory, as artifacts.py lists them: its own top-level files and,
    as its config names them, its checkpoints (with the temporary files of an interrupted write), figures
    and event files, and the evaluations its index lists (not any file there that looks like one)."""
    from stnexp import config as C

    files = [run / name for name in OWN_FILES]
    evals = A.EVAL_INDEX.path(run).parent
    if evals.is_dir():
        files += [A.EVAL_INDEX.path(run), A.INDEX_LOCK.path(run)]
        files += [p for name in eval_names(evals) for a in (A.EVAL, A.EVAL_SWEEP) for p in a.paths(run, name=name)]
    try:
        cfg = C.load(A.CONFIG.path(run))
    except UserError:
        return files
    files += A.TB.found(run)
    for a in A.RUN:
        if a.keys and a not in (A.EVAL, A.EVAL_SWEEP, A.TB):
            files += A.expand(a, run, cfg)
    files += [t for path in A.expand(A.CHECKPOINT, run, cfg) for t in path.parent.glob(f".{path.name}.tmp*")]
    return files


def clear(run: Path, remove_dir: bool) -> None:
    """Remove the files a run wrote and the folders this leaves empty. The lock file stays (its holder
    is this process) unless the run's folder goes too (`remove_dir`, never the working directory).
    Nothing else is touched, and nothing at all when one of them cannot be removed (checked first)."""
    files = [path for path in written_files(run) if path != A.LOCK.path(run)]
    refuse_folders(files)
    for path in files:
        path.unlink(missing_ok=True)
    for parent in (run / name for name in OWN_FOLDERS):
        if parent.is_dir():
            for folder in sorted(parent.glob("**/"), key=lambda p: -len(p.parts)):  # deepest first
                remove_if_empty(folder)
        remove_if_empty(parent)
    if (
        remove_dir
        and run.is_dir()  # gone already: a user removed it while it trained
        and run.resolve() != Path.cwd().resolve()
        and [p.name for p in run.iterdir()] == [A.LOCK.pattern]
    ):
        A.LOCK.path(run).unlink()
        remove_if_empty(run)


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def newest_run(folder: Path) -> Path | None:
    """The newest run directly under `folder` (a config's folder `<out>/<name>/`: its timestamped runs
    sort by name), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if p.is_dir() and A.CONFIG.path(p).is_file())
    return found[-1] if found else None


def find_run(path: Path, log=None) -> Path:
    """A run directory as given, or for a config's run folder (`runs/quickstart`) its newest run, said on
    the log. Anything else is returned as it is, for the caller to refuse."""
    path = Path(path)
    if not path.is_dir() or A.CONFIG.path(path).is_file() or is_run(path):
        return path
    newest = newest_run(path)
    if newest is None:
        return path
    if log is not None:
        log.info(f"{path}: using its newest run, {newest}")
    return newest


STATES = ("training", "finished", "interrupted")  # what the marker says of a run (set_state)


def set_state(run: Path, state: str) -> None:
    """The marker: written first into every run directory with the state `training`, and at the end
    `finished` or `interrupted`."""
    from stnexp.store import atomic

    assert state in STATES
    atomic.write_text(A.MARKER.path(run), json.dumps({"stnexp": _version(), "state": state}) + "\n")


def state(run: Path) -> str | None:
    """The state the marker holds (None for runs made before 0.2 wrote it there)."""
    try:
        said = json.loads(A.MARKER.path(run).read_text()).get("state")
    except (OSError, ValueError, AttributeError, RecursionError):  # RecursionError: nested thousands deep
        return None
    return said if said in STATES else None


def status(run: Path) -> str:
    """running (a process holds the run's lock), finished (every model scored) or interrupted (stopped
    by Ctrl-C, or a process that ended while the marker still says training)."""
    if held_by_another(A.LOCK.path(run)):
        return "running"
    said = state(run)
    if said is None:  # before 0.2 wrote the state: an interrupted run's results.md said so in its title
        try:
            said = "interrupted" if A.PARTIAL in A.RESULTS.path(run).read_text(encoding="utf-8") else "finished"
        except OSError:
            said = "interrupted"
    return "finished" if said == "finished" else "interrupted"


def all_runs(out: Path) -> list[Path]:
    """Every run under `out`: `<out>/<name>/<timestamp>/` as train makes them, `<out>/<run>/` (an
    explicit --out) and `out` itself when it is one; a sweep's children too."""
    out = Path(out)
    found = []
    for depth in ("", "*", "*/*", "*/*/*"):
        for p in sorted(out.glob(depth)) if depth else [out]:
            if p.is_dir() and A.CONFIG.path(p).is_file() and is_run(p):
                found.append(p)
    return found
