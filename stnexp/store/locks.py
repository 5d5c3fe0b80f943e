"""flock-based locks: a run's while it trains, an evaluation's while it writes, an index's and a sweep
plan's while a process changes them. The OS drops a lock however its process ends."""

from __future__ import annotations

import os
from pathlib import Path


class Held:
    """An exclusive flock on the run's lock file; the OS drops it however the process ends."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def exclusive(path: Path, wait: bool) -> Held | None:
    """An flock on `path` (created if missing): held, or None when another process holds it and `wait`
    is False. Where the platform has no flock, held without guarding."""
    try:
        import fcntl
    except ImportError:
        return Held(None)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return Held(fd)


def held_by_another(path: Path) -> bool:
    """Whether another process holds the lock on `path` (False where there is no such file, or no flock)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
