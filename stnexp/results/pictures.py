"""Figures, drawn with matplotlib (the Agg backend: no display needed; imported when a figure is made, so
that `stnexp --help` stays fast): training curves, error by the true distortion, what a transformer undid,
eval sweeps, sweep tables, Table 1 beside the paper, and digits beside their distorted or transformed
versions. Every figure is written twice, as PNG (the path given: for report.html and quick looks) and as
PDF beside it (vector, for papers); sizes fit a paper's column (3.5 in) or its width (7 in)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from stnexp import geometry, pose

PAIRS_PER_ROW = 8
ZOOM = 2  # digit pixels per figure pixel at the PNG's resolution: the digits stay sharp
VECTOR = ".pdf"  # the vector copy of every figure, beside its PNG
COLUMN, WIDE = 3.5, 7.0  # inches: one column of a two-column paper, and its whole width
DPI = 200
# Okabe and Ito's colour-blind-safe palette; a model keeps its colour in every figure of a run (the
# figures list models in the config's order)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
UNITS = pose.UNITS
BOX = "#E69F00"  # the transformer's sampling box on its input: orange reads on black and on white ink
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 3,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}  # TrueType in the PDF: text stays text


def vector(path: Path) -> Path:
    """The PDF that goes with a figure's PNG."""
    return Path(path).with_suffix(VECTOR)


def pyplot():
    """matplotlib and its pyplot on the Agg backend, imported on first use (about 0.3 s on a 2-core CPU;
    a training imports it in a thread during its first epoch, so that its figures do not wait)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return matplotlib, plt


@contextmanager
def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kw):
    """A figure in stnexp's style with its axes (a list), saved by _save and always closed."""
    matplotlib, plt = pyplot()
    with matplotlib.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
        try:
            yield fig, list(axes.flat)
        finally:
            plt.close(fig)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.savefig(vector(path))
    return path


def _colours(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


def _legend_below(fig, axes, ncol: int = 4) -> None:
    """One legend for the figure, below its axes (outside the data)."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=min(ncol, len(labels)), frameon=False, bbox_to_anchor=(0.5, -0.02)
        )
        fig.tight_layout(rect=(0, 0.1 + 0.04 * ((len(labels) - 1) // ncol), 1, 1))


# ---------------------------------------------------------------- digits


def to_canvas(images: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (centred) or resize N x 1 x h x w images to size x size so that pairs line up in one grid."""
    h = images.shape[-1]
    if h == size:
        return images
    if h < size:
        lo = (size - h) // 2
        return F.pad(images, (lo, size - h - lo, lo, size - h - lo))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def outline(grid: torch.Tensor, side: int) -> torch.Tensor:
    """The border of sampling grids (N x H x W x 2, [-1, 1] coordinates) as closed polygons in the pixel
    coordinates of the side x side images they sample (N x K x 2, x then y; pixel centres at integers):
    the quadrilateral (or, for a thin-plate spline, the curved outline) the transformer reads."""
    g = grid.float().cpu()
    ring = torch.cat([g[:, 0, :], g[:, 1:, -1], g[:, -1, :-1].flip(1), g[:, :-1, 0].flip(1)], 1)
    return ((ring + 1) * side - 1) / 2  # geometry.ALIGN_CORNERS is False: -1 and 1 are the pixels' outer edges


def _placed(points: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """Pixel coordinates in a side x side image moved to where to_canvas puts that image on size x size."""
    if side <= size:
        return points + (size - side) // 2
    return (points + 0.5) * size / side - 0.5


def _pair_grid(left: torch.Tensor, right: torch.Tensor, rows: int, line: int, cell_w: int, cell_h: int) -> torch.Tensor:
    """The pairs as one grey image: left and right of a pair parted by a grey line, white around them."""
    size = left.shape[-1]
    grid = torch.ones(rows * cell_h, PAIRS_PER_ROW * cell_w)
    for i in range(len(left)):
        r, c = divmod(i, PAIRS_PER_ROW)
        y, x = r * cell_h, c * cell_w
        grid[y : y + size, x : x + size] = left[i, 0]
        grid[y : y + size, x + size : x + size + line] = 0.5
        grid[y : y + size, x + size + line : x + 2 * size + line] = right[i, 0]
    return grid


def pairs(
    left: torch.Tensor,
    right: torch.Tensor,
    path: Path,
    title: str,
    captions: list[tuple[str, bool]] | None = None,
    boxes: torch.Tensor | None = None,
) -> Path:
    """(left, right) pairs side by side, 8 pairs a row, under `title` (what the two are); with `captions`
    a short text under each pair (red where it is False); with `boxes` (outline's polygons, in the left
    images' pixels) a line on each left image, clipped to it. One image of the whole grid in one axes: a
    figure of 32 small axes took twice as long to draw and to write as PDF."""
    from matplotlib.patches import Rectangle

    side = left.shape[-1]
    size = max(side, right.shape[-1])
    left, right = (to_canvas(t.float().cpu(), size).clamp(0, 1) for t in (left, right))
    rows = -(-len(left) // PAIRS_PER_ROW)
    line, gap = max(1, size // 14), max(2, size // 7)  # between the two of a pair; between pairs
    below = size // 3 if captions else 0  # room under each pair for its caption
    cell_w, cell_h = 2 * size + line + gap, size + below + gap
    grid = _pair_grid(left, right, rows, line, cell_w, cell_h)
    width, height = grid.shape[1] * ZOOM / DPI, grid.shape[0] * ZOOM / DPI
    with _figure(width, height + 0.3) as (fig, (ax,)):
        fig.subplots_adjust(left=0, right=1, bottom=0, top=height / (height + 0.3))  # the grid at its own scale
        ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.autoscale(False)
        ax.axis("off")
        for i, poly in enumerate([] if boxes is None else _placed(boxes, side, size)):
            r, c = divmod(i, PAIRS_PER_ROW)
            y, x = r * cell_h, c * cell_w
            (drawn,) = ax.plot(x + poly[:, 0].numpy(), y + poly[:, 1].numpy(), color=BOX, lw=0.6)
            drawn.set_clip_path(Rectangle((x - 0.5, y - 0.5), size, size, transform=ax.transData))
        for i, (text, good) in enumerate(captions or []):
            r, c = divmod(i, PAIRS_PER_ROW)
            ax.text(
                c * cell_w + size + line / 2,
                r * cell_h + size + below / 2,
                text,
                fontsize=5,
                ha="center",
                va="center",
                color="#000000" if good else "#D55E00",
            )
        ax.set_title(title, fontsize=8)
        return _save(fig, path)


@torch.no_grad()
def transformer(model, x: torch.Tensor, labels: torch.Tensor, path: Path, which: str = "", failures: int = 0) -> Path:
    """Test digits beside what a model's spatial transformer made of them (at conv1: its transform
    applied to the image), the region it samples outlined on each digit, each pair captioned with the
    predicted and the true class; `which` names the model, variant and seed in the title, and `failures`
    says that the last that many digits were picked as ones the model classifies wrong."""
    model.eval()
    predicted = model(x).argmax(1).tolist()
    captions = [(f"{p} (true {t})", p == t) for p, t in zip(predicted, labels.tolist())]
    what = "feature maps after conv1 (its transform shown on the image)" if model.at == "conv1" else "the image"
    title = "\n".join(
        ([which] if which else [])
        + [
            f"each pair: a test digit | what the transformer made of it (it warps {what})",
            "orange: the region it samples; under each pair: predicted (true), red when wrong"
            + (f"; last {failures}: the first digits it gets wrong" if failures else ""),
        ]
    )
    grid = model.sampling_grid(x)
    return pairs(x, geometry.sample(x, grid), path, title, captions, outline(grid, x.shape[-1]))


# ---------------------------------------------------------------- plots


def curves(rows: list[dict], path: Path, title: str) -> Path:
    """Training curves of the models of one (variant, seed) from metrics.csv rows: the training loss per
    epoch, and the training (dashed) and validation (solid) accuracy, a colour per model."""
    colour = _colours([r["model"] for r in rows])

    def series(name, key):
        got = [(int(r["epoch"]), float(r[key])) for r in rows if r["model"] == name and r.get(key) not in (None, "")]
        return [e for e, _ in got], [v for _, v in got]

    with _figure(WIDE, 2.6, 2) as (fig, (loss, acc)):
        for name, c in colour.items():
            loss.plot(*series(name, "train_loss"), color=c, marker="o", label=name)
            epochs, values = series(name, "train_acc")
            acc.plot(epochs, [100 * v for v in values], color=c, linestyle="--", linewidth=1)
            epochs, values = series(name, "val_acc")
            acc.plot(epochs, [100 * v for v in values], color=c, marker="o")
        loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
        acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy: training (dashed), validation (solid)")
        for ax in (loss, acc):
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.suptitle(title)
        _legend_below(fig, [loss])
        return _save(fig, path)


def sweep(rows: list[dict], swept: tuple[str, list[float]], path: Path, title: str) -> Path:
    """Test error against the fixed value of a pose parameter (`eval --sweep`), a line per model."""
    key, _ = swept
    label = lambda r: f"{r['model']} (trained on {r['variant']})"  # noqa: E731
    colour = _colours([label(r) for r in rows])
    with _figure(COLUMN * 1.6, 2.6) as (fig, (ax,)):
        for name, c in colour.items():
            mine = [r for r in rows if label(r) == name]
            ax.plot(
                [float(r["tested_on"].split("=", 1)[1]) for r in mine],
                [float(r["error"]) for r in mine],
                color=c,
                marker="o",
                label=name,
            )
        ax.set(xlabel=f"{key} fixed at ({UNITS.get(key, '')})", ylabel="test error (%)", title=title)
        ax.set_ylim(bottom=0)
        _legend_below(fig, [ax], ncol=2)
        return _save(fig, path)


SCATTER_NAMES = {pose.SHIFT.residual: "shift (x and y)"}
SCATTER_UNITS = {pose.SCALE.residual: "log", pose.SHIFT.residual: "px"}  # short: three panels share 7 in
SCATTER_POINTS = 10000  # every test digit of a 10k test set, as a density


def scatter(true: dict[str, torch.Tensor], undone: dict[str, torch.Tensor], path: Path, title: str) -> Path:
    """Per pose part (angle, log scale, shift) a panel: each test digit's true distortion (x) against how
    much of it the transformer undid (y), both about their means, as a density on one colour scale (the
    shift's x and y components pooled: two points a digit). On the diagonal the transformer undoes it
    all; on the horizontal line, none of it."""
    from matplotlib.colors import LogNorm

    parts = list(true)
    arts = []
    with _figure(WIDE if len(parts) > 1 else COLUMN, 2.8, len(parts), layout="constrained") as (fig, axes):
        for ax, part in zip(axes, parts):
            x, y = (
                values[part][: SCATTER_POINTS * (2 if part == pose.SHIFT.residual else 1)].double().cpu().numpy()
                for values in (true, undone)
            )
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            hi = hi if hi > lo else lo + 1e-6
            kw = {"gridsize": 40, "extent": (lo, hi, lo, hi), "mincnt": 1, "cmap": "viridis", "linewidths": 0}
            arts.append(ax.hexbin(x, y, norm=LogNorm(), **kw))
            ax.plot([lo, hi], [lo, hi], color="#D55E00", linewidth=1, label="undoes all of it")
            ax.plot([lo, hi], [0, 0], color="#000000", linewidth=1, linestyle="--", label="undoes none of it")
            pad = 0.04 * (hi - lo)  # the hexagons at the edges drawn whole
            unit = SCATTER_UNITS.get(part, UNITS[part])
            ax.set(
                xlim=(lo - pad, hi + pad),
                ylim=(lo - pad, hi + pad),
                aspect="equal",
                title=SCATTER_NAMES.get(part, part.replace("_", " ")),
                xlabel=f"true, about the mean ({unit})",
                ylabel=f"undone ({unit})",
            )
        most = max(float(a.get_array().max()) for a in arts)
        for a in arts:
            a.set_clim(1, max(most, 2))
        fig.colorbar(arts[0], ax=axes, label="test digits per cell", shrink=0.9)
        axes[0].legend(loc="upper left", fontsize=6)
        fig.suptitle(title)
        return _save(fig, path)


def invariance(rows: list[dict], path: Path, title: str) -> Path:
    """Test error against the true distortion (analysis.binned rows of one variant and seed): a panel per
    pose part, a line per model through the bins' centres with each bin's 95% interval, bins of few
    digits drawn hollow and their count written beside them."""
    from stnexp.results.analysis import FEW_DIGITS

    parts = list(dict.fromkeys(r["by"] for r in rows))
    colour = _colours([r["model"] for r in rows])
    few = False
    with _figure(WIDE if len(parts) > 1 else COLUMN, 2.6, len(parts)) as (fig, axes):
        for ax, part in zip(axes, parts):
            top = 0.0  # the highest error, or interval of a bin of enough digits: few digits' bars may run off
            for k, (name, c) in enumerate(colour.items()):
                for r in (r for r in rows if r["by"] == part and r["model"] == name):
                    edges, width = r["edges"], r["edges"][1] - r["edges"][0]
                    bins = [i for i, e in enumerate(r["error"]) if e is not None]
                    # the models side by side within a bin, so that their intervals do not hide each other
                    x = [(edges[i] + edges[i + 1]) / 2 + width * 0.06 * (k - (len(colour) - 1) / 2) for i in bins]
                    y = [r["error"][i] for i in bins]
                    ax.plot(x, y, color=c, marker="o", label=name)
                    top = max([top, *y])
                    if r.get("interval"):
                        lo = [y_ - r["interval"][i][0] for i, y_ in zip(bins, y)]
                        hi = [r["interval"][i][1] - y_ for i, y_ in zip(bins, y)]
                        ax.errorbar(x, y, yerr=[lo, hi], color=c, linestyle="none", capsize=1.5, linewidth=0.8)
                        top = max([top, *(r["interval"][i][1] for i in bins if r["n"][i] >= FEW_DIGITS)])
                    for xi, yi, i in zip(x, y, bins):
                        if r["n"][i] < FEW_DIGITS:
                            few = True
                            ax.plot([xi], [yi], marker="o", color="white", markeredgecolor=c, zorder=3)
                            if k == 0:
                                ax.annotate(
                                    f"{r['n'][i]}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6
                                )
            ax.set_xticks(r["edges"])
            ax.set(xlabel=f"true {part.replace('_', ' ')} ({UNITS[part]})", ylabel="test error (%)", title=f"by {part}")
            ax.set_ylim(0, 1.15 * top if top > 0 else 1)
        note = f"; hollow: a bin of under {FEW_DIGITS} digits (their count beside it)"
        fig.suptitle(title + "\nbars: 95% intervals" + (note if few else ""))
        _legend_below(fig, axes)
        return _save(fig, path)


def table1(cells: list[dict], path: Path, title: str) -> Path:
    """Table 1 as a figure: a panel per column, a row per model, our mean test error with its 95%
    interval over seeds (a dot alone for one seed) beside the paper's number (a black cross). `cells`:
    {label, column, mean, half (or None), seeds, paper (or None)}."""
    columns = list(dict.fromkeys(c["column"] for c in cells))
    labels = list(dict.fromkeys(c["label"] for c in cells))
    with _figure(WIDE, 1.4 + 0.25 * len(labels), len(columns), sharey=True) as (fig, axes):
        for ax, column in zip(axes, columns):
            for c in (c for c in cells if c["column"] == column):
                y = labels.index(c["label"])
                ax.errorbar(
                    c["mean"],
                    y,
                    xerr=c["half"] if c["half"] else None,
                    fmt="o",
                    color=PALETTE[0],
                    capsize=2,
                    label="ours: mean, 95% interval over seeds",
                )
                if c["paper"] is not None:
                    ax.plot(c["paper"], y, "x", color="#000000", markersize=5, label="the paper")
            ax.set(title=column, xlabel="test error (%)")
            ax.set_xlim(left=0)
        axes[0].set_yticks(range(len(labels)), labels)
        axes[0].set_ylim(len(labels) - 0.5, -0.5)  # the first row on top, half a row of room around each
        fig.suptitle(title)
        handles = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=2,
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return _save(fig, path)


def sweep_table(rows: list[dict], keys: list[str], path: Path, title: str) -> Path:
    """A sweep's mean best validation accuracy (%) per child and model (sweep_table.rows; the mean over its
    variants): for two swept keys a heat map per model (the first key down, the second across), else a
    line per model across the children."""
    import math
    import statistics

    models = list(dict.fromkeys(r["model"] for r in rows))
    runs = {r["run"]: r for r in rows}  # each child's swept values
    acc = {}
    for run in runs:
        for model in models:
            vals = [r["val_acc"] for r in rows if r["run"] == run and r["model"] == model and r["val_acc"] is not None]
            acc[(run, model)] = 100 * statistics.mean(vals) if vals else math.nan
    if len(keys) == 2:
        return _sweep_heat_maps(acc, runs, models, keys, path, title)
    colour = _colours(models)
    names = [", ".join(str(r[k]) for k in keys) for r in runs.values()]
    with _figure(COLUMN * 1.6, 2.6) as (fig, (ax,)):
        for model in models:
            ax.plot(range(len(runs)), [acc[(run, model)] for run in runs], color=colour[model], marker="o", label=model)
        ax.set_xticks(
            range(len(runs)), names, rotation=30 if len(runs) > 4 else 0, ha="right" if len(runs) > 4 else "center"
        )
        ax.set(xlabel=", ".join(keys), ylabel="validation accuracy (%)", title=title)
        _legend_below(fig, [ax])
        return _save(fig, path)


def _sweep_heat_maps(acc: dict, runs: dict, models: list[str], keys: list[str], path: Path, title: str) -> Path:
    """Two swept keys: a heat map per model, the first key down, the second across."""
    import math

    down, across = (list(dict.fromkeys(str(r[k]) for r in runs.values())) for k in keys)
    child = {(str(r[keys[0]]), str(r[keys[1]])): run for run, r in runs.items()}
    with _figure(min(WIDE, 0.8 + 2.8 * len(models)), 1.4 + 0.3 * len(down), len(models)) as (fig, axes):
        for ax, model in zip(axes, models):
            grid = [[acc.get((child.get((a, b)), model), math.nan) for b in across] for a in down]
            finite = [v for line in grid for v in line if not math.isnan(v)] or [0.0]
            middle = (max(finite) + min(finite)) / 2
            art = ax.imshow(grid, cmap="viridis", aspect="auto")
            for i, line in enumerate(grid):
                for j, v in enumerate(line):
                    ax.text(
                        j,
                        i,
                        "-" if math.isnan(v) else f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="#FFFFFF" if v < middle else "#000000",
                    )
            ax.set_xticks(range(len(across)), across, rotation=30, ha="right")
            ax.set_yticks(range(len(down)), down)
            ax.set(xlabel=keys[1], ylabel=keys[0], title=model)
            ax.grid(False)
            fig.colorbar(art, ax=ax, label="validation accuracy (%)", shrink=0.8)
        fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path)
