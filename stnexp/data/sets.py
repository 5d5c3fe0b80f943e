"""The digits on the device and the sets made from them: the fixed test and validation sets, and the
training stream, distorted on the device in whole batches (distortions.py says how).

Digits live on the device as uint8; a batch is gathered by index and rendered with the same sampler the
spatial transformer uses. Pixels stay in [0, 1] with background 0 (models normalise after any sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stnexp import geometry
from stnexp.config import DataConfig, VariantConfig
from stnexp.data import distortions
from stnexp.data.distortions import IN_SIZE, Params

# distortions are made in chunks to bound memory (a 60x60 float batch of 10k images is 144 MB)
CHUNK = 4096


@dataclass(frozen=True)
class Digits:
    """Undistorted digits: images N x 28 x 28 (uint8) and labels N (int64), on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """The digits on the device, split into train / validation / test."""

    train: Digits
    val: Digits
    test: Digits


@dataclass(frozen=True)
class Fixed:
    """A set distorted once: images N x 1 x canvas x canvas (float32 in [0, 1]), labels, the true parameters."""

    images: torch.Tensor
    labels: torch.Tensor
    params: Params


def split(data: DataConfig, device: torch.device) -> Split:
    """Load the digits (bundled or `data.root`) and move them to the device once (MNIST is 47 MB as uint8)."""
    from stnexp.data import mnist
    from stnexp.errors import UserError

    d = mnist.load(data.root, data.download)
    n = len(d.train_images)
    if data.train_size + data.val_size > n:
        raise UserError(
            f"data.train_size + data.val_size = {data.train_size + data.val_size} but the training files hold {n} "
            "digits"
        )
    if data.test_size > len(d.test_images):
        raise UserError(f"data.test_size = {data.test_size} but the test files hold {len(d.test_images)} digits")
    if d.train_images.shape[1:] != (IN_SIZE, IN_SIZE):
        raise UserError(f"data.root: images are {d.train_images.shape[1]}x{d.train_images.shape[2]}, expected 28x28")

    def t(a):
        return torch.from_numpy(a.copy()).to(device)

    x, y = t(d.train_images), t(d.train_labels).long()
    return Split(
        Digits(x[: data.train_size], y[: data.train_size]),
        Digits(x[n - data.val_size :], y[n - data.val_size :]),
        Digits(t(d.test_images[: data.test_size]), t(d.test_labels[: data.test_size]).long()),
    )


def fixed(digits: Digits, spec: VariantConfig, seed: int, name: str, part: str) -> Fixed:
    """Distort a whole set once. Parameters come from CPU generators named by (seed, variant, part), so the
    set is the same on every device and for every run with that seed."""
    gens = distortions.generators("cpu", spec, seed, name, part)
    params = distortions.sample(gens, spec, geometry.ink_boxes(digits.images))
    return Fixed(render_all(digits, params, spec), digits.labels.long(), params)


def render_all(digits: Digits, params: Params, spec: VariantConfig) -> torch.Tensor:
    """Every digit of a set rendered with its parameters, CHUNK digits at a time."""
    chunks = [
        distortions.render(
            digits.images[i : i + CHUNK], distortions.take(params, slice(i, i + CHUNK)), spec, digits.images
        )
        for i in range(0, len(digits), CHUNK)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, 1, spec.canvas, spec.canvas, device=digits.images.device)


class Stream:
    """The training batches of one (variant, seed): a fresh permutation and fresh distortions per epoch,
    both from device generators named by (seed, variant, epoch), so any epoch can be replayed alone
    (resume needs no generator state). Batches have a fixed size (the last partial one is dropped)."""

    def __init__(self, digits: Digits, spec: VariantConfig, seed: int, name: str, batch_size: int, resample: bool):
        self.digits, self.spec, self.seed, self.name = digits, spec, seed, name
        self.batch_size = min(batch_size, len(digits))
        self.boxes = geometry.ink_boxes(digits.images)
        self.identity = distortions.is_identity(spec)
        self.once: Fixed | None = None
        if not resample and not self.identity:
            self.once = fixed(digits, spec, seed, name, "train-once")

    def __len__(self) -> int:
        return max(1, len(self.digits) // self.batch_size)

    def epoch(self, epoch: int):
        """Yield (images, labels) for one epoch. On a GPU distortions are made for CHUNK images at a
        time (one batch's ~30 small kernels are launch-bound); on a CPU batch by batch, which stays in
        cache (both measured faster: docs/performance.md)."""
        dev = self.digits.images.device
        gens = distortions.generators(dev, self.spec, self.seed, self.name, "train", epoch)
        bs = self.batch_size
        # the order is drawn first from the pose stream, then that stream's distortions (as in 0.1)
        order = torch.randperm(len(self.digits), generator=gens["pose"], device=dev)[: len(self) * bs]
        per_chunk = max(1, CHUNK // bs) * bs if dev.type == "cuda" else bs
        for start in range(0, len(order), per_chunk):
            idx = order[start : start + per_chunk]
            y = self.digits.labels[idx]
            if self.once is not None:
                x = self.once.images[idx]
            elif self.identity:
                x = self.digits.images[idx].unsqueeze(1).float().div_(255.0)
            else:
                params = distortions.sample(gens, self.spec, self.boxes[idx], len(self.digits))
                x = distortions.render(self.digits.images[idx], params, self.spec, self.digits.images)
            for i in range(0, len(idx), bs):
                yield x[i : i + bs], y[i : i + bs]
