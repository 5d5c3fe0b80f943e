"""Pictures: distorted digits beside their originals (preview), and test digits beside what a spatial
transformer made of them, labelled so that a reader knows which is which."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

PAIRS_PER_ROW = 8
ZOOM = 2  # pixels per digit pixel


def _to_canvas(images: torch.Tensor, size: int) -> torch.Tensor:
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
    left, right = (_to_canvas(t.float().cpu(), size).clamp(0, 1).mul(255).round().to(torch.uint8) for t in (left, right))
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
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


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
