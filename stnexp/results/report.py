"""`stnexp report`: the results of one or many runs merged into one table, optionally in the layout of
the STN paper's Table 1 with the paper's number beside each of ours (paper.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from stnexp import config as C
from stnexp.errors import UserError
from stnexp.results import page, paper, tables
from stnexp.store import artifacts as A
from stnexp.store import files, runs, sweep_plan


@dataclass(frozen=True)
class Source:
    """One run's best-checkpoint results, its config, and how long it trained."""

    path: Path
    cfg: C.Config
    rows: list[dict]
    iterations: int
    device: str
    trained: int | None  # steps completed by every group (fewer than `iterations` in an interrupted run)
    steps: dict[tuple[str, int], int]  # steps completed by each (variant, seed) group, from metrics.csv
    precision: str  # as the run resolved it (amp: auto is bf16 on one CPU and fp32 on another)


def run(paths: list[Path], as_paper: bool, out: Path | None, html: bool, log) -> list[str]:
    """`stnexp report`: the merged table of the runs `paths` stand for (reported()), and with `out` the
    report written there (with `as_paper` its table1.png). Returns what the command prints."""
    if html and out is None:
        raise UserError("--html: name the folder to write it to with --out DIR")
    found = reported(paths, log)
    table = make(found, as_paper)
    if out is None:
        return [table]
    figures = (table1_figure(found, Path(out)),) if as_paper else ()
    write_report(found, table, Path(out), html, figures=figures)
    return [table, f"wrote {Path(out) / 'report.md'}" + (f" and {Path(out) / 'report.html'}" if html else "")]


def reported(paths: list[Path], log) -> list[Path]:
    """What `stnexp report` reads for the paths it is given: a sweep folder stands for its children (in
    the plan's order, those that are runs), a sweep's own tables (as `SWEEP/*` names them) are skipped,
    and anything else is a run or a config's run folder (runs.find_run)."""
    out: list[Path] = []
    for path in map(Path, paths):
        spec = sweep_plan.read(path) if path.is_dir() else None
        if spec is not None:
            # a child still training (another shard's, say) or never started is named, not an error
            planned = sweep_plan.children(path, spec)
            scored = [c for c in planned if files.is_run(c) and A.RESULTS.file(c, ".json").is_file()]
            waiting = [c.name for c in planned if c not in scored]
            if not scored:
                raise UserError(f"{path}: a sweep none of whose {len(planned)} child runs has scored its models yet")
            log.info(
                f"{path}: a sweep, reporting its {len(scored)} scored child run(s)"
                + (f"; not scored yet: {', '.join(waiting)}" if waiting else "")
            )
            out += scored
        elif (
            path.is_file()
            and path.name in {p.name for p in A.SWEEP_TABLE.paths(path.parent)}
            and sweep_plan.read(path.parent) is not None
        ):
            log.info(f"{path}: the sweep's own table, skipped")
        else:
            out.append(runs.find_run(path, log))
    return list(dict.fromkeys(out))


def read(path: Path) -> Source:
    path = Path(path)
    if not path.is_dir() or not files.is_run(path):
        raise UserError(f"{path}: not a stnexp run directory")
    rows = A.read_results(path)
    if rows is None:
        raise UserError(f"{path}: no {A.RESULTS.file(path, '.json').name} (the run has not scored its models yet)")
    cfg = C.load(A.CONFIG.path(path))
    iterations = cfg.steps()[1]
    env = A.read_env(path)
    device = str(env.get("device_name") or env.get("device") or "?")
    best = [r for r in rows if r["checkpoint"] == "best"]
    steps = _steps(path)
    trained = min(steps.values()) if steps else None
    return Source(path, cfg, best, iterations, device, trained, steps, str(env.get("precision") or "?"))


def _steps(run: Path) -> dict[tuple[str, int], int]:
    """The steps each (variant, seed) of a run completed, from metrics.csv (empty if unreadable)."""
    last: dict[tuple[str, int], int] = {}
    try:
        for r in A.read_metrics(run) or []:
            key = (str(r["variant"]), int(r["seed"]))
            last[key] = max(last.get(key, 0), int(r["step"]))
    except (KeyError, ValueError, TypeError):
        return {}
    return last


def short_names(paths: list[Path]) -> dict[Path, str]:
    """Each run's name for a label: the fewest trailing parts of its path that tell the runs apart
    (`a/run` and `b/run`, not `run` twice)."""
    full = {p: Path(p).resolve().parts for p in paths}
    for k in range(1, max(len(v) for v in full.values()) + 1):
        names = {p: "/".join(v[-k:]) for p, v in full.items()}
        if len(set(names.values())) == len(names):
            return names
    return {p: str(Path(p).resolve()) for p in paths}


def merged(sources: list[Source], as_paper: bool) -> list[dict]:
    """Every source's rows, labelled for the table: `label` (the row) and `column`. As the paper: the
    paper's row and column where the model and variant have one (a row shared by two differently named
    models keeps the names). Rows share a cell only when their models trained by the same recipe (model,
    variant, data and training config) for the same number of steps at the same precision: a label that
    runs with different recipes give is split, each part named by its runs (or, past three, by a digest of
    its recipe); the same seed of the same recipe from two runs is an error naming both."""
    names = short_names([s.path for s in sources])
    labelled = []
    for s in sources:
        for r in s.rows:
            if r["model"] not in s.cfg.models or r["variant"] not in s.cfg.data.variants:
                continue
            label, column = r["model"], r["variant"]
            if as_paper:
                row = paper.row(s.cfg, r["model"], r["variant"])
                sharing = [m for m in s.cfg.models if paper.row(s.cfg, m, r["variant"]) == row]
                label = row if row and len(sharing) == 1 else (f"{row} ({r['model']})" if row else r["model"])
                column = paper.column(s.cfg, r["variant"]) or r["variant"]
            paper_row = paper.row(s.cfg, r["model"], r["variant"]) if as_paper else None
            # an interrupted run trained less than its config says: a group's budget is the steps it took
            took = s.steps.get((str(r["variant"]), int(r["seed"])), s.trained)  # else the run's least
            budget = took if took is not None and took < s.iterations else s.iterations
            precision = str(r.get("precision") or s.precision)
            key = (recipe(s.cfg, r["model"], r["variant"]), budget, precision)
            labelled.append((s, key, {**r, "label": label, "column": column, "paper_row": paper_row}))
    recipes: dict[tuple, list] = {}
    holders: dict[tuple, list[str]] = {}
    for s, key, r in labelled:
        keys = recipes.setdefault((r["label"], r["column"]), [])
        if key not in keys:
            keys.append(key)
        holders.setdefault(key, [])
        if names[s.path] not in holders[key]:
            holders[key].append(names[s.path])
    suffixes = {cell: _suffixes(keys, holders) for cell, keys in recipes.items() if len(keys) > 1}
    out: dict[tuple, tuple[Source, dict]] = {}
    for s, key, r in labelled:
        if (r["label"], r["column"]) in suffixes:
            r = {**r, "label": f"{r['label']} ({suffixes[(r['label'], r['column'])][key]})"}
        cell = (r["label"], r["column"], r["seed"], key)
        if cell in out and out[cell][0].path != s.path:
            raise UserError(
                f"{out[cell][0].path} and {s.path} both hold seed {r['seed']} of {r['model']} on {r['variant']} "
                "with the same recipe: report one of them"
            )
        out[cell] = (s, r)
    return [r for _, r in out.values()]


def _suffixes(keys: list[tuple], holders: dict[tuple, list[str]]) -> dict[tuple, str]:
    """What tells apart the recipes that share a label: their runs, then their step budgets, then their
    precisions, and where even those agree (or past three runs) a digest of the recipe."""

    def runs_of(key):
        names = holders[key]
        return " + ".join(names) if len(names) <= 3 else f"{len(names)} runs"

    parts = [
        runs_of,
        lambda key: f"{key[1]:,} iterations",
        lambda key: key[2],
        lambda key: "recipe " + hashlib.sha256(key[0].encode()).hexdigest()[:6],
    ]
    for n in range(1, len(parts) + 1):
        got = {key: ", ".join(part(key) for part in parts[:n]) for key in keys}
        if len(set(got.values())) == len(got):
            return got
    return got


def recipe(cfg: C.Config, model: str, variant: str) -> str:
    """What decides a model's result besides its seed: its own config, its variant's, the data and the
    training recipe (not the run's other models and variants, nor its seeds, device or speed settings)."""
    view = cfg.results_view()
    view["models"] = view["models"][model]
    view["data"]["variants"] = cfg.variant(variant).model_dump(mode="json")
    view.pop("seeds")
    return json.dumps(view, sort_keys=True)


def _ordered(values: list[str], first: list[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


def paper_table(rows: list[dict]) -> str:
    """Our mean +- std test error beside the paper's, rows and columns in the paper's order."""
    labels = _ordered([r["label"] for r in rows], paper.ROWS)
    cols = _ordered([r["column"] for r in rows], list(paper.COLUMNS.values()))
    lines = [
        "**Test error %: ours (mean ± std over seeds, best checkpoint by validation), the paper's in brackets** "
        "(a paper row holds only the paper's model as stnexp builds it, paper.py; any other model keeps its name)",
    ]
    out = []
    for label in labels:
        params = sorted({r["params"] for r in rows if r["label"] == label})
        cells = [f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}-{params[-1]:,}"]
        for c in cols:
            here = [r for r in rows if r["label"] == label and r["column"] == c]
            ok = [r["error"] for r in here if r.get("status", "ok") == "ok"]
            ours = tables.cell(ok) if ok or not here else here[0]["status"]
            theirs = paper.TABLE1.get(here[0]["paper_row"], {}).get(c) if here else None
            # the seeds the mean is of; a diverged seed is named, as in the plain table
            bad = len(here) - len(ok)
            seeds = ", ".join(
                ([f"{len(ok)} seeds"] if len(ok) > 1 else []) + ([f"{bad} diverged"] if bad and ok else [])
            )
            seeds = f" ({seeds})" if seeds else ""
            cells.append(f"{ours}{seeds} [{theirs}]" if theirs is not None else f"{ours}{seeds}")
        out.append([label, *cells])
    return "\n".join(lines) + "\n\n" + tables.markdown(["model", "params", *cols], out, set(range(1, len(cols) + 2)))


def deviations_text(sources: list[Source], rows: list[dict]) -> str:
    """Under the paper table: how stnexp's paper models and each run's recipe depart from the paper."""
    lines = ["", "How this departs from the paper (docs/paper-protocol.md):", ""]
    pooled = any(r["column"] in paper.POOLED and r["paper_row"] and r["paper_row"].startswith("ST-") for r in rows)
    lines += [f"- {paper.WIDTHS_NOTE}"] + ([f"- {paper.POOL_NOTE}"] if pooled else [])
    for s in sources:
        lines.append(
            f"- {tables.code(s.path)}: "
            + ("; ".join(map(tables.text, paper.deviations(s.cfg, s.trained, s.precision))) or "the paper's protocol")
        )
    return "\n".join(lines) + "\n"


TABLE1_FIGURE = "table1.png"  # report --paper --out DIR: DIR/table1.png and .pdf


def table1_figure(paths: list[Path], out: Path) -> Path:
    """`report --paper --out DIR`: Table 1 as a figure, ours (mean, 95% t-interval over seeds) beside the
    paper's number, a panel per column and a row per model, as in the printed table."""
    from stnexp.results import analysis, pictures

    rows = merged([read(p) for p in paths], True)
    cells = []
    labels = _ordered([r["label"] for r in rows], paper.ROWS)
    for label in labels:
        for column in _ordered([r["column"] for r in rows], list(paper.COLUMNS.values())):
            here = [r for r in rows if r["label"] == label and r["column"] == column and r.get("status", "ok") == "ok"]
            if not here:
                continue
            errors = [r["error"] for r in here]
            interval = analysis.mean_interval(errors)
            cells.append(
                {
                    "label": label,
                    "column": column,
                    "mean": interval[0] if interval else errors[0],
                    "half": interval[1] if interval else None,
                    "seeds": len(errors),
                    "paper": paper.TABLE1.get(here[0]["paper_row"] or "", {}).get(column),
                }
            )
    seeds = sorted({c["seeds"] for c in cells})
    shown = f"{seeds[0]}-{seeds[-1]} seeds" if len(seeds) > 1 else f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''}"
    title = f"test error: ours ({shown}) beside the paper's Table 1"
    try:
        return pictures.table1(cells, Path(out) / TABLE1_FIGURE, title)
    except OSError as e:
        raise UserError(f"--out {out}: not writable ({e.strerror or e})") from None


def sources_text(sources: list[Source]) -> str:
    lines = ["", "Runs:", ""]
    for s in sources:
        seeds = ", ".join(map(str, sorted({r["seed"] for r in s.rows})))
        most = max(s.steps.values()) if s.steps else None
        took = f"{s.trained:,}" if most in (None, s.trained) else f"{s.trained:,}-{min(most, s.iterations):,}"
        done = (
            f"{s.iterations:,} iterations"
            if s.trained is None or s.trained >= s.iterations
            else f"{took} of {s.iterations:,} iterations (interrupted)"
        )
        batch = s.cfg.train.batch_size
        where = f"{tables.text(s.device)}, {tables.text(s.precision)}"  # env.json's: read back, so escaped
        lines.append(f"- {tables.code(s.path)}: {done} of batch {batch}, seeds {seeds}, {where}")
    return "\n".join(lines) + "\n"


def make(paths: list[Path], as_paper: bool) -> str:
    """The report of runs `paths` as Markdown."""
    sources = [read(p) for p in paths]
    rows = merged(sources, as_paper)
    if not rows:
        raise UserError("no results in " + ", ".join(str(p) for p in paths))
    if as_paper:
        body = paper_table(rows) + deviations_text(sources, rows)
    else:
        validated = any(s.cfg.data.val_size > 0 for s in sources)
        title = tables.BEST_TITLE if validated else tables.UNVALIDATED_TITLE
        body = tables.table(rows, lambda r: r["label"], "column", title)
    return body + intervals_text(rows) + across_seeds_text(rows) + sources_text(sources)


def across_seeds_text(rows: list[dict]) -> str:
    """The paired t-test across seeds (analysis.across_seeds) between the rows of each column with 3 or
    more seeds in common: the test for a claim that one recipe beats another."""
    from stnexp.results import analysis

    errors = {(r["column"], int(r["seed"]), r["label"]): r["error"] for r in rows if r.get("status", "ok") == "ok"}
    found = analysis.across_seeds(errors)
    if not found:
        return ""
    return "\n" + analysis.across_seeds_markdown(found) + "\n"


def intervals_text(rows: list[dict]) -> str:
    """The 95% t-interval of the mean test error of every cell with two seeds or more."""
    from stnexp.results import analysis

    lines = []
    for label in dict.fromkeys(r["label"] for r in rows):
        for column in dict.fromkeys(r["column"] for r in rows):
            errors = [
                r["error"]
                for r in rows
                if r["label"] == label and r["column"] == column and r.get("status", "ok") == "ok"
            ]
            got = analysis.mean_interval(errors)
            if got:
                lines.append(f"- {label}, {column}: {got[0]:.2f} ± {got[1]:.2f} ({len(errors)} seeds)")
    return "\n95% intervals of the mean over seeds (t distribution):\n\n" + "\n".join(lines) + "\n" if lines else ""


# ---------------------------------------------------------------- the report as files, Markdown and HTML


MAX_PICTURE = 20 << 20  # the largest PNG a report copies and embeds (report.html holds it as base64)


def pictures_of(path: Path) -> list[Path]:
    """A run's PNGs: training curves, error by the true distortion, then per transformer what it made of
    the digits and how much of their pose it undid, then eval sweeps."""
    files.refuse_links(path)  # embeds only the run's own regular files, never what a link points to
    return [p for kind in A.FIGURES for p in kind.found(path)]


def write_report(
    paths: list[Path], table: str, out: Path, html: bool, markdown: bool = True, figures: tuple[Path, ...] = ()
) -> str:
    """The report of runs `paths` into `out`: report.md (`table`, their merged table from make(), the
    `figures` made of it, then each run's analysis and pictures, copied to out/images/), and with `html`
    report.html, one self-contained file (the pictures embedded) that opens in a browser from disk;
    `markdown=False` writes report.html alone (the end of `train` writes one into the run). Returns the
    Markdown."""
    import shutil

    from stnexp.store import atomic

    parts = [header(paths), table]
    images: list[tuple[str, Path]] = []
    for figure in figures:
        images.append((figure.name, figure))
        parts.append(f"![{figure.name}](images/{figure.name})\n")
    for i, path in enumerate(paths, 1):
        analysis = A.ANALYSIS.file(path, ".md")
        pictures = pictures_of(path)
        if not analysis.is_file() and not pictures:
            continue
        parts.append(f"## Run {i}: {tables.code(path)}\n")
        if analysis.is_file():
            parts.append(analysis.read_text(encoding="utf-8"))
        for picture in pictures:
            size = picture.stat().st_size
            if size > MAX_PICTURE:  # not stnexp's: its figures are well under 1 MB
                parts.append(
                    f"{tables.code(picture.relative_to(path))}: not shown ({size:,} bytes, more than the "
                    f"{MAX_PICTURE:,} a report embeds)\n"
                )
                continue
            name = f"run{i}-" + "-".join(picture.relative_to(path).parts)
            images.append((name, picture))
            parts.append(f"![{picture.relative_to(path)}](images/{name})\n")
    text = "\n".join(parts)
    try:
        if markdown:
            (out / "images").mkdir(parents=True, exist_ok=True)
            for name, picture in images:
                shutil.copyfile(picture, out / "images" / name)
            atomic.write_text(out / "report.md", text)
        if html:
            atomic.write_text(A.REPORT.path(out), page.to_html(text, {f"images/{n}": p for n, p in images}))
    except OSError as e:
        raise UserError(f"--out {out}: not writable ({e.strerror or e})") from None
    return text


def header(paths: list[Path]) -> str:
    """What a report reports: a heading naming the runs, then per run its config, command, versions,
    machine and start (env.json), and when the report was made."""
    import time

    names = ", ".join(tables.code(p.name) for p in paths[:5]) + (
        f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    )
    lines = [f"# stnexp report: {names}", ""]
    for p in paths:
        env = A.read_env(p)
        command = " ".join(map(str, env["command"])) if isinstance(env.get("command"), list) else "?"
        t = tables.text  # env.json is read back from the run: every value of it is escaped
        lines.append(
            f"- {tables.code(p)}: config {tables.code(A.CONFIG.path(p))}; command {tables.code(command)}; "
            f"stnexp {t(env.get('stnexp', '?'))}, torch {t(env.get('torch', '?'))}; "
            f"{t(env.get('device_name') or env.get('device', '?'))} ({t(env.get('precision', '?'))}); "
            f"started {t(env.get('started', '?'))}"
        )
    lines += ["", f"Made {time.strftime('%Y-%m-%d %H:%M:%S%z')}.", ""]
    return "\n".join(lines)
