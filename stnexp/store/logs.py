"""The 'stnexp' logger: messages on the terminal that do not tear the progress bars, and everything
(tracebacks and warnings too) in train.log; what a closed stdout does; how the log says a time."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from stnexp.store import artifacts as A


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
