"""Atomic writes: every table, JSON file, marker and checkpoint goes through here, so that a kill at any
moment or a full disk leaves the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from stnexp.errors import UserError


def write(path: Path, write) -> None:
    """Write through `write(file)` to a temporary file beside `path`, fsync, then rename over it: a kill at
    any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise UserError(
                f"{path}: no space left on device (the file is as it was before: nothing half-written)"
            ) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_text(path: Path, text: str) -> None:
    write(path, lambda f: f.write(text.encode()))
