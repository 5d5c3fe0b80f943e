"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (torch.save), loaded with
torch.load(weights_only=True): a crafted pickle that would run code is refused before anything runs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from stnexp.errors import UserError

FORMAT = "stnexp-checkpoint-1"


def atomic_write(path: Path, write) -> None:
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


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save(path: Path, payload: dict) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only names the global it refused to import: a pickled object, not plain data
        why = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), None)
        if why:
            raise UserError(f"{path}: refused: holds Python objects that a checkpoint may not contain, nothing was run ({why[:160]})") from None
        raise UserError(f"{path}: truncated, corrupt or not a checkpoint (not a file torch.save wrote)") from None
    except Exception as e:  # zip, pickle and I/O errors of many types all mean the same here
        first = str(e).strip().split(". ")[0].splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: truncated, corrupt or not a checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a stnexp checkpoint")
    return payload
