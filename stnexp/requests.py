"""What `stnexp train` and `stnexp eval` are asked: one field per flag, each declared here once with its
flag, metavar and help. cli.py builds the command's options from these declarations, stnexp.train and
stnexp.evaluate take the fields by name, and docs/commands.md's flag tables are generated from the
command (scripts/commands_reference.py). Nothing here imports torch, so `stnexp --help` stays fast."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple


class Flag(NamedTuple):
    """How a field is given on the command line: `--out DIR`, a switch (`--force`), or the argument."""

    name: str | None  # None: the positional argument
    metavar: str | None
    help: str


def flag(default: Any, name: str | None, metavar: str | None, help: str) -> Any:
    """A request field with its flag: the default (MISSING: required), `--name` (None: the argument), the
    metavar shown in --help, the help."""
    return field(default=default, metadata={"flag": Flag(name, metavar, help)})


def flag_of(request: type, name: str) -> Flag:
    """The flag a field of `request` declares."""
    return next(f.metadata["flag"] for f in fields(request) if f.name == name)


@dataclass(frozen=True)
class TrainRequest:
    """`stnexp train` (training/command.start): a config file (or with `resume` a run directory), --set
    overrides, --device, --out, --resume, --force, --sweep and --shard, and the command line for train.log."""

    config: Path = flag(
        MISSING,
        None,
        "CFG|RUN_DIR",
        "YAML experiment config, or with --resume a run directory (or a config's run folder: its newest run)",
    )
    sets: tuple[str, ...] = flag(
        (), "--set", "KEY=VALUE", "override a config key: key.path=value (value parsed as YAML); repeatable"
    )
    device: str | None = flag(None, "--device", "D", "override `device`: auto | cpu | cuda | cuda:N | mps")
    out: Path | None = flag(None, "--out", "DIR", "run directory (default <out>/<name>/<timestamp>)")
    resume: bool = flag(
        False,
        "--resume",
        None,
        "continue the run in --out or RUN_DIR (default: the newest run of this config) from its last checkpoints",
    )
    force: bool = flag(
        False,
        "--force",
        None,
        "overwrite the run in --out (only a stnexp run directory, only the files that run wrote)",
    )
    sweep: tuple[str, ...] = flag(
        (),
        "--sweep",
        "KEY=V1,V2",
        "train once per value of KEY (cross product over repeated --sweep) as child runs of one folder, with one "
        "sweep table",
    )
    shard: str | None = flag(
        None,
        "--shard",
        "I/N",
        "with --sweep: train only every N-th child from child I (0-based), joining the sweep in --out if another "
        "shard made it; one process per shard (a job array's tasks, say)",
    )
    command: str = ""  # the command line, for train.log (not a flag)


@dataclass(frozen=True)
class EvalRequest:
    """`stnexp eval` (results/evaluation.evaluate): a run directory (or a config's run folder, or one
    checkpoint); the variants to test on; an external IDX set (`images` with `labels`); best or last
    checkpoints; the canvas (`model` or a side in px); ad-hoc variants as --set items; a pose sweep; the
    evaluation's name, --force, --out, --device."""

    source: Path = flag(
        MISSING,
        None,
        "RUN_DIR|CHECKPOINT",
        "a run directory (or a config's run folder: its newest run) or one checkpoint file",
    )
    variants: tuple[str, ...] = flag(
        (), "--variant", "NAME", "test on this variant (the run's, a --set one, or a preset); repeatable"
    )
    images: Path | None = flag(None, "--images", "F", "external test images: IDX file, uint8 N x H x W (gzip or raw)")
    labels: Path | None = flag(None, "--labels", "F", "external test labels: IDX file, N labels")
    checkpoint: str = flag("best", "--checkpoint", "best|last", "which checkpoints of a run: best | last")
    canvas: str | int | None = flag(
        None,
        "--canvas",
        "model|N",
        "draw the variants on each model's own canvas (model, the default where a variant's differs) or on N x N px",
    )
    sets: tuple[str, ...] = flag(
        (), "--set", "KEY=VALUE", "an ad-hoc variant: data.variants.NAME={...} (as in a config); repeatable"
    )
    sweep: str | None = flag(
        None,
        "--sweep",
        "KEY=A:B:STEP",
        "re-distort each model's own test digits with rotation, scale or shift fixed at each value from A to B "
        "(e.g. rotation=-180:180:15); a table and a plot",
    )
    name: str | None = flag(
        None, "--name", "NAME", "the evaluation's name (default: from what it scores, e.g. best-on-rts+translated)"
    )
    force: bool = flag(False, "--force", None, "replace an earlier evaluation of the same name")
    out: Path | None = flag(
        None, "--out", "DIR", "folder for NAME.{md,csv,json} and index.md (default: the run's evals/)"
    )
    device: str | None = flag(
        None, "--device", "D", "auto | cpu | cuda | cuda:N | mps (default: the run's device, where this machine has it)"
    )

    @property
    def external(self) -> tuple[Path, Path] | None:
        return (self.images, self.labels) if self.images is not None else None
