"""`stnexp runs`: every run under a folder, newest first, with its mean test errors and its status."""

from __future__ import annotations

import statistics
from pathlib import Path

from stnexp import config as C
from stnexp.errors import UserError
from stnexp.results import tables
from stnexp.store import artifacts as A
from stnexp.store import runs

HEAD = ["run", "started", "variants", "models: test error % (best checkpoints, mean over seeds)", "status"]


def runs_table(out: Path) -> str:
    """Every run under `out`, newest first: name, start, variants, models, the best checkpoints' mean
    test error per model and variant, status. A run this version cannot read is left out; a damaged
    results.json is said in its row and hides no other run."""
    found = runs.all_runs(out)
    if not found:
        raise UserError(f"{out}: no stnexp runs found")
    rows = []
    for path in found:
        try:
            cfg = C.load(A.CONFIG.path(path))
        except UserError:
            continue  # not a run this version can read
        started = tables.text(A.read_env(path).get("started", "?"))
        name = tables.text(path.relative_to(out) if path != Path(out) else path)
        variants = ", ".join(cfg.data.variants)
        try:
            results = A.read_results(path) or []
        except UserError:
            damaged = f"damaged: {A.RESULTS.file(path, '.json').name} is not stnexp's"
            rows.append((started, [str(name), started, variants, "-", damaged]))
            continue
        rows.append((started, [str(name), started, variants, _scores(cfg, results), runs.status(path)]))
    rows.sort(key=lambda r: r[0], reverse=True)
    return tables.markdown(HEAD, [cells for _, cells in rows])


def _scores(cfg: C.Config, results: list[dict]) -> str:
    """`cnn 3.39; st-cnn 1.06`: each model's mean test error over seeds of its best checkpoints, per
    variant where the run has several."""
    best = [r for r in results if r["checkpoint"] == "best" and r.get("status", "ok") == "ok"]
    scores = []
    for m in cfg.models:
        per = []
        for v in cfg.data.variants:
            errs = [r["error"] for r in best if r.get("model") == m and r.get("variant") == v]
            if errs:
                mean = f"{statistics.mean(errs):.2f}"
                per.append(mean if len(cfg.data.variants) == 1 else f"{v} {mean}")
        scores.append(f"{m} {' / '.join(per) if per else '-'}")
    return "; ".join(scores)
