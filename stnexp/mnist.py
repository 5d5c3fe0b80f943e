"""The digits: MNIST bundled inside the package (checked by MD5), or the same four IDX files under a folder.

Fashion-MNIST and KMNIST share the file names and format, so `data.root` pointing at them just works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUNDLED = Path(__file__).parent / "mnist"
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
class Digits:
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


def load(root: Path | None = None, download: bool = False) -> Digits:
    """Load the four files from the package (root=None) or from `root`, checking each one."""
    from stnexp import idx
    from stnexp.errors import UserError

    if root is not None and download:
        fetch(Path(root))
    arrays = {}
    for key, stem in FILES.items():
        if root is None:
            arrays[key] = idx.read(BUNDLED / (stem + ".gz"), md5=MD5[key])
        else:
            arrays[key] = idx.read(find(Path(root), stem))
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        path = find(Path(root), FILES[f"{part}_images"]) if root else BUNDLED / FILES[f"{part}_images"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise UserError(f"{path}: expected uint8 images N x H x W, got {images.dtype} {images.shape}")
        if labels.shape != (images.shape[0],):
            raise UserError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
    return Digits(**arrays)


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
        raise UserError(f"data.download: could not download MNIST into {root}: {e}") from None
