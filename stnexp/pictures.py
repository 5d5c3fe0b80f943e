"""Pictures: distorted digits beside their originals (preview), and test digits beside what a spatial
transformer made of them, labelled so that a reader knows which is which."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

PAIRS_PER_ROW = 8
ZOOM = 2  # pixels per digit pixel


def to_canvas(images: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (centred) or resize N x 1 x h x w images to size x size so that pairs line up in one grid."""
    h = images.shape[-1]
    if h == size:
        return images
    if h < size:
        lo = (size - h) // 2
        return F.pad(images, (lo, size - h - lo, lo, size - h - lo))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def pairs(left: torch.Tensor, right: torch.Tensor, path: Path, title: str, captions: list[tuple[str, bool]] | None = None) -> Path:
    """Save (left, right) pairs side by side, 8 pairs a row, upscaled ZOOM times, under a one-line `title`
    that says what the two are; with `captions` a short text under each pair (red where it is False)."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(left.shape[-1], right.shape[-1])
    left, right = (to_canvas(t.float().cpu(), size).clamp(0, 1).mul(255).round().to(torch.uint8) for t in (left, right))
    cell, gap = size * ZOOM, 4
    caption_h = 12 if captions else 0
    head = 16
    rows = -(-len(left) // PAIRS_PER_ROW)
    pair = 2 * cell + 2  # two tiles with a thin line between them
    image = Image.new("RGB", (gap + PAIRS_PER_ROW * (pair + gap), head + rows * (cell + caption_h + gap) + gap), (96, 96, 96))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((gap, 2), title, fill=(255, 255, 255), font=font)
    for i in range(len(left)):
        r, c = divmod(i, PAIRS_PER_ROW)
        x0, y0 = gap + c * (pair + gap), head + gap + r * (cell + caption_h + gap)
        for k, tile in enumerate((left[i, 0], right[i, 0])):
            digit = Image.fromarray(tile.numpy(), mode="L").resize((cell, cell), Image.NEAREST)
            image.paste(digit, (x0 + k * (cell + 2), y0))
        if captions:
            text, good = captions[i]
            draw.text((x0 + 2, y0 + cell), text, fill=(255, 255, 255) if good else (255, 90, 90), font=font)
    return _save(image, path)


@torch.no_grad()
def transformer(model, x: torch.Tensor, labels: torch.Tensor, path: Path) -> Path:
    """Test digits beside what a model's spatial transformer made of them (at conv1: its transform
    applied to the image), each pair captioned with the predicted and the true class."""
    model.eval()
    predicted = model(x).argmax(1).tolist()
    captions = [(f"predicted {p}, true {t}", p == t) for p, t in zip(predicted, labels.tolist())]
    what = "feature maps after conv1 (its transform shown on the image)" if model.at == "conv1" else "the image"
    title = f"each pair: a test digit | what the transformer made of it; it warps {what}"
    return pairs(x, model.transformed_images(x), path, title, captions)


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _canvas(width: int, height: int, title: str):
    """A white picture with `title` on top, its draw and its font."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((8, 6), title, fill=(0, 0, 0), font=font)
    return image, draw, font


def _save(image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _frame(draw, font, box: tuple[int, int, int, int], y_text: tuple[str, str], x_text: tuple[str, str], gutter: int) -> None:
    """A plot's frame: its top and bottom values in the `gutter` px to its left, its first and last x below."""
    x0, y0, w, h = box
    black = (0, 0, 0)
    draw.rectangle((x0, y0, x0 + w, y0 + h), outline=black)
    draw.text((x0 - gutter + 2, y0), y_text[0], fill=black, font=font)
    draw.text((x0 - gutter + 2, y0 + h - 10), y_text[1], fill=black, font=font)
    draw.text((x0, y0 + h + 2), x_text[0], fill=black, font=font)
    draw.text((x0 + w - 6 * len(x_text[1]), y0 + h + 2), x_text[1], fill=black, font=font)


def _legend(draw, font, names: list[str], x: int, y: int) -> None:
    """A colour swatch and a name per line, in PALETTE order."""
    for i, name in enumerate(names):
        draw.rectangle((x, y + 12 * i + 3, x + 14, y + 12 * i + 7), fill=PALETTE[i % len(PALETTE)])
        draw.text((x + 20, y + 12 * i), name, fill=(0, 0, 0), font=font)


def curves(rows: list[dict], path: Path, title: str) -> Path:
    """Training curves of the models of one (variant, seed) from metrics.csv rows: on the left the training
    loss per epoch, on the right the training (thin) and validation (thick) accuracy, a colour per model."""
    names = list(dict.fromkeys(r["model"] for r in rows))
    w, h, margin, head = 420, 260, 44, 34
    image, draw, font = _canvas(2 * w + 3 * margin, h + head + 2 * margin + 12 * len(names), title)
    epochs = [int(r["epoch"]) for r in rows]
    e_lo, e_hi = min(epochs), max(max(epochs), min(epochs) + 1)

    def panel(x0: int, label: str, series: list[tuple[str, int]]) -> None:
        """One framed plot of the columns `series` (metrics key, line width), every model."""
        values = [float(r[key]) for r in rows for key, _ in series if r.get(key) not in (None, "")]
        if not values:
            return
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1e-6
        y0 = head + margin // 2
        draw.text((x0, y0 - 14), label, fill=(0, 0, 0), font=font)
        _frame(draw, font, (x0, y0, w, h), (f"{hi:.3g}", f"{lo:.3g}"), (f"epoch {e_lo}", f"epoch {e_hi}"), margin)
        for i, name in enumerate(names):
            mine = [r for r in rows if r["model"] == name]
            for key, width in series:
                pts = [(x0 + w * (int(r["epoch"]) - e_lo) / (e_hi - e_lo), y0 + h - h * (float(r[key]) - lo) / (hi - lo))
                       for r in mine if r.get(key) not in (None, "")]
                if len(pts) == 1:
                    draw.ellipse((pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2), fill=PALETTE[i % len(PALETTE)])
                elif pts:
                    draw.line(pts, fill=PALETTE[i % len(PALETTE)], width=width)

    panel(margin, "training loss", [("train_loss", 2)])
    panel(2 * margin + w, "accuracy: training (thin), validation (thick)", [("train_acc", 1), ("val_acc", 3)])
    _legend(draw, font, names, margin, head + margin + h + 14)
    return _save(image, path)


def sweep(rows: list[dict], swept: tuple[str, list[float]], path: Path, title: str) -> Path:
    """Test error against the fixed value of a pose parameter (`eval --sweep`), a line per model."""
    key, values = swept
    labels = list(dict.fromkeys(f"{r['variant']} / {r['model']}" for r in rows))
    w, h, margin, head = 640, 300, 48, 30
    image, draw, font = _canvas(w + 2 * margin, head + h + 2 * margin + 12 * len(labels), title)
    hi = max(max(float(r["error"]) for r in rows), 1e-6)
    x0, y0 = margin, head
    span = (values[-1] - values[0]) or 1.0
    _frame(draw, font, (x0, y0, w, h), (f"{hi:.3g}%", "0%"), (f"{key} {values[0]:g}", f"{key} {values[-1]:g}"), margin)
    for i, label in enumerate(labels):
        colour = PALETTE[i % len(PALETTE)]
        mine = [r for r in rows if f"{r['variant']} / {r['model']}" == label]
        pts = [(x0 + w * (float(r["tested_on"].split("=", 1)[1]) - values[0]) / span, y0 + h - h * float(r["error"]) / hi) for r in mine]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    _legend(draw, font, labels, margin, y0 + h + 20)
    return _save(image, path)


SCATTER_POINTS = 2000  # a dot per digit for the first this many test digits: more only blackens the plot
UNITS = {"angle": "degrees", "log_scale": "log", "scale": "", "shift": "px from the centre"}


def scatter(true: dict[str, torch.Tensor], undone: dict[str, torch.Tensor], path: Path, title: str) -> Path:
    """Per pose part (angle, log scale) a panel: each test digit's true distortion (x) against how much
    of it the transformer undid (y), both about their means. On the diagonal the transformer undoes it
    all; flat, none of it."""
    parts = list(true)
    size, margin, head, gap = 300, 52, 30, 24
    image, draw, font = _canvas(len(parts) * (size + margin + gap) + margin, head + size + 2 * margin + 12, title)
    for k, part in enumerate(parts):
        x, y = true[part][:SCATTER_POINTS].double(), undone[part][:SCATTER_POINTS].double()
        lo, hi = float(torch.minimum(x.min(), y.min())), float(torch.maximum(x.max(), y.max()))
        hi = hi if hi > lo else lo + 1e-6
        x0, y0 = margin + k * (size + margin + gap), head + 14
        draw.text((x0, y0 - 14), f"{part.replace('_', ' ')} ({UNITS[part]}, about the mean): undone (y) vs true (x)", fill=(0, 0, 0), font=font)
        _frame(draw, font, (x0, y0, size, size), (f"{hi:.3g}", f"{lo:.3g}"), (f"{lo:.3g}", f"{hi:.3g}"), margin)
        draw.line((x0, y0 + size, x0 + size, y0), fill=(190, 190, 190), width=1)  # undone == true
        for a, b in zip(x.tolist(), y.tolist()):
            px, py = x0 + size * (a - lo) / (hi - lo), y0 + size - size * (b - lo) / (hi - lo)
            draw.point((px, py), fill=PALETTE[0])
    draw.text((margin, head + size + margin), "grey diagonal: the transformer undoes the whole distortion; a flat cloud: none of it",
              fill=(0, 0, 0), font=font)
    return _save(image, path)


def invariance(rows: list[dict], path: Path, title: str) -> Path:
    """Test error against the true distortion (analysis.binned rows of one variant and seed): a panel per
    pose part, a line per model through the bins' centres."""
    parts = list(dict.fromkeys(r["by"] for r in rows))
    names = list(dict.fromkeys(r["model"] for r in rows))
    w, h, margin, head, gap = 300, 220, 52, 30, 24
    image, draw, font = _canvas(len(parts) * (w + margin + gap) + margin, head + h + 2 * margin + 12 * len(names), title)
    for k, part in enumerate(parts):
        mine = [r for r in rows if r["by"] == part]
        edges = mine[0]["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        hi = max([e for r in mine for e in r["error"] if e is not None] + [1e-6])
        x0, y0 = margin + k * (w + margin + gap), head + 14
        unit = f" ({UNITS[part]})" if UNITS[part] else ""
        draw.text((x0, y0 - 14), f"test error % by true {part}{unit}", fill=(0, 0, 0), font=font)
        _frame(draw, font, (x0, y0, w, h), (f"{hi:.3g}%", "0%"), (f"{edges[0]:.3g}", f"{edges[-1]:.3g}"), margin)
        for i, name in enumerate(names):
            pts = [(x0 + w * (c - edges[0]) / (edges[-1] - edges[0]), y0 + h - h * e / hi)
                   for r in mine if r["model"] == name for c, e in zip(centres, r["error"]) if e is not None]
            colour = PALETTE[i % len(PALETTE)]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for px, py in pts:
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
    _legend(draw, font, names, margin, head + h + margin)
    return _save(image, path)
