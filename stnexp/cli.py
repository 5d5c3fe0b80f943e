"""The `stnexp` command: parse the flags (train's and eval's declared once, in requests.py), make the
request, call one function, print. torch is imported inside the commands, so `stnexp --help` stays fast."""

from __future__ import annotations

import codecs
import functools
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer

from stnexp.requests import EvalRequest, TrainRequest, flag_of

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


def _guard(fn):
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


def _guarded(command: Callable) -> Callable:
    """Every command's body runs under _guard: one decorator, under @app.command (Typer reads the options
    from the wrapped function's parameters)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _guard(lambda: command(*args, **kwargs))

    return run


def _flag(request: type, field: str):
    """The typer Argument or Option of a request field, as requests.py declares it (flag, metavar, help)."""
    declared = flag_of(request, field)
    if declared.name is None:
        return typer.Argument(metavar=declared.metavar, help=declared.help, show_default=False)
    return typer.Option(declared.name, metavar=declared.metavar, help=declared.help)


def _config(path: Path, sets: Optional[List[str]]):
    from stnexp import config

    return config.load(path, sets or [])


# The parameters of a command are its flags: one each (so more than six), each declared in requests.py.
T, E = TrainRequest, EvalRequest


@app.command("train", short_help="Train the models of a config side by side; write tables, checkpoints, pictures.")
@_guarded
def train(
    config: Annotated[Path, _flag(T, "config")],
    sets: Annotated[Optional[List[str]], _flag(T, "sets")] = None,
    device: Annotated[Optional[str], _flag(T, "device")] = None,
    out: Annotated[Optional[Path], _flag(T, "out")] = None,
    resume: Annotated[bool, _flag(T, "resume")] = False,
    force: Annotated[bool, _flag(T, "force")] = False,
    sweep: Annotated[Optional[List[str]], _flag(T, "sweep")] = None,
    shard: Annotated[Optional[str], _flag(T, "shard")] = None,
) -> None:
    """Train every model of CFG side by side on each variant and seed; write tables, checkpoints, pictures."""
    from stnexp.training import command, loop

    asked = dict(sets=tuple(sets or ()), device=device, out=out, resume=resume, force=force, shard=shard)
    try:
        command.start(TrainRequest(config, **asked, sweep=tuple(sweep or ()), command=" ".join(sys.argv)))
    except loop.Interrupted as e:
        raise typer.Exit(128 + e.signum)  # 130 after Ctrl-C, 143 after SIGTERM, as a shell reports them


@app.command("eval", short_help="Score trained models on their own, other or external test sets.")
@_guarded
def eval_(
    source: Annotated[Path, _flag(E, "source")],
    variants: Annotated[Optional[List[str]], _flag(E, "variants")] = None,
    images: Annotated[Optional[Path], _flag(E, "images")] = None,
    labels: Annotated[Optional[Path], _flag(E, "labels")] = None,
    checkpoint: Annotated[str, _flag(E, "checkpoint")] = "best",
    canvas: Annotated[Optional[str], _flag(E, "canvas")] = None,
    sets: Annotated[Optional[List[str]], _flag(E, "sets")] = None,
    sweep: Annotated[Optional[str], _flag(E, "sweep")] = None,
    name: Annotated[Optional[str], _flag(E, "name")] = None,
    force: Annotated[bool, _flag(E, "force")] = False,
    out: Annotated[Optional[Path], _flag(E, "out")] = None,
    device: Annotated[Optional[str], _flag(E, "device")] = None,
) -> None:
    """Score trained models on their test sets, on other or ad-hoc variants, or on an external IDX test
    set; each evaluation keeps its own files under its name."""
    from stnexp.results import evaluation
    from stnexp.store import logs

    listed = dict(variants=tuple(variants or ()), sets=tuple(sets or ()))
    asked = dict(images=images, labels=labels, checkpoint=checkpoint, canvas=canvas, sweep=sweep, name=name)
    req = EvalRequest(source, **listed, **asked, force=force, out=out, device=device)
    md, target = evaluation.evaluate(req, logs.logger())
    _echo(md)
    _echo(f"wrote {target}.md")


PAPER_HELP = (
    "the paper's layout (rows FCN ... ST-CNN TPS, columns R RTS P E TC), the paper's number beside each of ours"
)


@app.command(short_help="Merge the results of runs into one table, optionally beside the paper's Table 1.")
@_guarded
def report(
    run_dirs: Annotated[
        List[Path],
        typer.Argument(
            metavar="RUN_DIR...", help="run directories whose results to merge (a sweep folder: all its children)"
        ),
    ],
    paper: Annotated[bool, typer.Option("--paper", help=PAPER_HELP)] = False,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            metavar="DIR",
            help="write the report to DIR: report.md with each run's analysis and pictures (copied to DIR/images)",
        ),
    ] = None,
    html: Annotated[
        bool,
        typer.Option("--html", help="also DIR/report.html: one self-contained page, pictures embedded (needs --out)"),
    ] = False,
):
    """Merge the best-checkpoint results of one or many runs into one table (mean +- std over seeds); with
    --paper in the layout of the STN paper's Table 1, each cell beside the paper's number. With --out, a
    full report in DIR: the table, each run's analysis and its pictures, as Markdown (and --html)."""
    from stnexp.results import report as rp
    from stnexp.store import logs

    for text in rp.run(run_dirs, paper, out, html, logs.logger()):
        _echo(text)


@app.command("runs", short_help="List the runs under a folder: variants, models, best errors, status.")
@_guarded
def runs_(
    out: Annotated[Path, typer.Argument(metavar="[OUT]", help="folder holding runs (default: runs)")] = Path("runs"),
):
    """List every run under OUT (default runs/), newest first: its start, variants, models with their test
    error (best checkpoints, mean over seeds) and status: finished, interrupted or running."""
    from stnexp.results import listing

    _echo(listing.runs_table(out), nl=False)


SET = typer.Option(
    "--set", metavar="KEY=VALUE", help="override a config key: key.path=value (value parsed as YAML); repeatable"
)
CFG = typer.Argument(metavar="CFG", help="YAML experiment config")


@app.command(short_help="Write one PNG per variant: test digits beside their distorted versions.")
@_guarded
def preview(
    config_file: Annotated[Path, CFG],
    out: Annotated[
        Optional[Path], typer.Option("--out", metavar="DIR", help="folder for the PNGs (default <out>/<name>/preview)")
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, max=1024, metavar="N", help="digits per picture (1-1024)")] = 64,
    set_: Annotated[Optional[List[str]], SET] = None,
):
    """Write one PNG per variant: test digits beside their distorted versions."""
    from stnexp.results import preview as pv

    for path in pv.write_previews(_config(config_file, set_), out, n):
        _echo(str(path))


@config_app.command("show")
@_guarded
def config_show(config_file: Annotated[Path, CFG], set_: Annotated[Optional[List[str]], SET] = None):
    """Print the resolved config (defaults and presets filled in, --set applied) and each model's
    parameter count on each variant."""
    from stnexp import config, models
    from stnexp.results import tables

    cfg = _config(config_file, set_)
    _echo(config.dump(cfg), nl=False)
    _echo(tables.param_comment(models.param_counts(cfg), {v: cfg.variant(v).canvas for v in cfg.data.variants}))


@config_app.command("schema")
@_guarded
def config_schema():
    """Print the config's JSON Schema (for editor validation of YAML configs)."""
    import json

    from stnexp import config

    typer.echo(json.dumps(config.schema(), indent=2))


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
    try:
        app()
    except SystemExit as e:
        _exit_now(e.code)


def _exit_now(code: int | str | None) -> None:
    """End the process as soon as its work is out: the streams and the log flushed, then os._exit. The
    interpreter's own teardown (freeing torch's and its imports' objects one by one) writes nothing and
    took 0.6-0.9 s of a 14 s run on a 2-core CPU (docs/performance.md). Every file stnexp writes is
    complete and closed before its command returns (atomic writes), so nothing is cut short."""
    import logging

    if isinstance(code, str):  # sys.exit("message"), as Python reports it
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (`| head`) or a closed stream: nothing left to tell
            pass
    os._exit(code or 0)
