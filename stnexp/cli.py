"""The `stnexp` command: parse the flags (declared once per command, TRAIN_FLAGS and EVAL_FLAGS), make the
request, call one function, print. torch is imported inside the commands, so `stnexp --help` stays fast."""

from __future__ import annotations

import codecs
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain help, written at once: `stnexp --help | grep -q train` must not die of a broken pipe
    rich_markup_mode=None,
    help="Spatial Transformer Networks vs CNNs on distorted MNIST: train side by side, evaluate, look.",
)
config_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Show the resolved config or its JSON Schema."
)
app.add_typer(config_app, name="config")

SET = typer.Option(
    None, "--set", metavar="KEY=VALUE", help="override a config key: key.path=value (value parsed as YAML); repeatable"
)


def _echo(text: str, err: bool = False, nl: bool = True) -> None:
    """typer.echo of what the terminal can encode (see main(): ± becomes +-, the rest it cannot show ?)."""
    stream = sys.stderr if err else sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text = text.encode(encoding, "stnexp-plain").decode(encoding)
    except LookupError:  # an encoding Python does not know: leave it to click
        pass
    typer.echo(text, err=err, nl=nl)


MAX_ERROR_LINES = 20  # however large the input, an error stays readable: the first lines, then how many more
MAX_ERROR_LINE = 500  # characters of one line (values quoted in it are cut shorter where they are made)


def _fail(lines: str, code: int) -> None:
    lines = str(lines).splitlines()
    for line in lines[:MAX_ERROR_LINES]:
        _echo(f"error: {line if len(line) <= MAX_ERROR_LINE else line[: MAX_ERROR_LINE - 3] + '...'}", err=True)
    if len(lines) > MAX_ERROR_LINES:
        _echo(f"error: ... and {len(lines) - MAX_ERROR_LINES} more", err=True)
    raise typer.Exit(code)


def _guard(fn, log_path: Optional[Path] = None):
    """Run a command body: bad input -> exit 2 with its one-line messages; anything unexpected -> exit 1
    with a one-line summary, the traceback going to train.log (or shown with STNEXP_DEBUG=1)."""
    from stnexp.errors import SharedError, UserError

    try:
        return fn()
    except UserError as e:
        # a rank of a real torchrun (which sets MASTER_ADDR) is named; a RANK left in the shell is not one
        rank = os.environ.get("RANK", "0") if os.environ.get("MASTER_ADDR") else "0"
        if isinstance(e, SharedError) and rank != "0":  # every rank found it; rank 0 says it once
            # torchrun ends every rank as soon as one exits with an error: wait so rank 0 gets to say it
            time.sleep(2)
            raise typer.Exit(2)
        _fail(str(e) if rank == "0" else f"[rank {rank}] {e}", 2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except BrokenPipeError:  # whoever read stdout has gone (`| head`): end quietly, as Unix tools do
        from stnexp.store.logs import stdout_gone

        stdout_gone()
        raise typer.Exit(0)
    except Exception as e:  # the last line of defence: no traceback on the terminal
        import errno
        import logging
        import traceback

        if os.environ.get("STNEXP_DEBUG"):
            raise
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            _fail(f"{e.filename or 'writing'}: no space left on device", 2)
        log = logging.getLogger("stnexp")
        log.debug("unexpected error:\n" + traceback.format_exc())
        where = (
            " (traceback in train.log)"
            if any(isinstance(h, logging.FileHandler) for h in log.handlers)
            else " (set STNEXP_DEBUG=1 for the traceback)"
        )
        _fail(f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}", 1)


def _config(path: Path, sets: Optional[List[str]]):
    from stnexp import config

    return config.load(path, sets or [])


def _command(name: str, short_help: str, flags: dict[str, tuple[Any, Any]]):
    """Register the decorated body as command `name` whose options are `flags` (field: (type, typer
    Argument or Option)): the command passes the body what it was given, by field, and the body makes its
    request object of it. The flags are declared once, in the table, not as a dozen parameters."""

    def register(body: Callable[[dict], None]) -> Callable[[dict], None]:
        def command(**given: Any) -> None:
            _guard(lambda: body(given))

        parameters = [
            inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
            for field, (kind, option) in flags.items()
        ]
        command.__signature__ = inspect.Signature(parameters)  # what typer reads the options from
        command.__doc__, command.__name__ = body.__doc__, name
        app.command(name, short_help=short_help)(command)
        return body

    return register


def _option(kind, flag: str, metavar: str, help: str):
    """A flag with a value (None when not given): its type and its typer.Option."""
    return kind, typer.Option(None, flag, metavar=metavar, help=help)


def _switch(flag: str, help: str):
    """A flag without a value: False unless given."""
    return bool, typer.Option(False, flag, help=help)


# the flags, one entry each with its help beside it (laid out by hand: a table reads better than ruff's layout)
# fmt: off
TRAIN_FLAGS = {
    "config": (Path, typer.Argument(..., metavar="CFG|RUN_DIR", help="YAML experiment config, or with --resume a "
                                    "run directory (or a config's run folder: its newest run)")),
    "sets": (Optional[List[str]], SET),
    "device": _option(Optional[str], "--device", "D", "override `device`: auto | cpu | cuda | cuda:N | mps"),
    "out": _option(Optional[Path], "--out", "DIR", "run directory (default <out>/<name>/<timestamp>)"),
    "resume": _switch("--resume", "continue the run in --out or RUN_DIR (default: the newest run of this config) "
                      "from its last checkpoints"),
    "force": _switch("--force", "overwrite the run in --out (only a stnexp run directory, only the files that run "
                     "wrote)"),
    "sweep": _option(Optional[List[str]], "--sweep", "KEY=V1,V2", "train once per value of KEY (cross product over "
                     "repeated --sweep) as child runs of one folder, with one sweep table"),
    "shard": _option(Optional[str], "--shard", "I/N", "with --sweep: train only every N-th child from child I "
                     "(0-based), joining the sweep in --out if another shard made it; one process per shard (a job "
                     "array's tasks, say)"),
}
# fmt: on


@_command("train", "Train the models of a config side by side; write tables, checkpoints, pictures.", TRAIN_FLAGS)
def train(given: dict) -> None:
    """Train every model of CFG side by side on each variant and seed; write tables, checkpoints, pictures."""
    from stnexp.training import command as train_command
    from stnexp.training import loop

    req = train_command.TrainRequest(
        **{**given, "sets": tuple(given["sets"] or ()), "sweep": tuple(given["sweep"] or ())},
        command=" ".join(sys.argv),
    )
    try:
        train_command.start(req)
    except loop.Interrupted as e:
        raise typer.Exit(128 + e.signum)  # 130 after Ctrl-C, 143 after SIGTERM, as a shell reports them


# fmt: off
EVAL_FLAGS = {
    "source": (Path, typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="a run directory (or a config's run "
                                    "folder: its newest run) or one checkpoint file")),
    "variants": _option(Optional[List[str]], "--variant", "NAME", "test on this variant (the run's, a --set one, or "
                        "a preset); repeatable"),
    "images": _option(Optional[Path], "--images", "F", "external test images: IDX file, uint8 N x H x W (gzip or "
                      "raw)"),
    "labels": _option(Optional[Path], "--labels", "F", "external test labels: IDX file, N labels"),
    "checkpoint": (str, typer.Option("best", "--checkpoint", metavar="best|last", help="which checkpoints of a run: "
                                     "best | last")),
    "canvas": _option(Optional[str], "--canvas", "model|N", "draw the variants on each model's own canvas (model, "
                      "the default where a variant's differs) or on N x N px"),
    "sets": _option(Optional[List[str]], "--set", "KEY=VALUE", "an ad-hoc variant: data.variants.NAME={...} (as in a "
                    "config); repeatable"),
    "sweep": _option(Optional[str], "--sweep", "KEY=A:B:STEP", "re-distort each model's own test digits with "
                     "rotation, scale or shift fixed at each value from A to B (e.g. rotation=-180:180:15); a table "
                     "and a plot"),
    "name": _option(Optional[str], "--name", "NAME", "the evaluation's name (default: from what it scores, e.g. "
                    "best-on-rts+translated)"),
    "force": _switch("--force", "replace an earlier evaluation of the same name"),
    "out": _option(Optional[Path], "--out", "DIR", "folder for NAME.{md,csv,json} and index.md (default: the run's "
                   "evals/)"),
    "device": _option(Optional[str], "--device", "D", "auto | cpu | cuda | cuda:N | mps (default: the run's device, "
                      "where this machine has it)"),
}
# fmt: on


@_command("eval", "Score trained models on their own, other or external test sets.", EVAL_FLAGS)
def eval_(given: dict) -> None:
    """Score trained models on their test sets, on other or ad-hoc variants, or on an external IDX test
    set; each evaluation keeps its own files under its name."""
    from stnexp.results import evaluation
    from stnexp.store import logs

    req = evaluation.EvalRequest(
        **{**given, "variants": tuple(given["variants"] or ()), "sets": tuple(given["sets"] or ())}
    )
    md, target = evaluation.evaluate(req, logs.logger())
    _echo(md)
    _echo(f"wrote {target}.md")


@app.command(short_help="Merge the results of runs into one table, optionally beside the paper's Table 1.")
def report(
    run_dirs: List[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="run directories whose results to merge (a sweep folder: all its children)"
    ),
    paper: bool = typer.Option(
        False,
        "--paper",
        help="the paper's layout (rows FCN ... ST-CNN TPS, columns R RTS P E TC), the paper's number beside each of "
        "ours",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="write the report to DIR: report.md with each run's analysis and pictures (copied to DIR/images)",
    ),
    html: bool = typer.Option(
        False, "--html", help="also DIR/report.html: one self-contained page, pictures embedded (needs --out)"
    ),
):
    """Merge the best-checkpoint results of one or many runs into one table (mean +- std over seeds); with
    --paper in the layout of the STN paper's Table 1, each cell beside the paper's number. With --out, a
    full report in DIR: the table, each run's analysis and its pictures, as Markdown (and --html)."""

    def body():
        from stnexp.errors import UserError
        from stnexp.results import report as rp
        from stnexp.store import logs
        from stnexp.training import sweeps

        if html and out is None:
            raise UserError("--html: name the folder to write it to with --out DIR")
        log = logs.logger()
        found = sweeps.reported(run_dirs, log)
        table = rp.make(found, paper)
        _echo(table)
        if out is not None:
            figures = (rp.table1_figure(found, Path(out)),) if paper else ()
            rp.write_report(found, table, Path(out), html, figures=figures)
            _echo(f"wrote {Path(out) / 'report.md'}" + (f" and {Path(out) / 'report.html'}" if html else ""))

    _guard(body)


@app.command("runs", short_help="List the runs under a folder: variants, models, best errors, status.")
def runs_(out: Path = typer.Argument(Path("runs"), metavar="[OUT]", help="folder holding runs (default: runs)")):
    """List every run under OUT (default runs/), newest first: its start, variants, models with their test
    error (best checkpoints, mean over seeds) and status: finished, interrupted or running."""

    def body():
        from stnexp.results import listing

        _echo(listing.runs_table(out), nl=False)

    _guard(body)


@app.command(short_help="Write one PNG per variant: test digits beside their distorted versions.")
def preview(
    config_file: Path = typer.Argument(..., metavar="CFG", help="YAML experiment config"),
    out: Optional[Path] = typer.Option(
        None, "--out", metavar="DIR", help="folder for the PNGs (default <out>/<name>/preview)"
    ),
    n: int = typer.Option(64, "--n", min=1, max=1024, metavar="N", help="digits per picture (1-1024)"),
    set_: Optional[List[str]] = SET,
):
    """Write one PNG per variant: test digits beside their distorted versions."""

    def body():
        from stnexp.results import preview as pv

        cfg = _config(config_file, set_)
        for path in pv.write_previews(cfg, out, n):
            _echo(str(path))

    _guard(body)


@config_app.command("show")
def config_show(
    config_file: Path = typer.Argument(..., metavar="CFG", help="YAML experiment config"),
    set_: Optional[List[str]] = SET,
):
    """Print the resolved config (defaults and presets filled in, --set applied) and each model's
    parameter count on each variant."""

    def body():
        from stnexp import config, models
        from stnexp.results import tables

        cfg = _config(config_file, set_)
        _echo(config.dump(cfg), nl=False)
        _echo(tables.param_comment(models.param_counts(cfg), {v: cfg.variant(v).canvas for v in cfg.data.variants}))

    _guard(body)


@config_app.command("schema")
def config_schema():
    """Print the config's JSON Schema (for editor validation of YAML configs)."""
    import json

    from stnexp import config

    _guard(lambda: typer.echo(json.dumps(config.schema(), indent=2)))


# what a terminal that cannot show a character gets instead
ASCII = {"±": "+-", "×": "x", "–": "-", "—": "-"}


def _plain(error: UnicodeEncodeError) -> tuple[str, int]:
    return "".join(ASCII.get(c, "?") for c in error.object[error.start : error.end]), error.end


codecs.register_error("stnexp-plain", _plain)


def _print_version(value: bool) -> None:
    if value:
        from stnexp import __version__

        typer.echo(f"stnexp {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print stnexp's version and exit"
    ),
):
    pass


def main() -> None:
    # a path or name that is not UTF-8 would be written into train.log, env.json and the tables, which are
    # UTF-8: refuse it before anything is made
    for arg in sys.argv[1:]:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            typer.echo(
                f"error: '{shown[:200]}': not valid UTF-8; stnexp writes the paths and names it is given into "
                "UTF-8 files (train.log, env.json, the tables): rename it",
                err=True,
            )
            sys.exit(2)
    # print what the terminal can encode (an ASCII or Latin-1 locale cannot show every character of a
    # table) instead of dying after the work is done
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="stnexp-plain")
    app()
