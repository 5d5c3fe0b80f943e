"""What stnexp may write in a run directory: only regular files, never through a link, and only in a
folder that it made (the marker); the checkpoint beside a checkpoint. What files a run holds is
artifacts.py's table."""

from __future__ import annotations

import os
from pathlib import Path

from stnexp.errors import UserError
from stnexp.store import artifacts as A

OWN_FILES = A.own_files()  # the top-level files a run writes, as artifacts.py lists them
OWN_FOLDERS = A.own_folders()


def is_run(path: Path) -> bool:
    """Whether stnexp made this directory: its marker, or (runs of 0.1, made before the marker) an
    env.json that stnexp wrote."""
    if A.MARKER.path(path).is_file():
        return True
    return {"stnexp", "torch", "command", "started"} <= set(A.read_env(path))


def refuse_links(run: Path) -> None:
    """stnexp writes, removes and embeds only regular files inside a run directory: a symbolic link where
    it keeps its own files (a top-level file it writes, or anywhere in its folders) would take a write or
    a removal out of the run, so it is refused, before anything is changed. Links elsewhere in the run
    directory are the user's, and left alone."""
    owned = [run / name for name in OWN_FILES + OWN_FOLDERS]
    for path in owned:
        if path.is_symlink():
            linked(path)
    for folder in (run / name for name in OWN_FOLDERS):
        if folder.is_dir():
            for root, dirs, files in os.walk(folder):  # does not follow links: they are listed, not entered
                for name in dirs + files:
                    if (Path(root) / name).is_symlink():
                        linked(Path(root) / name)


def refuse_folders(files) -> None:
    """A folder (or anything but a regular file) where stnexp writes one of its files would stop a write
    or a removal halfway: refused before anything is changed."""
    for path in files:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise UserError(
                f"{path}: not a regular file, where stnexp writes one of its own; remove or rename it (nothing "
                "was changed)"
            )


def linked(path: Path) -> None:
    raise UserError(
        f"{path}: a symbolic link (to {os.readlink(path)}) where stnexp keeps its own files; it writes only "
        "regular files inside the run directory: remove the link (nothing was changed)"
    )


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, not there: leave it
        pass


def sibling_checkpoint(path: Path, kind: str) -> Path | None:
    """The `kind` checkpoint of the same model and seed as checkpoint `path` (None for a file not named
    as a run's checkpoints are)."""
    path = Path(path)
    for other in A.CHECKPOINT_KINDS:
        if path.name.endswith(f"-{other}.pt"):
            return path.with_name(path.name[: -len(f"{other}.pt")] + f"{kind}.pt")
    return None
