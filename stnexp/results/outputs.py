"""What a finished run, and an evaluation, write: the test scores of every checkpoint (through the scoring
path of `stnexp eval`), the result tables, the analyses, the figures and the report page. train and eval
both write here; where each file goes is artifacts.py's."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from stnexp import config as C
from stnexp import pose
from stnexp.data import Split
from stnexp.device import running_at
from stnexp.errors import UserError
from stnexp.results import analysis, pictures, report, scoring, tables
from stnexp.store import artifacts as A
from stnexp.store import atomic, evals, runs


@dataclass(frozen=True)
class Trained:
    """What a finished training hands to its outputs: the run's config, its directory, the device its
    models and digits are on (`split`: the digits, reused for the test sets) and its log. Defined here,
    not in training/, so that the outputs depend on nothing above them."""

    cfg: C.Config
    dir: Path
    device: torch.device
    split: Split
    log: logging.Logger


PICTURE_DIGITS = 32
FAILURE_DIGITS = 8  # of them, a row of digits the model classifies wrong


def finish(run: Trained, interrupted: bool) -> list[dict]:
    """The end of `train` in the process that writes: score the checkpoints once, then write each output
    from the scores, in this order, the run's state last. Returns the scored rows (none: Ctrl-C came
    before any epoch ended, and nothing is written). Each step's time goes to train.log (debug)."""
    run.log.info("scoring the checkpoints on the test sets; then the tables and figures")
    with _timed(run.log, "scoring"):
        scores = score(run)
    if interrupted and not scores.rows:
        return scores.rows
    with _timed(run.log, "transformer pictures"):
        write_transformers(run.dir, scores)
    with _timed(run.log, "rectification"):
        rectified, unmeasured = write_rectification(run.dir, scores)
    with _timed(run.log, "analysis"):
        binned = analysis.binned(scores.right, scores.poses)
        paired = analysis.paired_rows(scores.right, scores.errors)
        write_analysis(run.dir, paired, rectified, binned, analysis.across_seeds(scores.errors), unmeasured)
    with _timed(run.log, "invariance figures"):
        write_invariance(run.dir, binned)
    with _timed(run.log, "curves"):
        write_curves(run.dir)
    with _timed(run.log, "tables"):
        write_results(run, scores.rows, interrupted)
    with _timed(run.log, "report page"):
        write_page(run)
    runs.set_state(run.dir, "interrupted" if interrupted else "finished")
    return scores.rows


@contextmanager
def _timed(log: logging.Logger, what: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    log.debug(f"{what}: {time.perf_counter() - t0:.2f}s")


def score(run: Trained) -> scoring.Scores:
    """Every best and last checkpoint on disk, loaded back from the files through the scoring path of
    `stnexp eval` and scored on its own test set, as made for training. Groups without checkpoints
    (interrupted early) are skipped."""
    tests = scoring.TestSets(run.device)
    tests.know(run.cfg.data, run.split)
    paths = [
        path
        for vname in run.cfg.data.variants
        for seed in run.cfg.seeds
        for name in run.cfg.models
        for kind in A.CHECKPOINT_KINDS
        if (path := A.CHECKPOINT.path(run.dir, variant=vname, model=name, seed=seed, kind=kind)).exists()
    ]

    def own(ck: dict, cfg: C.Config) -> list[scoring.TestSet]:
        return [tests.get(cfg, ck["variant"], ck["seed"])]

    return scoring.record(scoring.score(paths, own, run.device))


def write_transformers(run_dir: Path, scores: scoring.Scores) -> None:
    """stn/<variant>/<model>-s<seed>.png: what each transformer made of the first test digits and of the
    first it classifies wrong, drawn at the precision the model trained (and was scored) at."""
    for (variant, seed, name), (model, precision) in scores.transformers.items():
        test = scores.tests[(variant, seed)]
        shown, failures = picked(scores.right[(variant, seed, name)])
        with running_at(precision, test.images.device):
            pictures.transformer(
                model,
                test.images[shown],
                test.labels[shown],
                A.STN.path(run_dir, variant=variant, model=name, seed=seed),
                f"{name}, variant {variant}, seed {seed}",
                failures,
            )


def write_rectification(run_dir: Path, scores: scoring.Scores) -> tuple[list[dict], list[dict]]:
    """How much of each test digit's pose every transformer undid (a row each, for analysis.md), and its
    scatter, rectification/<variant>/<model>-s<seed>.png; and for each transformer where it cannot be
    measured, why."""
    rectified, unmeasured = [], []
    for key, (model, precision) in scores.transformers.items():
        test = scores.tests[key[:2]]
        which = {"variant": key[0], "seed": key[1], "model": key[2]}
        why = analysis.unmeasured(model, test.params)
        if why is not None:
            unmeasured.append({**which, "why": why})
            continue
        with running_at(precision, test.images.device):
            r = analysis.rectification(model, test.images, test.params, test.images.shape[-1])
        rectified.append({**which, **r.row})
        write_scatter(run_dir, key, r, model.stn.transform)
    return rectified, unmeasured


def write_invariance(run_dir: Path, binned: list[dict]) -> None:
    """invariance/<variant>/s<seed>.png: test error by the true distortion of the digits."""
    for variant, seed in dict.fromkeys((b["variant"], b["seed"]) for b in binned):
        mine = [b for b in binned if (b["variant"], b["seed"]) == (variant, seed)]
        pictures.invariance(
            mine,
            A.INVARIANCE.path(run_dir, variant=variant, seed=seed),
            f"test error by the true distortion of the digits: variant {variant}, seed {seed} (best checkpoints)",
        )


def write_results(run: Trained, rows: list[dict], interrupted: bool) -> None:
    """results.md, .csv and .json: every checkpoint's row; the best checkpoints' table in the log too."""
    validated = run.cfg.data.val_size > 0
    md = tables.results_markdown(rows, interrupted, validated)
    tables.write_tables(A.RESULTS.stem(run.dir), rows, md, tables.RESULT_FIELDS)
    run.log.info("\n" + tables.results_markdown([r for r in rows if r["checkpoint"] == "best"], interrupted, validated))


def write_page(run: Trained) -> None:
    """report.html: the run in one page. A page that cannot be made does not fail the run: the tables are
    written, and the log says why."""
    try:
        report.write_report([run.dir], report.make([run.dir], False), run.dir, html=True, markdown=False)
        run.log.info(f"results: {A.RESULTS.path(run.dir)}; all of it in one page: {A.REPORT.path(run.dir)}")
    except UserError as e:
        run.log.warning(f"results: {A.RESULTS.path(run.dir)}; no {A.REPORT.pattern}: {e}")


def picked(right: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Which test digits the transformer picture shows: the first of the test set, then the first ones the
    model classifies wrong (up to a row of them), so that its failures are seen too; and how many of
    those there are."""
    wrong = (~right).nonzero().flatten()[:FAILURE_DIGITS]
    first = [i for i in range(PICTURE_DIGITS) if i not in set(wrong.tolist())][: PICTURE_DIGITS - len(wrong)]
    return torch.cat([torch.tensor(first, dtype=torch.long), wrong.cpu()]), len(wrong)


def write_curves(run_dir: Path) -> None:
    """curves/<variant>/s<seed>.png from metrics.csv (the whole history, a resumed run's too)."""
    history = A.read_metrics(run_dir) or []
    for variant, seed in dict.fromkeys((r["variant"], r["seed"]) for r in history):
        mine = [r for r in history if (r["variant"], r["seed"]) == (variant, seed)]
        pictures.curves(
            mine, A.CURVES.path(run_dir, variant=variant, seed=seed), f"training curves: variant {variant}, seed {seed}"
        )


def write_scatter(run_dir: Path, key: tuple[str, int, str], r: analysis.Rectified, transform: str) -> None:
    """rectification/<variant>/<model>-s<seed>.png: how much of each digit's angle, scale and shift the
    transformer undid, for the parts of the pose that vary and that its family can change."""
    variant, seed, name = key
    parts = [p for p in r.true if pose.BY_RESIDUAL[p].name not in r.row["cannot"] and float(r.true[p].std()) > 1e-6]
    if parts:
        where = ", at conv1" if r.row["at"] == "conv1" else ""
        title = f"what {name} ({transform}{where}) undid of each test digit's pose: variant {variant}, seed {seed}"
        pictures.scatter(
            {p: r.true[p] for p in parts},
            {p: r.undone[p] for p in parts},
            A.RECTIFICATION.path(run_dir, variant=variant, model=name, seed=seed),
            title,
        )


def write_analysis(
    run_dir: Path,
    paired: list[dict],
    rectified: list[dict],
    binned: list[dict],
    seeds: list[dict] | None = None,
    unmeasured: Sequence[dict] = (),
) -> None:
    """analysis.md and .json: McNemar per pair of models, a paired t-test across seeds (3 seeds or more),
    rectification per transformer (and where it is not measured, why), and the error by the true
    distortion."""
    parts = [analysis.paired_markdown(paired)] if paired else []
    if seeds:
        parts.append(analysis.across_seeds_markdown(seeds))
    if rectified:
        parts.append(analysis.rectification_markdown(rectified))
    if unmeasured:
        parts.append(analysis.unmeasured_markdown(unmeasured))
    if binned:
        parts.append(analysis.binned_markdown(binned))
    if parts:
        atomic.write_text(A.ANALYSIS.file(run_dir, ".md"), "\n".join(parts))
        found = {"paired": paired, "across_seeds": seeds or [], "rectification": rectified, "by_distortion": binned}
        if unmeasured:
            found["rectification_not_measured"] = list(unmeasured)
        atomic.write_text(A.ANALYSIS.file(run_dir, ".json"), json.dumps(found, indent=2) + "\n")


def write_eval(target: Path, scores: scoring.Scores, swept: tuple[str, list[float]] | None, index_line: str) -> str:
    """An evaluation's files: `target`.md, .csv and .json, with --sweep its plot, and its line in the
    folder's index. Returns the Markdown table."""
    rows = scores.rows
    md = tables.eval_markdown(rows)
    tables.write_tables(target, rows, md, tables.EVAL_FIELDS)
    if swept:
        pictures.sweep(
            rows,
            swept,
            target.with_name(target.name + ".png"),  # not with_suffix: a name may hold a dot (v1.1)
            f"test error as {swept[0]} is fixed at each value, every model ({target.name})",
        )
    evals.index_eval(target.parent, target.name, f"{time.strftime('%Y-%m-%d %H:%M')}, {index_line}")
    return md
