"""`stnexp eval`: re-score a run's checkpoints (or one checkpoint) on their own test sets, on other or
ad-hoc variants, on an external IDX set, or with one pose parameter swept; each evaluation keeps its
files under its name (outputs.write_eval). The scoring itself is scoring.py's."""

from __future__ import annotations

import math
from pathlib import Path

from stnexp import checkpoints, config as C, outputs, pose, runs
from stnexp.errors import UserError
from stnexp.scoring import TestSets, read_external, score


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
        raise UserError(f"--sweep {C._cut(text)!r}: expected {'|'.join(pose.BY_SWEEP)}=START:STOP:STEP, finite numbers within "
                        f"+-{SWEEP_LIMIT:g}, START <= STOP, STEP > 0 and at most 1000 steps (e.g. rotation=-180:180:15)")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    values = [round(start + i * step, 10) for i in range(count)]
    if pose.BY_SWEEP[key].positive and values[0] <= 0:
        raise UserError(f"--sweep {text!r}: {key} values must be > 0")
    return key, values


def score_run(source: Path, variants: list[str], external: tuple[Path, Path] | None, which: list[str], device: str | None, log,
              canvas: str | int | None = None, extra: dict | None = None, sweep: tuple[str, list[float]] | None = None) -> list[dict]:
    """`stnexp eval`: re-score the checkpoints of a run directory (or one checkpoint) on their own test
    sets, on `variants` (of the run, of `extra` or presets), or on an external set; `canvas` renders the
    variants on that side in px, or on each model's own ("model"). Without `device`, scoring runs where
    the run trained (its config's device), so it reproduces the run's own numbers exactly; where that
    device is missing, on the best one here."""
    from stnexp.device import keep_freed_memory, resolve

    found = runs.find_checkpoints(source, which)
    if not found:
        raise UserError(f"{source}: no checkpoints found")
    if device is None:
        try:
            device = resolve(checkpoints.load(found[0])["config"]["device"])
        except UserError:
            device = resolve("auto")
    else:
        device = resolve(device)
    if isinstance(canvas, int):  # before anything is rendered: a canvas no model takes is refused at once
        for path in found:
            side = checkpoints.load(path)["in_size"]
            if side != canvas:
                raise UserError(f"--canvas {canvas}: {path.name} takes {side}x{side} (--canvas model renders each model's own)")
    keep_freed_memory()
    if external is not None:
        ext = read_external(*external, device)

        def sets_for(ck, cfg):
            return [ext]
    else:
        tests = TestSets(device)

        def sets_for(ck, cfg):
            side = ck["in_size"] if canvas == "model" else canvas
            if sweep is not None:  # each model's own variant, one pose parameter fixed at each value, one at a time
                return (tests.swept(cfg, ck["variant"], ck["seed"], sweep[0], v, side) for v in sweep[1])
            return [tests.get(cfg, name, ck["seed"], side, extra) for name in variants or list(extra or {}) or [ck["variant"]]]

    rows = []
    for scored in score(found, sets_for, device):
        rows += scored.rows
        log.info(f"scored {scored.path}")
    return rows


def evaluate(source: Path, variants: list[str], external: tuple[Path, Path] | None, which: str, canvas: str | int | None,
             sets: list[str], name: str | None, force: bool, out: Path | None, device: str | None, log,
             sweep: str | None = None) -> tuple[str, Path]:
    """`stnexp eval`: score, then keep the table under the evaluation's name (given, or made from what was
    scored) with a line in the folder's index; an existing name only with `force`. Returns the table and
    the written files' stem."""
    extra = C.variants_from_sets(sets)
    if external is not None and (variants or extra or canvas is not None or sweep):
        raise UserError("--images/--labels score an external set as it is: no --variant, --set, --canvas or --sweep with them")
    if sweep and (variants or extra):
        raise UserError("--sweep re-distorts each model's own variant: no --variant or --set with it")
    swept = parse_sweep(sweep) if sweep else None
    src = runs.find_run(source, log)
    tested_on = [Path(external[0]).name.split(".")[0]] if external else [f"sweep-{sweep}"] if sweep else variants or list(extra)
    label = name or runs.eval_name(src, which, tested_on, canvas)
    where = Path(out) if out is not None else runs.eval_dir(src)
    with runs.claimed_eval(where, label, force) as target:  # before the work: a name in use is refused at once
        rows = score_run(src, variants, external, [which], device, log, canvas, extra, swept)
        on = ", ".join(tested_on) or "each model's own variant"
        scored = f"{which} checkpoints of {src}" if src.is_dir() else str(src)
        try:
            md = outputs.write_eval(target, rows, swept, f"{scored}, on {on}" + (f", canvas {canvas}" if canvas else ""))
        except OSError as e:
            raise UserError(f"--out {where}: not writable ({e.strerror or e})") from None
    return md, target
