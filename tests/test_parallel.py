"""torchrun on CPU with gloo, two processes: jobs mode deals the (variant, seed) groups out and gives
the single process's table; data mode splits every batch and gives its results within float tolerance."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stnexp.cli import app

# undistorted 28x28 digits: a third of RTS's arithmetic per digit, and the test digits are most of the work here;
# fp32, since data mode is compared with one process to fp32 rounding (bf16, auto's choice on CPUs with bf16
# instructions, rounds every product to 2^-8)
SMALL = [
    "data.train_size=256",
    "data.val_size=128",
    "data.test_size=1000",
    "train.epochs=1",
    "train.batch_size=64",
    "device=cpu",
    "data.variants={plain: {preset: plain}}",
    "train.amp=off",
]


def sets(*extra):
    return [a for s in SMALL + list(extra) for a in ("--set", s)]


def torchrun(out: Path, *extra, n=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        "-m",
        "stnexp",
        "train",
        "configs/smoke.yaml",
        "--out",
        str(out),
        *sets(*extra),
    ]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)


def strays(out: Path) -> list[str]:
    """Processes still running whose command line names `out`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(out) in cmdline and proc.name != str(os.getpid()):
            found.append(cmdline)
    return found


def results(run: Path) -> list[tuple]:
    return [
        (r["variant"], r["model"], r["seed"], r["checkpoint"], r["correct"])
        for r in json.loads((run / "results.json").read_text())
    ]


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same work in one process: two seeds of CNN + ST-CNN on RTS, on one thread as each rank."""
    import torch

    out = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(app, ["train", "configs/smoke.yaml", "--out", str(out), *sets("seeds=[0,1]")])
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_jobs_mode_deals_the_groups_out_and_gives_the_single_process_table(single, tmp_path):
    out = tmp_path / "jobs"
    r = torchrun(out, "seeds=[0,1]", "train.parallel=jobs")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "[rank 1] plain s1 epoch 1/1" in r.stdout  # seed 1 trained on the second process
    assert "plain s0 epoch 1/1" in r.stdout and "plain s1 epoch 1/1" not in r.stdout.replace(
        "[rank 1] plain s1 epoch 1/1", ""
    )
    assert results(out) == results(single)  # bit for bit: the same batches, the same arithmetic
    assert (out / "results.md").read_text() == (single / "results.md").read_text()
    assert [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in metrics(out)] == [
        {k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in metrics(single)
    ]
    assert not strays(out)


@pytest.mark.slow
def test_data_mode_splits_each_batch_over_the_ranks_and_matches_one_process(single, tmp_path):
    out = tmp_path / "data"
    r = torchrun(out, "seeds=[0,1]", "train.parallel=data")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "[rank 1]" not in r.stdout  # rank 0 reports for both
    one, two = metrics(single), metrics(out)
    assert [(a["model"], a["seed"], a["epoch"], a["step"]) for a in one] == [
        (b["model"], b["seed"], b["epoch"], b["step"]) for b in two
    ]
    for a, b in zip(one, two):  # the mean of the two shards' gradients is the whole batch's, up to float rounding
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-5)
        assert float(b["val_acc"]) == pytest.approx(float(a["val_acc"]), abs=1.01 / 128)  # at most one of 128
    for a, b in zip(results(single), results(out)):
        # test digits right: the same count here (AMD EPYC, fp32); a few digits of 10,000 allow for another
        # order of summing the shards' gradients elsewhere
        assert a[:4] == b[:4] and abs(a[4] - b[4]) <= 5
    assert not strays(out)


def test_parallel_refuses_more_job_processes_than_groups_and_batches_that_do_not_split():
    from stnexp.training import parallel

    with pytest.raises(
        parallel.SharedError,
        match=r"train.parallel: jobs with 3 processes but only 2 \(variant, seed\) group\(s\); start at most 2",
    ):
        parallel.check("jobs", 3, 2, 256)
    with pytest.raises(parallel.SharedError, match="train.batch_size: 63 does not split evenly over 2 processes"):
        parallel.check("data", 2, 1, 63)
    parallel.check("jobs", 2, 2, 63)  # a batch is not split in jobs mode
    parallel.check("data", 2, 1, 64)


def test_bad_parallel_input_exits_2_on_rank_0_with_one_line_and_every_rank_ends(tmp_path):
    out = tmp_path / "run"
    r = torchrun(out, "seeds=[0]", "train.parallel=jobs")
    message = "train.parallel: jobs with 2 processes but only 1 (variant, seed) group(s); start at most 1"
    assert r.returncode != 0 and r.stdout.count(message) == 1, r.stdout[-3000:]
    assert not out.exists() and not strays(out)


def test_data_mode_without_torchrun_exits_2_saying_how_to_start_it(tmp_path):
    r = CliRunner().invoke(
        app, ["train", "configs/smoke.yaml", "--out", str(tmp_path / "run"), *sets("train.parallel=data")]
    )
    assert r.exit_code == 2 and "train.parallel: data needs several processes; start them with torchrun" in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"RANK": "1", "WORLD_SIZE": "2"},
            "RANK=1 and WORLD_SIZE=2 are set but MASTER_ADDR and MASTER_PORT not: to run as one process unset",
        ),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x': expected a whole number >= 0, as torchrun sets it"),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            "LOCAL_RANK='-1': expected a whole number",
        ),
        (
            {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            "RANK=2 and WORLD_SIZE=2: expected 0 <= RANK < WORLD_SIZE",
        ),
    ],
)
def test_a_bad_or_leftover_launch_environment_exits_2_on_every_rank_saying_what_is_wrong(
    tmp_path, monkeypatch, env, message
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    r = CliRunner().invoke(app, ["train", "configs/smoke.yaml", "--out", str(tmp_path / "run"), *sets()])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "run").exists()
