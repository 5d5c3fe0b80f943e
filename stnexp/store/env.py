"""env.json: where and with what a run trains (versions, device, precision, the commit, the command)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from stnexp.store import artifacts as A
from stnexp.store import atomic


def write_env(run: Path, device, precision: str, resume: bool = False) -> None:
    """env.json: where and with what the run trains. A resume keeps what the first process wrote (when it
    started, on which machine and at which precision: what eval falls back on for checkpoints that do
    not say it) and adds its own under `resumed`."""
    import torch

    import stnexp
    from stnexp.device import describe

    env = {
        "stnexp": stnexp.__version__,
        "torch": torch.__version__,
        "torchvision": _installed("torchvision"),
        "python": platform.python_version(),
        "device": str(device),
        "device_name": describe(device),
        "cpu": describe(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "precision": precision,
        **_git_state(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if resume:
        try:
            first = json.loads(A.ENV.path(run).read_text())
        except (OSError, ValueError, RecursionError):
            first = None
        if isinstance(first, dict):
            resumed = first.get("resumed") if isinstance(first.get("resumed"), list) else []
            env = {**first, "resumed": resumed + [env]}
    atomic.write_text(A.ENV.path(run), json.dumps(env, indent=2) + "\n")


def _installed(package: str) -> str | None:
    """A package's version from its metadata: importing torchvision only to read it cost seconds of
    every run's start (docs/performance.md)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git_state() -> dict:
    """The commit of the checkout stnexp runs from, and whether its tracked files differ from it; both
    None where stnexp is not run from its own git checkout (an installed wheel, or a package that merely
    sits inside someone else's repository: the checkout's top must hold this very package)."""
    package = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or (Path(top).resolve() / package.name) != package:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD") or None, "git_dirty": None if status is None else bool(status)}
