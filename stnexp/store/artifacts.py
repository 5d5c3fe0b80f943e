"""Every file a run directory (or a sweep folder) holds: its name, folder, file pattern, who writes it and
who reads it. Train, eval, report, `runs`, sweeps and --force ask this table; no other module spells a
run file's name. docs/commands.md's table of a run directory's files is generated from it
(scripts/commands_reference.py files).
"""

from __future__ import annotations

import csv
import io
import json
import string
from dataclasses import dataclass
from pathlib import Path

from stnexp.errors import UserError

TABLE_SUFFIXES = (".md", ".csv", ".json")
PARTIAL = "(partial: the run was interrupted)"  # in the title of an interrupted run's results.md (its state up to 0.2)
FIGURE_SUFFIXES = (".png", ".pdf")  # every figure as PNG and, beside it, as PDF (pictures.py)
CHECKPOINT_KINDS = ("best", "last")


@dataclass(frozen=True)
class Artifact:
    """One kind of file. `pattern` is the path below the run directory without its suffix; the fields in
    braces ({variant}, {model}, {seed}, {kind}, {name}) say what one file of the kind is for. A kind
    written in several formats has one file per suffix. `writer` and `reader` name the functions that
    write and read it (`module.function` in stnexp), so that a reader of this table finds them."""

    name: str
    pattern: str
    suffixes: tuple[str, ...]
    writer: str
    reader: str | None
    what: str

    @property
    def folder(self) -> str:
        """The top folder the kind lives in ('' for a file of the run directory itself)."""
        return self.pattern.split("/")[0] if "/" in self.pattern else ""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.pattern) if f)

    @property
    def figure(self) -> bool:
        return self.suffixes == FIGURE_SUFFIXES

    def path(self, run: Path, **keys) -> Path:
        """The file (its first format) for these keys: artifacts.CURVES.path(run, variant="rts", seed=0)."""
        return Path(run) / (self.pattern.format(**keys) + self.suffixes[0])

    def stem(self, run: Path, **keys) -> Path:
        """The file without its suffix, for a writer of several formats."""
        return Path(run) / self.pattern.format(**keys)

    def file(self, run: Path, suffix: str, **keys) -> Path:
        """The file in one of its formats: artifacts.RESULTS.file(run, ".json")."""
        assert suffix in self.suffixes, (self.name, suffix)
        return Path(run) / (self.pattern.format(**keys) + suffix)

    def paths(self, run: Path, **keys) -> list[Path]:
        """The file in every format it is written in."""
        stem = Path(run) / self.pattern.format(**keys)
        return [stem.with_name(stem.name + suffix) for suffix in self.suffixes]

    def found(self, run: Path) -> list[Path]:
        """The files of this kind present in `run` (its first format), sorted."""
        pattern = string.Formatter().vformat(self.pattern, (), _Star()) + self.suffixes[0]
        return sorted(p for p in Path(run).glob(pattern) if p.is_file())


class _Star(dict):
    def __missing__(self, key: str) -> str:
        return "*"


def _a(
    name: str, pattern: str, suffixes: tuple[str, ...] | str, writer: str, reader: str | None, what: str
) -> Artifact:
    return Artifact(name, pattern, (suffixes,) if isinstance(suffixes, str) else suffixes, writer, reader, what)


# ---------------------------------------------------------------- a run directory

MARKER = _a(
    name="marker",
    pattern=".stnexp-run",
    suffixes="",
    writer="store.runs.prepare, store.runs.set_state",
    reader="store.runs.state",
    what="written first: what --force recognises a run by; its version and state (training, finished, interrupted)",
)
LOCK = _a(
    name="lock",
    pattern=".stnexp-lock",
    suffixes="",
    writer="store.runs.prepare",
    reader="store.runs.status",
    what="held (flock) by the process training into the run",
)
CONFIG = _a(
    name="config",
    pattern="config.yaml",
    suffixes="",
    writer="training.launch.train_into",
    reader="config.load",
    what="the resolved config (what --resume compares against)",
)
ENV = _a(
    name="env",
    pattern="env.json",
    suffixes="",
    writer="store.env.write_env",
    reader="store.artifacts.read_env",
    what="versions, device, command line, start",
)
LOG = _a(
    name="log",
    pattern="train.log",
    suffixes="",
    writer="store.logs.logger",
    reader=None,
    what="everything printed, plus warnings and tracebacks",
)
METRICS = _a(
    name="metrics",
    pattern="metrics.csv",
    suffixes="",
    writer="store.artifacts.write_metrics",
    reader="store.artifacts.read_metrics",
    what="one row per epoch per variant, seed and model",
)
RESULTS = _a(
    name="results",
    pattern="results",
    suffixes=TABLE_SUFFIXES,
    writer="results.tables.write_tables",
    reader="store.artifacts.read_results",
    what="the test scores of `train`",
)
EVAL_0_2 = _a(
    name="eval (0.2.0.dev0)",
    pattern="eval",
    suffixes=TABLE_SUFFIXES,
    writer="(stnexp eval up to 0.2.0.dev0)",
    reader=None,
    what="where `stnexp eval` wrote its scores before evaluations had names",
)
ANALYSIS = _a(
    name="analysis",
    pattern="analysis",
    suffixes=(".md", ".json"),
    writer="results.outputs.write_analysis",
    reader="results.report.write_report",
    what="paired significance, rectification and error by distortion of the best checkpoints",
)
REPORT = _a(
    name="report",
    pattern="report.html",
    suffixes="",
    writer="results.report.write_report",
    reader=None,
    what="the run's report in one page, written at the end of train",
)
CHECKPOINT = _a(
    name="checkpoint",
    pattern="checkpoints/{variant}/{model}-s{seed}-{kind}",
    suffixes=".pt",
    writer="training.loop.save",
    reader="store.checkpoints.load",
    what="a model's weights, optimizer and schedule state, config and history; kind best or last",
)
STN = _a(
    name="transformer pictures",
    pattern="stn/{variant}/{model}-s{seed}",
    suffixes=FIGURE_SUFFIXES,
    writer="results.pictures.transformer",
    reader="results.report.pictures_of",
    what="test digits beside what the transformer made of them",
)
STN_0_1 = _a(
    name="transformer pictures (0.1)",
    pattern="stn/{variant}-{model}-s{seed}",
    suffixes=".png",
    writer="(stnexp 0.1)",
    reader=None,
    what="where version 0.1 put them (variant a + model b-c met variant a-b + model c there)",
)
CURVES = _a(
    name="curves",
    pattern="curves/{variant}/s{seed}",
    suffixes=FIGURE_SUFFIXES,
    writer="results.pictures.curves",
    reader="results.report.pictures_of",
    what="training curves of the models of one (variant, seed)",
)
INVARIANCE = _a(
    name="invariance",
    pattern="invariance/{variant}/s{seed}",
    suffixes=FIGURE_SUFFIXES,
    writer="results.pictures.invariance",
    reader="results.report.pictures_of",
    what="test error by the true distortion, every model",
)
RECTIFICATION = _a(
    name="rectification",
    pattern="rectification/{variant}/{model}-s{seed}",
    suffixes=FIGURE_SUFFIXES,
    writer="results.pictures.scatter",
    reader="results.report.pictures_of",
    what="how much of each digit's pose the transformer undid",
)
TB = _a(
    name="tensorboard",
    pattern="tb/{variant}/s{seed}/{model}/events.out.tfevents.*",
    suffixes="",
    writer="training.board.Board",
    reader=None,
    what="TensorBoard event files (train.tensorboard)",
)
EVAL = _a(
    name="evaluation",
    pattern="evals/{name}",
    suffixes=TABLE_SUFFIXES,
    writer="results.tables.write_tables",
    reader=None,
    what="each `stnexp eval`, by name",
)
EVAL_SWEEP = _a(
    name="evaluation sweep",
    pattern="evals/{name}",
    suffixes=FIGURE_SUFFIXES,
    writer="results.pictures.sweep",
    reader="results.report.pictures_of",
    what="an `stnexp eval --sweep`'s plot",
)
EVAL_INDEX = _a(
    name="evaluations index",
    pattern="evals/index",
    suffixes=".md",
    writer="store.evals.index_eval",
    reader="store.evals.eval_names",
    what="a line per evaluation",
)
INDEX_LOCK = _a(
    name="evaluations index lock",
    pattern="evals/.index",
    suffixes=".lock",
    writer="store.evals.index_eval",
    reader=None,
    what="held while an eval adds its line to evals/index.md",
)

RUN = [
    MARKER,
    LOCK,
    CONFIG,
    ENV,
    LOG,
    METRICS,
    RESULTS,
    EVAL_0_2,
    ANALYSIS,
    REPORT,
    CHECKPOINT,
    STN,
    STN_0_1,
    CURVES,
    INVARIANCE,
    RECTIFICATION,
    TB,
    EVAL,
    EVAL_SWEEP,
    EVAL_INDEX,
    INDEX_LOCK,
]
# the figures of a run in the order a report shows them
FIGURES = [CURVES, INVARIANCE, STN, STN_0_1, RECTIFICATION, EVAL_SWEEP]

# ---------------------------------------------------------------- a sweep folder

SWEEP_PLAN = _a(
    name="sweep plan",
    pattern=".stnexp-sweep",
    suffixes="",
    writer="training.sweeps.run",
    reader="store.sweep_plan.read",
    what="what --resume and shards join: the config, --set, --sweep and the children",
)
SWEEP_TABLE = _a(
    name="sweep table",
    pattern="sweep",
    suffixes=TABLE_SUFFIXES + FIGURE_SUFFIXES,
    writer="results.sweep_table.write",
    reader=None,
    what="one row per child, model and variant",
)
SWEEP_LOCK = _a(
    name="sweep lock",
    pattern=".stnexp-sweep",
    suffixes=".lock",
    writer="training.sweeps.run",
    reader=None,
    what="shards that start together take turns on it to make or join the plan, and to write the table",
)
SWEEP = [SWEEP_PLAN, SWEEP_TABLE, SWEEP_LOCK]


def own_files() -> list[str]:
    """The top-level files of a run directory that stnexp writes (in every format)."""
    return [p.name for a in RUN if not a.folder and not a.keys for p in a.paths(Path("."))]


def own_folders() -> list[str]:
    return list(dict.fromkeys(a.folder for a in RUN if a.folder))


def expand(a: Artifact, run: Path, cfg) -> list[Path]:
    """Every file of kind `a` that the run of config `cfg` may have written, in every format."""
    choices = {
        "variant": list(cfg.data.variants),
        "model": list(cfg.models),
        "seed": list(cfg.seeds),
        "kind": list(CHECKPOINT_KINDS),
    }
    combos: list[dict] = [{}]
    for key in a.keys:
        combos = [{**c, key: v} for c in combos for v in choices[key]]
    return [p for keys in combos for p in a.paths(run, **keys)]


# ---------------------------------------------------------------- readers and writers of the data files

METRIC_FIELDS = [
    "variant",
    "seed",
    "model",
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "val_acc",
    "lr",
    "seconds",
    "images_per_s",
]
RESULT_TYPES = {"variant": str, "model": str, "seed": int, "error": (int, float), "checkpoint": str, "params": int}


def write_metrics(run: Path, rows: list[dict]) -> None:
    from stnexp.store import atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(METRICS.path(run), buf.getvalue())


def read_metrics(run: Path) -> list[dict] | None:
    """metrics.csv as rows of strings (None when it is missing or unreadable)."""
    try:
        with open(METRICS.path(run), newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def read_env(run: Path) -> dict:
    """env.json, or {} when it is missing or damaged."""
    try:
        env = json.loads(ENV.path(run).read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        return {}
    return env if isinstance(env, dict) else {}


def is_result(r) -> bool:
    """A row of results.json as stnexp writes it: its fields there and of their types (a damaged or
    hand-edited file is refused, not half read)."""
    return (
        isinstance(r, dict)
        and RESULT_TYPES.keys() <= r.keys()
        and all(isinstance(r[k], t) and not isinstance(r[k], bool) for k, t in RESULT_TYPES.items())
        and isinstance(r.get("status", "ok"), str)
    )


def read_results(run: Path) -> list[dict] | None:
    """results.json's rows (None when the run has not written it); UserError when it is not stnexp's."""
    from stnexp.config import first_line

    path = RESULTS.file(run, ".json")
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: unreadable ({first_line(e)})") from None
    if not isinstance(rows, list) or not all(is_result(r) for r in rows):
        raise UserError(f"{path}: not a results table written by stnexp")
    return rows
