"""Pictures: distorted digits beside their originals (preview), and test digits beside what a spatial
transformer made of them. Grids come from torchvision's image utilities."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

PAIRS_PER_ROW = 8


def _to_canvas(images: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (centred) or resize N x 1 x h x w images to size x size so that pairs line up in one grid."""
    h = images.shape[-1]
    if h == size:
        return images
    if h < size:
        lo = (size - h) // 2
        return F.pad(images, (lo, size - h - lo, lo, size - h - lo))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def pairs(left: torch.Tensor, right: torch.Tensor, path: Path, zoom: int = 2) -> Path:
    """Save a grid of (left, right) pairs side by side, 8 pairs a row, upscaled `zoom` times."""
    size = max(left.shape[-1], right.shape[-1])
    left, right = _to_canvas(left.float().cpu(), size), _to_canvas(right.float().cpu(), size)
    tiles = torch.stack([left, right], 1).flatten(0, 1).clamp(0, 1)
    grid = make_grid(tiles, nrow=2 * PAIRS_PER_ROW, padding=2, pad_value=0.5)
    grid = F.interpolate(grid[None], scale_factor=zoom, mode="nearest")[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


@torch.no_grad()
def transformer(model, x: torch.Tensor, path: Path) -> Path:
    """Test digits beside what a model's spatial transformer made of them (at conv1: its transform
    applied to the image)."""
    model.eval()
    return pairs(x, model.transformed_images(x), path)
