"""Distorted MNIST: fixed test and validation sets, and the training stream, made on the device in batches.

Digits live on the device as uint8; a batch is gathered by index, its distortion parameters are drawn
from a seeded generator and it is warped with the same primitive the spatial transformer uses.
Pixels stay in [0, 1] with background 0 (models normalise after any sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stnexp import geometry, seeds
from stnexp.config import VariantConfig

IN_SIZE = 28
# distortions are made in chunks to bound memory (a 60x60 float batch of 10k images is 144 MB)
CHUNK = 4096


@dataclass(frozen=True)
class Params:
    """True distortion parameters per image: angle (degrees), scale, shift (N x 2, px)."""

    angle: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor


@dataclass(frozen=True)
class Fixed:
    """A set distorted once: images N x 1 x canvas x canvas (float32 in [0, 1]), labels, the true parameters."""

    images: torch.Tensor
    labels: torch.Tensor
    params: Params


def is_identity(spec: VariantConfig) -> bool:
    return spec.canvas == IN_SIZE and spec.rotation == (0.0, 0.0) and spec.scale == (1.0, 1.0) and spec.translation == 0


def sample(gen: torch.Generator, spec: VariantConfig, boxes: torch.Tensor) -> Params:
    """Draw parameters for len(boxes) digits; `boxes` (from geometry.ink_boxes) are used by translation 'fit'."""
    n, dev = boxes.shape[0], boxes.device
    u = torch.rand(n, 4, generator=gen, device=gen.device).to(dev)
    lo, hi = spec.rotation
    angle = lo + (hi - lo) * u[:, 0]
    lo, hi = spec.scale
    scale = lo + (hi - lo) * u[:, 1]
    if spec.translation == "fit":
        smin, smax = geometry.fit_shift_range(boxes, angle, scale, spec.canvas)
        shift = smin + (smax - smin) * u[:, 2:]
    else:
        shift = (2 * u[:, 2:] - 1) * float(spec.translation)
    return Params(angle, scale, shift)


def distort(digits: torch.Tensor, params: Params, canvas: int) -> torch.Tensor:
    """uint8 digits N x 28 x 28 -> float N x 1 x canvas x canvas."""
    x = digits.unsqueeze(1).float().div_(255.0)
    theta = geometry.distortion_theta(params.angle, params.scale, params.shift, IN_SIZE, canvas)
    return geometry.warp(x, theta, canvas)


def fixed(digits: torch.Tensor, labels: torch.Tensor, spec: VariantConfig, seed: int, name: str, part: str) -> Fixed:
    """Distort a whole set once. Parameters come from a CPU generator seeded by (seed, variant, part), so the
    set is the same on every device and for every run with that seed."""
    gen = seeds.generator("cpu", seed, name, part)
    boxes = geometry.ink_boxes(digits)
    params = sample(gen, spec, boxes)
    chunks = [distort(digits[i : i + CHUNK], _slice(params, i, i + CHUNK), spec.canvas) for i in range(0, len(digits), CHUNK)]
    images = torch.cat(chunks) if chunks else torch.zeros(0, 1, spec.canvas, spec.canvas, device=digits.device)
    return Fixed(images, labels.long(), params)


def _slice(p: Params, a: int, b: int) -> Params:
    return Params(p.angle[a:b], p.scale[a:b], p.shift[a:b])


class Stream:
    """The training batches of one (variant, seed): a fresh permutation and fresh distortions per epoch,
    both from a device generator seeded by (seed, variant, epoch), so any epoch can be replayed alone
    (resume needs no generator state). Batches have a fixed size (the last partial one is dropped)."""

    def __init__(self, digits: torch.Tensor, labels: torch.Tensor, spec: VariantConfig, seed: int, name: str, batch_size: int, resample: bool):
        self.digits, self.labels, self.spec = digits, labels.long(), spec
        self.seed, self.name, self.batch_size, self.resample = seed, name, batch_size, resample
        self.boxes = geometry.ink_boxes(digits)
        self.identity = is_identity(spec)
        self.once: Fixed | None = None
        if not resample and not self.identity:
            self.once = fixed(digits, labels, spec, seed, name, "train-once")

    def __len__(self) -> int:
        return max(1, len(self.digits) // self.batch_size)

    def epoch(self, epoch: int):
        """Yield (images, labels) for one epoch. On a GPU distortions are made for CHUNK images at a
        time (one batch's ~30 small kernels are launch-bound; 16 batches at once run 10x faster); on a
        CPU batch by batch, which stays in cache (3x faster than 4096 at once)."""
        dev = self.digits.device
        gen = seeds.generator(dev, self.seed, self.name, "train", epoch)
        n, bs = len(self.digits), min(self.batch_size, len(self.digits))
        order = torch.randperm(n, generator=gen, device=dev)[: len(self) * bs]
        per_chunk = max(1, CHUNK // bs) * bs if dev.type == "cuda" else bs
        for start in range(0, len(order), per_chunk):
            idx = order[start : start + per_chunk]
            y = self.labels[idx]
            if self.once is not None:
                x = self.once.images[idx]
            elif self.identity:
                x = self.digits[idx].unsqueeze(1).float().div_(255.0)
            else:
                x = distort(self.digits[idx], sample(gen, self.spec, self.boxes[idx]), self.spec.canvas)
            for i in range(0, len(idx), bs):
                yield x[i : i + bs], y[i : i + bs]


@dataclass(frozen=True)
class Split:
    """The undistorted digits on the device, uint8, split into train / validation / test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def split(data, device: torch.device) -> Split:
    """Load the digits (bundled or `data.root`) and move them to the device once (MNIST is 47 MB as uint8)."""
    from stnexp import mnist
    from stnexp.errors import UserError

    d = mnist.load(data.root, data.download)
    n = len(d.train_images)
    if data.train_size + data.val_size > n:
        raise UserError(f"data.train_size + data.val_size = {data.train_size + data.val_size} but the training files hold {n} digits")
    if d.train_images.shape[1:] != (IN_SIZE, IN_SIZE):
        raise UserError(f"data.root: images are {d.train_images.shape[1]}x{d.train_images.shape[2]}, expected 28x28")

    def t(a):
        return torch.from_numpy(a.copy()).to(device)

    x, y = t(d.train_images), t(d.train_labels).long()
    return Split(
        x[: data.train_size], y[: data.train_size],
        x[n - data.val_size :], y[n - data.val_size :],
        t(d.test_images), t(d.test_labels).long(),
    )
