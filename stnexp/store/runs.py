"""The run directory's life: making or reusing it safely (<out>/<name>/<YYYYmmdd-HHMMSS>/ or --out DIR), its
lock and state, env.json and train.log, finding runs, and the evaluations' names. What files a run holds
is artifacts.py's table."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stnexp.errors import UserError
from stnexp.store import artifacts as A

OWN_FILES = A.own_files()  # the top-level files a run writes, as artifacts.py lists them
OWN_FOLDERS = A.own_folders()


def refuse_links(run: Path) -> None:
    """stnexp writes, removes and embeds only regular files inside a run directory: a symbolic link where
    it keeps its own files (a top-level file it writes, or anywhere in its folders) would take a write or
    a removal out of the run, so it is refused, before anything is changed. Links elsewhere in the run
    directory are the user's, and left alone."""
    owned = [run / name for name in OWN_FILES + OWN_FOLDERS]
    for path in owned:
        if path.is_symlink():
            _linked(path)
    for folder in (run / name for name in OWN_FOLDERS):
        if folder.is_dir():
            for root, dirs, files in os.walk(folder):  # does not follow links: they are listed, not entered
                for name in dirs + files:
                    if (Path(root) / name).is_symlink():
                        _linked(Path(root) / name)


def _refuse_folders(files) -> None:
    """A folder (or anything but a regular file) where stnexp writes one of its files would stop a write
    or a removal halfway: refused before anything is changed."""
    for path in files:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise UserError(
                f"{path}: not a regular file, where stnexp writes one of its own; remove or rename it (nothing "
                "was changed)"
            )


def _linked(path: Path) -> None:
    raise UserError(
        f"{path}: a symbolic link (to {os.readlink(path)}) where stnexp keeps its own files; it writes only "
        "regular files inside the run directory: remove the link (nothing was changed)"
    )


def sibling_checkpoint(path: Path, kind: str) -> Path | None:
    """The `kind` checkpoint of the same model and seed as checkpoint `path` (None for a file not named
    as a run's checkpoints are)."""
    path = Path(path)
    for other in A.CHECKPOINT_KINDS:
        if path.name.endswith(f"-{other}.pt"):
            return path.with_name(path.name[: -len(f"{other}.pt")] + f"{kind}.pt")
    return None


@contextmanager
def prepare(cfg, out: Path | None, resume: bool, force: bool) -> Iterator[Path]:
    """The run directory for `stnexp train`, held for the body of the `with`: new, resumed (the config
    must match) or overwritten (--force: only a directory that stnexp made, and only the files its run
    wrote). A lock keeps a second process out while this one trains into it."""
    from stnexp import config as C

    if resume and force:
        raise UserError("--resume and --force exclude each other")
    out = Path(out) if out is not None else _default_out(cfg, resume)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    non_empty = out.is_dir() and any(out.iterdir())
    if non_empty:
        refuse_links(out)
        _refuse_folders(written_files(out))  # what --force removes and a run rewrites
    if resume:
        if not A.CONFIG.path(out).is_file():
            raise UserError(f"--resume: {out} holds no run to resume (no {A.CONFIG.pattern})")
        old = C.load(A.CONFIG.path(out))
        if old.digest() != cfg.digest():
            diff = _differences(old.results_view(), cfg.results_view())
            raise UserError(
                f"--resume: the config differs from the run's in {', '.join(diff[:5])}; resume with the same config"
            )
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


def is_run(path: Path) -> bool:
    """Whether stnexp made this directory: its marker, or (runs of 0.1, made before the marker) an
    env.json that stnexp wrote."""
    if A.MARKER.path(path).is_file():
        return True
    return {"stnexp", "torch", "command", "started"} <= set(A.read_env(path))


class _Held:
    """An exclusive flock on the run's lock file; the OS drops it however the process ends."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def exclusive(path: Path, wait: bool) -> _Held | None:
    """An flock on `path` (created if missing): held, or None when another process holds it and `wait`
    is False. Where the platform has no flock, held without guarding."""
    try:
        import fcntl
    except ImportError:
        return _Held(None)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return _Held(fd)


def _lock(run: Path) -> _Held:
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
    _refuse_folders(files)
    for path in files:
        path.unlink(missing_ok=True)
    for parent in (run / name for name in OWN_FOLDERS):
        if parent.is_dir():
            for folder in sorted(parent.glob("**/"), key=lambda p: -len(p.parts)):  # deepest first
                _remove_if_empty(folder)
        _remove_if_empty(parent)
    if (
        remove_dir
        and run.is_dir()  # gone already: a user removed it while it trained
        and run.resolve() != Path.cwd().resolve()
        and [p.name for p in run.iterdir()] == [A.LOCK.pattern]
    ):
        A.LOCK.path(run).unlink()
        _remove_if_empty(run)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, not there: leave it
        pass


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def write_env(run: Path, device, precision: str, resume: bool = False) -> None:
    """env.json: where and with what the run trains. A resume keeps what the first process wrote (when it
    started, on which machine and at which precision: what eval falls back on for checkpoints that do
    not say it) and adds its own under `resumed`."""
    import torch

    import stnexp
    from stnexp.device import describe
    from stnexp.store import checkpoints

    env = {
        "stnexp": stnexp.__version__,
        "torch": torch.__version__,
        "torchvision": _installed("torchvision"),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": describe(device),
        "cpu": describe(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "precision": precision,
        **_git_state(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if resume:
        try:
            first = json.loads(A.ENV.path(run).read_text())
        except (OSError, ValueError, RecursionError):
            first = None
        if isinstance(first, dict):
            resumed = first.get("resumed") if isinstance(first.get("resumed"), list) else []
            env = {**first, "resumed": resumed + [env]}
    checkpoints.atomic_text(A.ENV.path(run), json.dumps(env, indent=2) + "\n")


def _installed(package: str) -> str | None:
    """A package's version from its metadata: importing torchvision only to read it cost seconds of
    every run's start (docs/performance.md)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_state() -> dict:
    """The commit of the checkout stnexp runs from, and whether its tracked files differ from it; both
    None where stnexp is not run from its own git checkout (an installed wheel, or a package that merely
    sits inside someone else's repository: the checkout's top must hold this very package)."""
    package = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or (Path(top).resolve() / package.name) != package:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD") or None, "git_dirty": None if status is None else bool(status)}


def duration(seconds: float) -> str:
    """A time as the log says it: 4m 05s, 1h 02m."""
    seconds = round(seconds)
    return (
        f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m {seconds % 60:02d}s"
    )


class _LogFile(logging.FileHandler):
    """train.log. A line that cannot be written (the disk is full) is dropped without the traceback
    logging prints by default: the write that matters fails with its own one-line error."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


def stdout_gone() -> None:
    """The reader of stdout went away (`stnexp ... | head -1`): send the rest of the process's stdout to
    the null device, so that neither later writes nor the flush at exit fail."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (a test's capture)
        sys.stdout = open(os.devnull, "w")


class _TqdmHandler(logging.Handler):
    """Console output that does not tear the progress bars. A closed stdout does not stop the work: the
    messages go on into train.log."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr if record.levelno >= logging.WARNING else sys.stdout)
        except BrokenPipeError:
            stdout_gone()


def logger(run: Path | None = None, quiet: bool = False) -> logging.Logger:
    """The 'stnexp' logger: messages to the terminal, and with `run` everything (tracebacks too) to train.log."""
    log = logging.getLogger("stnexp")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    if not quiet:
        console = _TqdmHandler()
        console.setLevel(logging.INFO)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    if run is not None:
        f = _LogFile(A.LOG.path(run))
        f.setLevel(logging.DEBUG)
        f.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(f)
    logging.captureWarnings(True)
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.handlers = [h for h in log.handlers if isinstance(h, logging.FileHandler)]
    warnings_log.propagate = False
    return log


# ---------------------------------------------------------------- finding runs


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
    from stnexp.store.checkpoints import atomic_text

    assert state in STATES
    atomic_text(A.MARKER.path(run), json.dumps({"stnexp": _version(), "state": state}) + "\n")


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
    if _held_by_another(run):
        return "running"
    said = state(run)
    if said is None:  # before 0.2 wrote the state: an interrupted run's results.md said so in its title
        try:
            said = "interrupted" if A.PARTIAL in A.RESULTS.path(run).read_text(encoding="utf-8") else "finished"
        except OSError:
            said = "interrupted"
    return "finished" if said == "finished" else "interrupted"


def _held_by_another(run: Path) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(A.LOCK.path(run), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


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


def find_checkpoints(source: Path, which: list[str]) -> list[Path]:
    """Checkpoints of a run directory (best and/or last), or the one checkpoint file given."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UserError(f"{source}: no such run directory or checkpoint")
    return sorted(p for p in A.CHECKPOINT.found(source) if any(p.name.endswith(f"-{kind}.pt") for kind in which))


def eval_dir(source: Path) -> Path:
    """Where `stnexp eval` writes by default: the run's evals/ folder, also for one of its checkpoints
    (<run>/checkpoints/<variant>/<file>); an evals/ folder beside any other checkpoint file."""
    source = Path(source)
    evals = A.EVAL.folder
    if source.is_dir():
        return source / evals
    if source.parent.parent.name == A.CHECKPOINT.folder:
        return source.parent.parent.parent / evals
    return source.parent / evals


def eval_name(source: Path, which: str, tested_on: list[str], canvas) -> str:
    """An evaluation's default name, from what it scored: `best-on-rts+translated`,
    `st-cnn-s0-best-on-translated-canvas-model`, `best-on-own` (each model's own variant)."""
    import hashlib

    what = Path(source).stem if Path(source).is_file() else which
    name = f"{what}-on-{'+'.join(tested_on) or 'own'}" + (f"-canvas-{canvas}" if canvas is not None else "")
    name = re.sub(r"^\.|[^A-Za-z0-9_.+=-]", "_", name)  # no hidden file (a checkpoint named .x.pt)
    return name if len(name) <= 120 else name[:100] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


# the names an evaluation can have (--name's rule, or a default name's characters): a file name in its
# folder, never a path; the index is read back through it, so a line naming ../../x is not one of them
EVAL_NAME = re.compile(r"^[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]{0,119}$")


# names an evaluation may not take: the files of a run directory and of the evaluations' folder
RESERVED_EVAL_NAMES = {Path(a.pattern).stem for a in A.RUN if not a.keys} | {"report", "sweep"}


@contextmanager
def claimed_eval(folder: Path, name: str, force: bool) -> Iterator[Path]:
    """The stem (folder/name) an evaluation writes to, held against a second `stnexp eval` of the same
    name for the body of the `with`; an existing one only with --force."""
    if name.lower() in RESERVED_EVAL_NAMES:
        raise UserError(f"--name {name}: the name of a file that a run or the evaluations' index owns; choose another")
    _outside_runs_files(folder)

    def taken():
        found = [folder / f"{name}{suffix}" for suffix in A.TABLE_SUFFIXES if (folder / f"{name}{suffix}").exists()]
        if found and not force:
            raise UserError(
                f"evaluation {name!r} exists ({found[0]}); pass --force to replace it or --name to keep both"
            )

    taken()  # before anything is made
    if folder.name == A.EVAL.folder and is_run(
        folder.parent
    ):  # a run's own evals/ (an --out of the user's may be a link)
        refuse_links(folder.parent)
    for path in (*(folder / f"{name}{suffix}" for suffix in A.TABLE_SUFFIXES + A.FIGURE_SUFFIXES), _index(folder)):
        if path.is_symlink():
            _linked(path)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if they stay empty
    try:
        folder.mkdir(parents=True, exist_ok=True)
        held = exclusive(folder / f".{name}.eval-lock", wait=False)
    except OSError as e:
        raise UserError(f"--out {folder}: not writable ({e.strerror or e})") from None
    if held is None:
        raise UserError(
            f"evaluation {name!r} is being written by another stnexp eval into {folder}; wait for it or pick another "
            "--name"
        )
    try:
        taken()  # one that finished while this one waited to start
        yield folder / name
    finally:
        (folder / f".{name}.eval-lock").unlink(
            missing_ok=True
        )  # still held: a process that opens it now finds the table
        held.close()
        for empty in made:  # a failed evaluation leaves no empty evals/ behind
            _remove_if_empty(empty)


def _outside_runs_files(folder: Path) -> None:
    """An evaluation writes into a run only under its evals/ folder: anywhere else in it (curves/, stn/,
    the run's top) its files could replace the run's own, which `report` would then show as the run's."""
    here = folder.resolve()
    for run in (here, *here.parents):
        if run.is_dir() and is_run(run):
            evals = run / A.EVAL.folder
            if here != evals and evals not in here.parents:
                raise UserError(
                    f"--out {folder}: inside the run {run}, whose own files an evaluation must not replace; write "
                    f"into its {A.EVAL.folder}/ (the default) or outside it"
                )
            return


def eval_names(folder: Path) -> list[str]:
    """The evaluations folder/index.md lists."""
    try:
        text = _index(folder).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    names = [line[3:].split("`", 1)[0] for line in text.splitlines() if line.startswith("- `") and "`:" in line]
    return [name for name in names if EVAL_NAME.match(name)]


def index_eval(folder: Path, name: str, line: str) -> None:
    """Add (or replace) the evaluation's line in folder/index.md: one `- `name`: ...` line each. Evals
    that end together take turns (a lock beside the index), so none loses another's line."""
    from stnexp.store.checkpoints import atomic_text

    index = _index(folder)
    head = (
        "# Evaluations\n\n"
        "Each line: a name (its .md, .csv and .json beside this file), when, what was scored, on what.\n\n"
    )
    held = exclusive(folder / A.INDEX_LOCK.path(".").name, wait=True)
    try:
        lines = [
            x
            for x in (index.read_text(encoding="utf-8").splitlines() if index.is_file() else [])
            if x.startswith("- `")
        ]
        lines = [x for x in lines if not x.startswith(f"- `{name}`:")] + [f"- `{name}`: {line}"]
        atomic_text(index, head + "\n".join(lines) + "\n")
    finally:
        held.close()


def _index(folder: Path) -> Path:
    """The evaluations' index in an evaluations folder (a run's evals/ or an --out of the user's)."""
    return folder / A.EVAL_INDEX.path(".").name
