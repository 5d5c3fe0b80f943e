"""A sweep's plan, `.stnexp-sweep` in its folder: the config file, --set, --sweep, the children's names
and (for shards) N. Read back as input: a plan that names a child outside the sweep folder is refused."""

from __future__ import annotations

import json
from pathlib import Path

from stnexp import config as C
from stnexp.errors import UserError
from stnexp.store import artifacts as A


def read(folder: Path) -> dict | None:
    """The plan in `folder`, or None where there is none (or none that parses as a JSON object)."""
    try:
        spec = json.loads(A.SWEEP_PLAN.path(folder).read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        return None
    return spec if isinstance(spec, dict) else None


def children(folder: Path, spec: dict) -> list[Path]:
    """The child run folders a plan names: each one folder directly inside the sweep folder (a plan that
    names `../elsewhere` or `a/b` is refused, so that --force never clears a run outside it)."""
    names = spec.get("children", [])
    if not isinstance(names, list):
        raise UserError(f"{A.SWEEP_PLAN.path(folder)}: 'children' is not a list of folder names")
    out = []
    for name in names:
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise UserError(
                f"{A.SWEEP_PLAN.path(folder)}: names {C.cut(str(name))!r} as a child, which is not a folder inside "
                "the sweep"
            )
        if (folder / name).is_symlink():
            raise UserError(
                f"{folder / name}: a symbolic link where the sweep keeps a child run; remove it (nothing was changed)"
            )
        out.append(folder / name)
    return out
