"""Checkpoint files: written atomically, read without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (torch.save), loaded with
torch.load(weights_only=True): a crafted pickle that would run code is refused before anything runs.
"""

from __future__ import annotations

import os
import pickle
import zipfile
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise UserError(f"{path}: refused: not a plain-data checkpoint ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{path}: truncated or corrupt checkpoint ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a stnexp checkpoint")
    return payload
