import re

import numpy as np
import pytest

from stnexp.data import idx, mnist
from stnexp.errors import UserError


def test_round_trip_gzip_and_raw(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for name in ("a.gz", "a.idx"):
        idx.write(tmp_path / name, a)
        assert np.array_equal(idx.read(tmp_path / name), a)


def test_bundled_mnist_loads_with_known_label_counts():
    d = mnist.load()
    assert d.train_images.shape == (60000, 28, 28) and d.test_images.shape == (10000, 28, 28)
    assert np.bincount(d.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(d.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match="nothere.gz: file not found"):
        idx.read(tmp_path / "nothere.gz")


def test_truncated_file_says_truncated(tmp_path):
    idx.write(tmp_path / "a.idx", np.zeros((4, 3, 3), np.uint8))
    (tmp_path / "a.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-5])
    with pytest.raises(UserError, match=r"a.idx: truncated: dimensions 4x3x3 need 52 bytes, file has 47"):
        idx.read(tmp_path / "a.idx")


def test_truncated_gzip_is_reported(tmp_path):
    idx.write(tmp_path / "a.gz", np.zeros((40, 28, 28), np.uint8))
    raw = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "a.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="a.gz: corrupt or truncated gzip"):
        idx.read(tmp_path / "a.gz")


def test_bad_magic_is_not_an_idx_file(tmp_path):
    (tmp_path / "x").write_bytes(b"hello world, not idx")
    with pytest.raises(UserError, match="x: not an IDX file"):
        idx.read(tmp_path / "x")


def test_md5_mismatch_is_corrupt(tmp_path):
    idx.write(tmp_path / "a.gz", np.zeros((2, 2), np.uint8))
    with pytest.raises(UserError, match="corrupt: MD5"):
        idx.read(tmp_path / "a.gz", md5="0" * 32)


def write_root(root, train_ext="", n_labels=100):
    """A data.root folder with a small MNIST: train files raw or gzip, test files gzip."""
    d = mnist.load()
    idx.write(root / f"train-images-idx3-ubyte{train_ext}", d.train_images[:100])
    idx.write(root / f"train-labels-idx1-ubyte{train_ext}", d.train_labels[:n_labels])
    idx.write(root / "t10k-images-idx3-ubyte.gz", d.test_images[:10])
    idx.write(root / "t10k-labels-idx1-ubyte.gz", d.test_labels[:10])
    return d


def test_data_root_with_raw_files_loads(tmp_path):
    d = write_root(tmp_path)
    e = mnist.load(tmp_path)
    assert np.array_equal(e.train_images, d.train_images[:100]) and len(e.test_labels) == 10


def test_data_root_with_label_count_mismatch_is_refused(tmp_path):
    write_root(tmp_path, ".gz", n_labels=99)
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz: 99 labels for 100 images"):
        mnist.load(tmp_path)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([3] * 9 + [10], np.uint8), "t10k-labels-idx1-ubyte.gz: labels must be 0-9, found 10 (1 such)"),
        (np.array([3] * 9 + [-3], np.int8), "t10k-labels-idx1-ubyte.gz: labels must be 0-9, found -3 (1 such)"),
    ],
)
def test_labels_outside_0_to_9_are_refused_naming_the_file(tmp_path, labels, message):
    write_root(tmp_path)
    idx.write(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(UserError) as e:
        mnist.load(tmp_path)
    assert str(e.value).endswith(message)


def test_test_images_of_another_size_than_the_training_images_are_refused(tmp_path):
    d = write_root(tmp_path)
    idx.write(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8))
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: test images are 32x32, the training images 28x28"):
        mnist.load(tmp_path)
    assert d is not None


def test_an_empty_test_set_is_refused(tmp_path):
    write_root(tmp_path)
    idx.write(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    idx.write(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), np.uint8))
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz: holds no images"):
        mnist.load(tmp_path)


def test_a_gzip_that_expands_past_its_declared_size_is_stopped_early(tmp_path):
    import gzip

    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28))
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(header + bytes(200 << 20), compresslevel=9))  # 200 MB of zeros
    assert (tmp_path / "bomb.gz").stat().st_size < 1 << 20
    with pytest.raises(UserError, match="bomb.gz: decompresses to more than the 7,856 bytes its header declares"):
        idx.read(tmp_path / "bomb.gz")
    huge = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**6, 100, 100))
    (tmp_path / "huge.gz").write_bytes(gzip.compress(huge))
    with pytest.raises(UserError, match="huge.gz: its header declares 10,000,000,016 bytes"):
        idx.read(tmp_path / "huge.gz")


def test_a_raw_file_longer_than_its_header_says_is_refused_before_it_is_read(tmp_path):
    """A sparse raw file of 2 GiB (a few KB on disk) with the header of 10 digits: measured, not read."""
    import tracemalloc

    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28))
    with open(tmp_path / "sparse-idx3-ubyte", "wb") as f:
        f.write(header)
        f.truncate(2 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"sparse-idx3-ubyte: has trailing bytes: dimensions 10x28x28 need 7856 "):
            idx.read(tmp_path / "sparse-idx3-ubyte")
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # the peak: the header, not the file
    finally:
        tracemalloc.stop()
    (tmp_path / "big.gz").write_bytes(b"\x1f\x8b" + bytes(10))
    with open(tmp_path / "big.gz", "r+b") as f:
        f.truncate(idx.MAX_BYTES + 4096)
    with pytest.raises(UserError, match=r"big.gz: 1,073,745,920 bytes, more than the 1,073,741,824 an IDX file may"):
        idx.read(tmp_path / "big.gz")


def test_a_failed_download_is_one_line_with_the_reason(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n<urlopen error no network>\n"
        )

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError) as e:
        mnist.load(tmp_path, download=True)
    assert str(e.value).splitlines() == [
        f"data.download: could not download MNIST into {tmp_path}: Error downloading train-images-idx3-ubyte.gz: "
        "<urlopen error no network>"
    ]


@pytest.mark.parametrize(
    "header, message",
    [
        (
            bytes([0, 0, 8, 3]) + (0xFFFFFFFF).to_bytes(4, "big") * 3,
            "its header declares 79,228,162,458,924,105,385,300,197,391 bytes, more than",
        ),
        (bytes([0, 0, 8, 70]) + (1).to_bytes(4, "big") * 70, "its header declares 70 dimensions, more than the 16"),
    ],
)
def test_a_header_that_declares_too_much_is_refused_naming_the_file(tmp_path, header, message):
    (tmp_path / "x.idx").write_bytes(header + b"\0" * 16)
    with pytest.raises(UserError, match=f"x.idx: {re.escape(message)}"):
        idx.read(tmp_path / "x.idx")


def test_a_bad_header_under_data_root_exits_2_and_leaves_no_run_behind(tmp_path):
    from typer.testing import CliRunner

    from stnexp.cli import app

    (tmp_path / "root").mkdir()
    write_root(tmp_path / "root", ".gz")
    (tmp_path / "root" / "train-images-idx3-ubyte.gz").write_bytes(bytes([0, 0, 8, 70]) + (1).to_bytes(4, "big") * 70)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            "train",
            "configs/smoke.yaml",
            "--out",
            str(out),
            "--set",
            f"data.root={tmp_path / 'root'}",
            "--set",
            "data.train_size=64",
            "--set",
            "data.val_size=16",
        ],
    )
    assert r.exit_code == 2 and "train-images-idx3-ubyte.gz: its header declares 70 dimensions" in r.output, r.output
    assert not out.exists()
