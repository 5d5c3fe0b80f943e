"""Result tables: a Table-1-style Markdown table (models by rows, variants by columns, test error in %,
mean +- std over seeds) and the same results in long form as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from pathlib import Path

from stnexp.store import artifacts as A
from stnexp.store import atomic

RESULT_FIELDS = [
    "variant",
    "model",
    "seed",
    "checkpoint",
    "correct",
    "accuracy",
    "error",
    "n_test",
    "params",
    "train_seconds",
    "status",
    "precision",
]
EVAL_FIELDS = [
    "variant",
    "model",
    "seed",
    "checkpoint",
    "tested_on",
    "correct",
    "accuracy",
    "error",
    "n_test",
    "params",
    "precision",
]


def _printable(value) -> str:
    """A value on one line: a newline or another control character in a path would end a table row or
    a list item, so it is shown escaped (`\\n`)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))


def text(value) -> str:
    """A value that a user or a run's files chose (a path, a command, a swept value) as Markdown that
    reads as itself in every renderer: on one line, and with the characters that would start raw HTML, a
    code span, a link or a table cell backslash-escaped (report.html reads the escapes back)."""
    return re.sub(r"([\\`<>|\[\]])", r"\\\1", _printable(value))


def code(value) -> str:
    """A value as an inline code span (a path, a command line): on one line, fenced by more backticks
    than any run of them inside, so a backtick in it cannot close the span and let what follows through
    as Markdown or HTML."""
    value = _printable(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", value)), default=0) + 1)
    pad = " " if fence != "`" else ""  # CommonMark strips one space each side of a longer fence
    return f"{fence}{pad}{value}{pad}{fence}"


def markdown(head: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """A Markdown table: the `head` cells, then each row's; the columns numbered in `right` right-aligned
    (the numbers). Every table stnexp prints or writes is made here."""
    head_line = "|" + "|".join(f" {c} " if c else " " for c in head) + "|"  # an empty head cell: `| |`
    lines = [head_line, "|" + "".join("---:|" if i in right else "---|" for i in range(len(head)))]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def mean_std(mean: float, std: float | None) -> str:
    """A mean with its standard deviation over seeds, as every table shows it: `1.23 ± 0.45`."""
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def cell(errors: list[float]) -> str:
    if not errors:
        return "-"
    return mean_std(statistics.mean(errors), statistics.stdev(errors) if len(errors) > 1 else None)


def table(rows: list[dict], row_label, col_key: str, title: str, first: str = "model") -> str:
    """Markdown table of mean +- std test error (%) over seeds, a row per row_label(row), a column per
    row[col_key]; diverged models are named as such."""
    labels = list(dict.fromkeys(row_label(r) for r in rows))
    cols = list(dict.fromkeys(r[col_key] for r in rows))
    out = []
    for label in labels:
        mine = [r for r in rows if row_label(r) == label]
        params = sorted({r["params"] for r in mine})
        shown_params = f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}-{params[-1]:,}"
        cells = []
        for c in cols:
            here = [r for r in mine if r[col_key] == c]
            ok = [r["error"] for r in here if r.get("status", "ok") == "ok"]
            bad = [r["status"] for r in here if r.get("status", "ok") != "ok"]
            shown = cell(ok)
            if bad:
                shown = bad[0] if not ok else f"{shown} ({len(bad)} diverged)"
            cells.append(shown)
        out.append([label, shown_params, *cells])
    right = set(range(1, len(cols) + 2))
    head = [first, "params", *map(text, cols)]  # columns an eval names after the user's files
    return f"**{title}** (test error %, mean ± std over seeds)\n\n" + markdown(head, out, right)


BEST_TITLE = "Best checkpoint by validation accuracy"
# with `data.val_size: 0` the best checkpoint is the last epoch's that did not diverge
UNVALIDATED_TITLE = "Best checkpoint (no validation digits: the last epoch before any divergence)"


def results_markdown(rows: list[dict], partial: bool = False, validated: bool = True) -> str:
    best = [r for r in rows if r["checkpoint"] == "best"]
    last = [r for r in rows if r["checkpoint"] == "last"]
    note = f" {A.PARTIAL}" if partial else ""
    by_model = lambda r: r["model"]  # noqa: E731
    out = table(best, by_model, "variant", f"{BEST_TITLE if validated else UNVALIDATED_TITLE}{note}")
    if last:
        out += "\n" + table(last, by_model, "variant", "Last checkpoint")
    return out


def eval_markdown(rows: list[dict]) -> str:
    parts = []
    for kind in dict.fromkeys(r["checkpoint"] for r in rows):
        mine = [r for r in rows if r["checkpoint"] == kind]
        label = lambda r: f"{r['variant']} / {r['model']}"  # noqa: E731
        parts.append(
            table(
                mine,
                label,
                "tested_on",
                f"{kind} checkpoints: trained on (rows) vs tested on (columns)",
                "trained on / model",
            )
        )
    return "\n".join(parts) + "\n" + precision_note(rows)


def precision_note(rows: list[dict]) -> str:
    """The line under an eval table that says at which precision the models were scored."""
    by = {}
    for r in rows:
        by.setdefault(r.get("precision", "fp32"), set()).add(r["model"])
    shown = "; ".join(f"{p}: {', '.join(sorted(models))}" for p, models in sorted(by.items()))
    return f"Scored at the precision each model trained at ({shown}).\n"


def param_comment(counts: dict[str, dict[str, int]], canvases: dict[str, int]) -> str:
    """Parameter counts by model (rows) and variant (columns) as YAML comments, for `config show`."""
    head = ["model"] + [f"{v} ({canvases[v]}x{canvases[v]})" for v in canvases]
    rows = [[m] + [f"{per[v]:,}" for v in canvases] for m, per in counts.items()]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "#   " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join(["# parameters of each model on each variant's canvas:", line(head)] + [line(r) for r in rows])


def to_csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_tables(stem: Path, rows: list[dict], markdown: str, fields: list[str]) -> None:
    """`stem`.md, .csv and .json (artifacts.RESULTS or EVAL); CSV and JSON hold `fields` of each row."""
    atomic.write_text(stem.with_name(stem.name + ".md"), markdown)
    atomic.write_text(stem.with_name(stem.name + ".csv"), to_csv(rows, fields))
    atomic.write_text(
        stem.with_name(stem.name + ".json"), json.dumps([{k: r[k] for k in fields} for r in rows], indent=2) + "\n"
    )
