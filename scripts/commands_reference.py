"""Print, as Markdown, the flags of every command (from the command itself) or the files of a run directory
and of a sweep folder (from store/artifacts.py's table).

docs/commands.md's flag tables and its run-directory table are this script's output; tests/test_readme.py
keeps them in step.
usage: python scripts/commands_reference.py flags|files
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from typer.main import get_command  # noqa: E402

from stnexp.cli import app  # noqa: E402
from stnexp.store import artifacts as A  # noqa: E402


def _cell(text: str) -> str:
    """Text for a table cell (GFM): one line, its pipes escaped (in code spans too), no tag read as HTML."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "\\<")


def _commands(group, prefix: str = "stnexp"):
    """(`stnexp train`, click command) for every command, in the order --help lists them."""
    for name, command in group.commands.items():
        if getattr(command, "commands", None):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def flags() -> str:
    out = []
    for name, command in _commands(get_command(app)):
        rows = []
        for p in command.params:
            if p.param_type_name == "argument":
                what = f"`{p.metavar or p.name.upper()}`"
            elif p.is_flag:
                what = f"`{p.opts[0]}`"
            else:
                what = f"`{p.opts[0]} {p.metavar or ''}`".replace(" `", "`")
            rows.append(f"| {_cell(what)} | {_cell(p.help or '')} |")
        out += [f"**`{name}`**", "", "| flag | what it does |", "|---|---|", *rows, ""]
    return "\n".join(out)


def _shown(a: A.Artifact) -> str:
    suffixes = [s for s in a.suffixes if s]
    if len(suffixes) > 1:
        return f"`{a.pattern}.{{{','.join(s.lstrip('.') for s in suffixes)}}}`"
    return f"`{a.pattern}{suffixes[0] if suffixes else ''}`"


def files() -> str:
    out = ["| file | what it holds | written by | read by |", "|---|---|---|---|"]
    for kind in A.RUN:
        out.append(f"| {_shown(kind)} | {_cell(kind.what)} | `{kind.writer}` | `{kind.reader or '-'}` |")
    out += ["", "A sweep folder holds its child runs (each a run directory as above) and:", ""]
    out += ["| file | what it holds | written by | read by |", "|---|---|---|---|"]
    for kind in A.SWEEP:
        out.append(f"| {_shown(kind)} | {_cell(kind.what)} | `{kind.writer}` | `{kind.reader or '-'}` |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) == 2 else ""
    if which not in ("flags", "files"):
        sys.exit("usage: python scripts/commands_reference.py flags|files")
    print(flags() if which == "flags" else files(), end="")
