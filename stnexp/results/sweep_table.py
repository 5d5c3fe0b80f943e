"""A sweep's table (sweep.md, .csv, .json and .png): one row per child, model and variant, read from the
children's results and metrics; each model's best child chosen on validation accuracy, never on test."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from stnexp.errors import UserError
from stnexp.results import tables
from stnexp.store import artifacts as A
from stnexp.store import atomic


def write(parent: Path, keys: list[str], children: list[tuple[str, dict[str, str]]]) -> None:
    table = rows(parent, keys, children)
    fields = keys + ["run", "model", "variant", "seeds", "error_mean", "error_std", "val_acc", "best"]
    atomic.write_text(
        A.SWEEP_TABLE.file(parent, ".md"), markdown(table, keys) if table else "No child run has finished yet.\n"
    )
    atomic.write_text(A.SWEEP_TABLE.file(parent, ".csv"), tables.to_csv(table, fields))
    atomic.write_text(A.SWEEP_TABLE.file(parent, ".json"), json.dumps(table, indent=2) + "\n")
    if table:
        from stnexp.results import pictures

        pictures.sweep_table(
            table,
            keys,
            A.SWEEP_TABLE.file(parent, ".png"),
            f"best validation accuracy of each model by {' and '.join(keys)}",
        )


def rows(parent: Path, keys: list[str], children: list[tuple[str, dict[str, str]]]) -> list[dict]:
    """One row per (child, model, variant): the swept values, test error mean and std over seeds (best
    checkpoints), seeds, the mean best validation accuracy; `best` marks each model's child with the
    highest mean validation accuracy over its variants (chosen on validation, not on test)."""
    out = []
    for name, values in children:
        try:
            results = [r for r in A.read_results(parent / name) or [] if r["checkpoint"] == "best"]
        except UserError:
            continue
        val = _best_val(parent / name)
        for model in dict.fromkeys(r["model"] for r in results):
            for variant in dict.fromkeys(r["variant"] for r in results):
                mine = [
                    r
                    for r in results
                    if r["model"] == model and r["variant"] == variant and r.get("status", "ok") == "ok"
                ]
                errors = [r["error"] for r in mine]
                vals = [val[(variant, str(r["seed"]), model)] for r in mine if (variant, str(r["seed"]), model) in val]
                out.append(
                    {
                        **values,
                        "run": name,
                        "model": model,
                        "variant": variant,
                        "seeds": len(errors),
                        "error_mean": round(statistics.mean(errors), 4) if errors else None,
                        "error_std": round(statistics.stdev(errors), 4) if len(errors) > 1 else None,
                        "val_acc": round(statistics.mean(vals), 6) if vals else None,
                        "best": False,
                    }
                )
    for model in dict.fromkeys(r["model"] for r in out):
        score = {}
        for r in out:
            if r["model"] == model and r["val_acc"] is not None:
                score.setdefault(r["run"], []).append(r["val_acc"])
        if score:
            winner = max(score, key=lambda run: statistics.mean(score[run]))
            for r in out:
                r["best"] = r["best"] or (r["model"] == model and r["run"] == winner)
    return out


def markdown(table: list[dict], keys: list[str]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in table))
    lines = [
        "**Sweep** (test error %, best checkpoints, mean ± std over seeds; `best`: each model's highest mean "
        "validation accuracy)",
        "",
    ]
    cells_of = []
    for run in dict.fromkeys(r["run"] for r in table):
        for model in dict.fromkeys(r["model"] for r in table if r["run"] == run):
            mine = {r["variant"]: r for r in table if r["run"] == run and r["model"] == model}
            first = next(iter(mine.values()))
            cells = []
            for v in variants:
                r = mine.get(v)
                if r is None or r["error_mean"] is None:
                    cells.append("-")
                else:
                    cells.append(tables.mean_std(r["error_mean"], r["error_std"]))
            vals = [r["val_acc"] for r in mine.values() if r["val_acc"] is not None]
            val = f"{100 * statistics.mean(vals):.2f}" if vals else "-"
            swept = [tables.text(first[k]) for k in keys]  # the user's values, as they read
            cells_of.append(swept + [model] + cells + [val, "best" if first["best"] else ""])
    head = keys + ["model"] + variants + ["val acc %", "best"]
    right = set(range(len(keys) + 1, len(keys) + len(variants) + 2))
    return "\n".join(lines) + "\n" + tables.markdown(head, cells_of, right)


def _best_val(child: Path) -> dict[tuple[str, str, str], float]:
    """The best validation accuracy of each (variant, seed, model) of a child run, from metrics.csv."""
    best: dict[tuple[str, str, str], float] = {}
    try:
        for r in A.read_metrics(child) or []:
            if r.get("val_acc"):
                key = (r["variant"], r["seed"], r["model"])
                best[key] = max(best.get(key, 0.0), float(r["val_acc"]))
    except (KeyError, ValueError, TypeError):
        pass
    return best
