"""The evaluations of `stnexp eval`: what they score (a run's checkpoints, or one file), where they
write (a run's evals/ or an --out), their names, the claim that keeps two of one name apart, and the
index that lists them."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stnexp.errors import UserError
from stnexp.store import artifacts as A
from stnexp.store.files import is_run, linked, refuse_links, remove_if_empty
from stnexp.store.locks import exclusive


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
            linked(path)
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
            remove_if_empty(empty)


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
    from stnexp.store import atomic

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
        atomic.write_text(index, head + "\n".join(lines) + "\n")
    finally:
        held.close()


def _index(folder: Path) -> Path:
    """The evaluations' index in an evaluations folder (a run's evals/ or an --out of the user's)."""
    return folder / A.EVAL_INDEX.path(".").name
