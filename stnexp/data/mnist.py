"""The digits: MNIST bundled inside the package (checked by MD5), or the same four IDX files under a folder.

Fashion-MNIST and KMNIST share the file names and format, so `data.root` pointing at them just works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUNDLED = Path(__file__).parent.parent / "mnist"  # stnexp/mnist/: package data
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the uncompressed bundled files (the sums torchvision pins for MNIST).
MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}


@dataclass(frozen=True)
class Arrays:
    """The four arrays as uint8 numpy arrays: images N x 28 x 28, labels N."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def find(root: Path, stem: str) -> Path:
    """The file for `stem` under root: gzip or raw, also inside torchvision's MNIST/raw layout."""
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return root / (stem + ".gz")


def load(root: Path | None = None, download: bool = False) -> Arrays:
    """Load the four files from the package (root=None) or from `root`, checking each one."""
    from stnexp.data import idx
    from stnexp.errors import UserError

    if root is not None and download:
        fetch(Path(root))
    arrays = {}
    for key, stem in FILES.items():
        if root is None:
            arrays[key] = idx.read(BUNDLED / (stem + ".gz"), md5=MD5[key])
        else:
            arrays[key] = idx.read(find(Path(root), stem))
    paths = {key: find(Path(root), stem) if root else BUNDLED / (stem + ".gz") for key, stem in FILES.items()}
    for part in ("train", "test"):
        check(arrays[f"{part}_images"], arrays[f"{part}_labels"], paths[f"{part}_images"], paths[f"{part}_labels"])
    if arrays["test_images"].shape[1:] != arrays["train_images"].shape[1:]:
        shape = lambda a: "x".join(map(str, a.shape[1:]))  # noqa: E731
        raise UserError(
            f"{paths['test_images']}: test images are {shape(arrays['test_images'])}, the training images "
            f"{shape(arrays['train_images'])}"
        )
    return Arrays(**arrays)


def check(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    """A set of digits as stnexp takes it: uint8 images N x H x W (N > 0) and N labels 0-9."""
    from stnexp.errors import UserError

    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(
            f"{images_path}: expected uint8 images N x H x W, got {images.dtype} {'x'.join(map(str, images.shape))}"
        )
    if len(images) == 0:
        raise UserError(f"{images_path}: holds no images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
    if labels.dtype.kind not in "iu":
        raise UserError(f"{labels_path}: labels must be whole numbers 0-9, got {labels.dtype}")
    bad = labels[(labels < 0) | (labels > 9)]
    if len(bad):
        raise UserError(f"{labels_path}: labels must be 0-9, found {int(bad[0])} ({len(bad)} such)")


def fetch(root: Path) -> None:
    """Download MNIST into root through torchvision (needs the network); files already there are kept."""
    from stnexp.errors import UserError

    if all(find(root, stem).is_file() for stem in FILES.values()):
        return
    try:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types; the message is what matters
        from stnexp.config import first_line

        raise UserError(f"data.download: could not download MNIST into {root}: {first_line(e)}") from None
