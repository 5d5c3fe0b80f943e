"""`stnexp eval`: re-score a run's checkpoints (or one checkpoint) on their own test sets, on other or
ad-hoc variants, on an external IDX set, or with one pose parameter swept; each evaluation keeps its
files under its name (outputs.write_eval). The scoring itself is scoring.py's."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from stnexp import config as C
from stnexp import pose
from stnexp.errors import UserError
from stnexp.requests import EvalRequest
from stnexp.results import outputs, tables
from stnexp.results.scoring import Scores, TestSets, read_external, record, score, variant_canvas
from stnexp.store import artifacts as A
from stnexp.store import checkpoints, evals, logs, runs

if TYPE_CHECKING:
    import torch

SWEEP_LIMIT = 1e4  # degrees, factor or px: far beyond any pose a digit can take, and safe in float32


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """`rotation=-180:180:15` -> ('rotation', [-180, -165, ..., 180]): start:stop:step, stop included."""
    key, eq, rng = text.partition("=")
    parts = rng.split(":")
    try:
        start, stop, step = (float(p) for p in parts) if len(parts) == 3 else (None, None, None)
    except ValueError:
        start = None
    finite = start is not None and all(math.isfinite(v) and abs(v) <= SWEEP_LIMIT for v in (start, stop, step))
    if key not in pose.BY_SWEEP or not eq or not finite or step <= 0 or stop < start or (stop - start) / step > 1000:
        raise UserError(
            f"--sweep {C.cut(text)!r}: expected {'|'.join(pose.BY_SWEEP)}=START:STOP:STEP, finite numbers within "
            f"+-{SWEEP_LIMIT:g}, START <= STOP, STEP > 0 and at most 1000 steps (e.g. rotation=-180:180:15)"
        )
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    values = [round(start + i * step, 10) for i in range(count)]
    if pose.BY_SWEEP[key].positive and values[0] <= 0:
        raise UserError(f"--sweep {text!r}: {key} values must be > 0")
    return key, values


def checked(req: EvalRequest) -> EvalRequest:
    """The request with its canvas parsed, or UserError naming the flag that is wrong."""
    if req.checkpoint not in A.CHECKPOINT_KINDS:
        raise UserError(f"--checkpoint: expected best or last, got {req.checkpoint!r}")
    if req.device is not None:
        try:
            C.Config._device(req.device)  # the same rule as the config key
        except ValueError as e:
            raise UserError(f"--device: {e}") from None
    if (req.images is None) != (req.labels is None):
        raise UserError("--images and --labels go together")
    if req.name is not None and not C.NAME.match(req.name):
        raise UserError(f"--name {C.cut(repr(req.name))}: {C.NAME_RULE}")
    return replace(req, canvas=_canvas(req.canvas))


def _canvas(value: str | int | None) -> str | int | None:
    """--canvas: `model` or a side in px."""
    if value is None or value == "model" or (isinstance(value, int) and 8 <= value <= C.MAX_SIDE):
        return value
    if isinstance(value, str) and value.isdigit() and 8 <= int(value) <= C.MAX_SIDE:
        return int(value)
    raise UserError(f"--canvas {value!r}: expected model or a side in px from 8 to {C.MAX_SIDE}")


class Scope(NamedTuple):
    """What one evaluation scores, as evaluate() resolved it: the run, the ad-hoc variants and the sweep."""

    src: Path
    extra: dict
    swept: tuple[str, list[float]] | None


def score_run(req: EvalRequest, scope: Scope, log) -> Scores:
    """`stnexp eval`: re-score the checkpoints of a run directory (or one checkpoint) on their own test
    sets, on the request's variants (of the run, of its --set ones or presets), or on an external set;
    `canvas` renders the variants on that side in px, or on each model's own ("model", and when not given:
    saying so where a variant's own differs). Without a device,
    scoring runs where the run trained (its config's device), so it reproduces the run's own numbers
    exactly; where that device is missing, on the best one here."""
    from stnexp.device import keep_freed_memory

    source, extra, sweep, canvas, variants = scope.src, scope.extra, scope.swept, req.canvas, list(req.variants)
    found = evals.find_checkpoints(source, [req.checkpoint])
    if not found:
        raise UserError(f"{source}: no checkpoints found")
    device = _device(req.device, found[0])
    if isinstance(canvas, int):  # before anything is rendered: a canvas no model takes is refused at once
        for path in found:
            side = checkpoints.load(path)["in_size"]
            if side != canvas:
                raise UserError(
                    f"--canvas {canvas}: {path.name} takes {side}x{side} (--canvas model renders each model's own)"
                )
    keep_freed_memory()
    if req.external is not None:
        ext = read_external(*req.external, device)

        def sets_for(ck, cfg):
            return [ext]
    else:
        tests = TestSets(device)
        said = set()

        def sets_for(ck, cfg):
            # without --canvas, each model's own: a variant drawn on another canvas could not be scored at all
            side = ck["in_size"] if canvas in ("model", None) else canvas
            if sweep is not None:  # each model's own variant, one pose parameter fixed at each value, one at a time
                return (tests.swept(cfg, ck["variant"], ck["seed"], sweep[0], v, side) for v in sweep[1])
            names = variants or list(extra or {}) or [ck["variant"]]
            for name in names:
                own = variant_canvas(cfg, name, extra)
                if canvas is None and own != side and (name, side) not in said:
                    said.add((name, side))
                    log.info(
                        f"--variant {name}: drawn on the {side}x{side} canvas the models of {ck['variant']} take "
                        f"(its own is {own}x{own}; --canvas N picks another)"
                    )
            return [tests.get(cfg, name, ck["seed"], side, extra) for name in names]

    return _scored_with_progress(found, sets_for, device, _sets_each(req, extra, sweep), log)


def _device(asked: str | None, first: Path) -> torch.device:
    """--device, or where the run trained (its config's device, so that its own numbers come back
    exactly), or where that is missing the best one here."""
    from stnexp.device import resolve

    if asked is not None:
        return resolve(asked)
    try:
        return resolve(checkpoints.load(first)["config"]["device"])
    except UserError:
        return resolve("auto")


def _sets_each(req: EvalRequest, extra: dict | None, sweep) -> int:
    """How many test sets each checkpoint is scored on."""
    if sweep is not None:
        return len(sweep[1])
    return 1 if req.external is not None else len(list(req.variants) or list(extra or {})) or 1


def _scored_with_progress(found: list[Path], sets_for, device, each: int, log) -> Scores:
    """The record of score() (scoring.record), with a bar over the test sets (on a terminal) and, after
    each checkpoint, a line with how many are done and the time left at the pace so far: a sweep takes
    minutes a checkpoint."""
    from tqdm import tqdm

    bar = tqdm(total=len(found) * each, desc="eval", unit="set", leave=False, dynamic_ncols=True, disable=None)

    def counted(ck, cfg):
        for test in sets_for(ck, cfg):
            yield test
            bar.update(1)  # score() asks for the next set once this one is scored

    def said(scored):
        t0 = time.perf_counter()
        for i, one in enumerate(scored, 1):
            left = (time.perf_counter() - t0) / i * (len(found) - i)
            log.info(
                f"scored {one.path} ({i}/{len(found)}"
                + (f", about {logs.duration(left)} left)" if i < len(found) else ")")
            )
            yield one

    try:
        return record(said(score(found, counted, device)))
    finally:
        bar.close()


def evaluate(req: EvalRequest, log) -> tuple[str, Path]:
    """`stnexp eval`: score, then keep the table under the evaluation's name (given, or made from what was
    scored) with a line in the folder's index; an existing name only with --force. Returns the table and
    the written files' stem."""
    req = checked(req)
    variants, external, sweep, canvas, which = list(req.variants), req.external, req.sweep, req.canvas, req.checkpoint
    extra = C.variants_from_sets(list(req.sets))
    if external is not None and (variants or extra or canvas is not None or sweep):
        raise UserError(
            "--images/--labels score an external set as it is: no --variant, --set, --canvas or --sweep with them"
        )
    if sweep and (variants or extra):
        raise UserError("--sweep re-distorts each model's own variant: no --variant or --set with it")
    swept = parse_sweep(sweep) if sweep else None
    src = runs.find_run(req.source, log)
    tested_on = (
        [Path(external[0]).name.split(".")[0]] if external else [f"sweep-{sweep}"] if sweep else variants or list(extra)
    )
    label = req.name or evals.eval_name(src, which, tested_on, canvas)
    where = Path(req.out) if req.out is not None else evals.eval_dir(src)
    with evals.claimed_eval(where, label, req.force) as target:  # before the work: a name in use is refused at once
        scores = score_run(req, Scope(src, extra, swept), log)
        on = ", ".join(map(tables.text, tested_on)) or "each model's own variant"  # names of the user's files
        scored = f"{which} checkpoints of {tables.code(src)}" if src.is_dir() else tables.code(src)
        try:
            md = outputs.write_eval(
                target, scores, swept, f"{scored}, on {on}" + (f", canvas {canvas}" if canvas else "")
            )
        except OSError as e:
            raise UserError(f"--out {where}: not writable ({e.strerror or e})") from None
    return md, target
