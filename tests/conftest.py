import os

import pytest


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`, pyproject's default) each worker process computes on one thread, and so
    do the processes its tests start: two workers on a 2-core CPU, not four threads fighting for two."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


TINY = [
    "data.train_size=512",
    "data.val_size=256",
    "data.test_size=1000",
    "train.epochs=2",
    "train.batch_size=128",
    "device=cpu",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny trained run (CNN + ST-CNN on RTS), shared by the tests that only read it."""
    from typer.testing import CliRunner

    from stnexp.cli import app

    out = tmp_path_factory.mktemp("run") / "tiny"
    args = ["train", "configs/smoke.yaml", "--out", str(out)]
    for s in TINY:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out
