"""How the config's errors repeat what they were given: values and exceptions cut short, on one line."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

SHOWN = 200  # at most this many characters of a bad value are repeated in an error


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 8
_REPR.maxstring = _REPR.maxother = SHOWN


def shown(value: Any) -> str:
    """A value as an error message repeats it: a bounded repr (a huge or deeply nested value is never
    walked whole), cut to SHOWN characters."""
    return cut(_REPR.repr(value))


def first_line(e: Exception) -> str:
    """An exception's message on one line (YAML's and the network's span several): the first line, and
    the last where it says why."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return cut(lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}")


def cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
