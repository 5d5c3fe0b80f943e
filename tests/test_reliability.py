"""Overnight failures: kills, Ctrl-C, crafted or broken checkpoints, divergence, determinism."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY
from typer.testing import CliRunner

from stnexp.cli import app

SMALL = [
    "data.train_size=512",
    "data.val_size=128",
    "data.test_size=300",
    "train.epochs=3",
    "train.batch_size=128",
    "device=cpu",
]


def cli(*args, sets=()):
    argv = [str(a) for a in args]
    for s in sets:
        argv += ["--set", s]
    return CliRunner().invoke(app, argv)


def spawn(out: Path, *extra):
    argv = [sys.executable, "-m", "stnexp", "train", "configs/smoke.yaml", "--out", str(out), *extra]
    for s in SMALL:
        argv += ["--set", s]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def metrics_without_timings(run: Path):
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def accuracies(run: Path):
    return {(r["model"], r["checkpoint"]): r["accuracy"] for r in json.loads((run / "results.json").read_text())}


def wait_for(path: Path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    p = spawn(out)
    assert p.wait() == 0, p.stdout.read()
    return out


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    p = spawn(out)
    wait_for(out / "checkpoints" / "rts" / "cnn-s0-last.pt", p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # the kill landed mid-run (after epoch 1 of 3): the process died of it, and the run never finished
    assert p.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    assert json.loads((out / ".stnexp-run").read_text())["state"] != "finished"
    from stnexp.store import checkpoints

    for ck in out.rglob("*.pt"):  # a kill may leave a temporary file, never a half-written checkpoint
        checkpoints.load(ck)
    r = cli("train", "configs/smoke.yaml", "--out", out, "--resume", sets=SMALL)
    assert r.exit_code == 0, r.output
    assert metrics_without_timings(out) == metrics_without_timings(uninterrupted)
    assert accuracies(out) == accuracies(uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, code, said",
    [
        (signal.SIGINT, 130, "Ctrl-C: stopping after this step"),
        (signal.SIGTERM, 143, "SIGTERM: stopping after this step"),  # what SLURM, docker and systemd send first
    ],
)
def test_ctrl_c_and_sigterm_write_a_resumable_checkpoint_and_partial_results(tmp_path, uninterrupted, sig, code, said):
    out = tmp_path / "run"
    p = spawn(out)
    wait_for(out / "checkpoints" / "rts" / "st-cnn-s0-last.pt", p)
    p.send_signal(sig)
    output = p.communicate(timeout=120)[0]
    assert p.returncode == code, output
    assert said in output and "--resume" in output and "Traceback" not in output
    assert "partial" in (out / "results.md").read_text()
    assert json.loads((out / ".stnexp-run").read_text())["state"] == "interrupted"
    r = cli("train", "configs/smoke.yaml", "--out", out, "--resume", sets=SMALL)
    assert r.exit_code == 0, r.output
    assert json.loads((out / ".stnexp-run").read_text())["state"] == "finished"
    assert accuracies(out) == accuracies(uninterrupted)
    assert "interrupted" in (out / "train.log").read_text()


def interrupt_the_final_evaluation(out: Path, times: int) -> tuple[int, str]:
    """Train SMALL into `out`, press Ctrl-C `times` times once the final evaluation has begun (each after
    the process has answered the one before), and return its exit code and output."""
    p = spawn(out)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if "scoring the checkpoints" in line:
            break
    for _ in range(times):
        p.send_signal(signal.SIGINT)
        for line in p.stdout:  # the process's answer, before the next Ctrl-C
            lines.append(line)
            if "Ctrl-C again" in line:
                break
    lines.append(p.communicate(timeout=120)[0])
    return p.returncode, "".join(lines)


@pytest.mark.slow
def test_ctrl_c_during_the_final_evaluation_says_it_is_finishing_and_finishes(tmp_path, uninterrupted):
    code, output = interrupt_the_final_evaluation(tmp_path / "run", times=1)
    assert code == 0, output
    assert "finishing the final evaluation (the checkpoints are saved); Ctrl-C again to stop" in output
    assert json.loads((tmp_path / "run" / ".stnexp-run").read_text())["state"] == "finished"
    assert accuracies(tmp_path / "run") == accuracies(uninterrupted)


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_final_evaluation_stops_it_keeping_the_checkpoints(tmp_path, uninterrupted):
    out = tmp_path / "run"
    code, output = interrupt_the_final_evaluation(out, times=2)
    assert code == 130, output
    assert f"stopped during the final evaluation: the checkpoints are in {out}" in output
    assert "Traceback" not in output and json.loads((out / ".stnexp-run").read_text())["state"] != "finished"
    # every checkpoint of the three epochs is there, and --resume scores them as the uninterrupted run did
    assert len(list((out / "checkpoints").rglob("*.pt"))) == 4  # best and last of the CNN and the ST-CNN
    r = cli("train", "configs/smoke.yaml", "--out", out, "--resume", sets=SMALL)
    assert r.exit_code == 0, r.output
    assert accuracies(out) == accuracies(uninterrupted)
    assert metrics_without_timings(out) == metrics_without_timings(uninterrupted)


@pytest.mark.slow
def test_train_from_a_worker_thread_trains_to_the_end_without_signal_handlers(tmp_path, uninterrupted):
    import threading

    import stnexp

    done = {}

    def work():
        try:
            done["run"] = stnexp.train("configs/smoke.yaml", out=str(tmp_path / "run"), sets=SMALL)
        except Exception as e:  # the test's thread reports it below
            done["error"] = e

    before = signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive() and "error" not in done, done
    assert json.loads((tmp_path / "run" / ".stnexp-run").read_text())["state"] == "finished"
    assert accuracies(tmp_path / "run") == accuracies(uninterrupted)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_same_config_and_seed_on_cpu_give_identical_results(tmp_path, uninterrupted):
    p = spawn(tmp_path / "again")
    assert p.wait() == 0
    assert accuracies(tmp_path / "again") == accuracies(uninterrupted)
    assert metrics_without_timings(tmp_path / "again") == metrics_without_timings(uninterrupted)


@pytest.mark.slow
def test_checkpoints_hold_everything_resume_needs(uninterrupted):
    from stnexp.store import checkpoints

    ck = checkpoints.load(uninterrupted / "checkpoints" / "rts" / "st-cnn-s0-last.pt")
    for key in ("model", "optimizer", "scheduler", "epoch", "step", "config_digest", "global_rng", "history"):
        assert key in ck
    assert ck["epoch"] == 3 and ck["step"] == 3 * 4  # 512 digits in batches of 128


def test_a_crafted_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "planted"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "stnexp-checkpoint-1", "model": Evil()}, tmp_path / "evil.pt")
    r = cli("eval", tmp_path / "evil.pt")
    assert r.exit_code == 2 and "refused" in r.output and "nothing was run" in r.output
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_are_reported(tmp_path, tiny_run):
    good = (tiny_run / "checkpoints" / "rts" / "cnn-s0-best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    r = cli("eval", tmp_path / "cut.pt")
    assert r.exit_code == 2 and "cut.pt: truncated, corrupt or not a checkpoint" in r.output
    (tmp_path / "text.pt").write_text("not a checkpoint")
    r = cli("eval", tmp_path / "text.pt")
    assert r.exit_code == 2 and "text.pt: truncated, corrupt or not a checkpoint" in r.output
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    r = cli("eval", tmp_path / "other.pt")
    assert r.exit_code == 2 and "other.pt: not a stnexp checkpoint" in r.output
    r = cli("eval", tmp_path / "missing.pt")
    assert r.exit_code == 2 and "missing.pt: no such run directory or checkpoint" in r.output


def test_checkpoint_from_an_incompatible_model_says_so(tmp_path, tiny_run):
    from stnexp.store import checkpoints

    ck = checkpoints.load(tiny_run / "checkpoints" / "rts" / "cnn-s0-best.pt")
    ck["config"]["models"]["cnn"]["channels"] = [16, 32]
    checkpoints.save(tmp_path / "odd.pt", ck)
    r = cli("eval", tmp_path / "odd.pt")
    assert r.exit_code == 2 and "odd.pt: weights do not fit the model its config describes" in r.output
    assert "block1.0.weight is [32, 1, 9, 9] in the checkpoint, [16, 1, 9, 9] in the model" in r.output


def test_resume_with_another_config_names_the_difference(tiny_run):
    r = cli("train", "configs/smoke.yaml", "--out", tiny_run, "--resume", sets=TINY + ["models.cnn.channels=[16, 32]"])
    assert r.exit_code == 2 and "differs from the run's in models.cnn.channels" in r.output


def test_a_diverging_model_stops_and_the_others_finish(tmp_path, monkeypatch):
    from stnexp.training import members

    build = members.build

    def absurd_lr_for_wild(cfg, name, *args):
        m = build(cfg, name, *args)
        if name == "wild":  # NaN injection: weights blow up to inf within a few steps
            m.sched.base_lrs = [1e30 for _ in m.sched.base_lrs]
        return m

    monkeypatch.setattr(members, "build", absurd_lr_for_wild)
    out = tmp_path / "run"
    sets = TINY + ["train.epochs=2", "models.wild={arch: cnn}"]
    r = cli("train", "configs/smoke.yaml", "--out", out, sets=sets)
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "results.json").read_text())
    wild = [x for x in rows if x["model"] == "wild"]
    assert wild and all(x["status"].startswith("diverged at epoch 1") for x in wild)
    assert all(x["status"] == "ok" for x in rows if x["model"] != "wild")
    assert "diverged at epoch 1" in (out / "results.md").read_text()
    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    assert [m["epoch"] for m in metrics if m["model"] == "cnn"] == ["1", "2"]


def test_unwritable_out_exits_2(tmp_path):
    (tmp_path / "file").write_text("")
    r = cli("train", "configs/smoke.yaml", "--out", tmp_path / "file" / "run", sets=TINY)
    assert r.exit_code == 2 and "not writable" in r.output


def test_unexpected_error_is_one_line_with_the_traceback_in_train_log(tmp_path, monkeypatch):
    from stnexp.training import loop

    def boom(*a, **k):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(loop, "train_groups", boom)
    r = cli("train", "configs/smoke.yaml", "--out", tmp_path / "run", sets=TINY)
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: unexpected RuntimeError: planted failure (traceback in train.log)"
    assert "Traceback" not in r.output
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()


def test_missing_data_files_exit_2_and_leave_no_run_behind(tmp_path):
    out = tmp_path / "run"
    r = cli("train", "configs/smoke.yaml", "--out", out, sets=TINY + [f"data.root={tmp_path / 'nodata'}"])
    assert r.exit_code == 2 and "train-images-idx3-ubyte.gz: file not found" in r.output
    assert not out.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ck: ck.pop("config"), "malformed checkpoint: no 'config'"),
        (lambda ck: ck.pop("variant"), "malformed checkpoint: no 'variant'"),
        (lambda ck: ck.update(in_size="abc"), "malformed checkpoint: 'in_size' is str, not what stnexp writes there"),
        (lambda ck: ck.update(in_size=100000), "malformed checkpoint: 'in_size' is 100000, outside 1-512"),
        (lambda ck: ck.update(in_size=28), "malformed checkpoint: its config has no variant 'rts' of canvas 28"),
        (
            lambda ck: ck["config"]["train"].update(lr=-1),
            "malformed checkpoint: its config is not valid (train.lr: input should be greater than 0",
        ),
        (lambda ck: ck.update(model={"w": 3}), "malformed checkpoint: 'model' is not a mapping of names to tensors"),
        (
            lambda ck: ck["model"].update({k: v.to_sparse() for k, v in list(ck["model"].items())[:1]}),
            "malformed checkpoint: 'model' holds 'block1.0.weight' as a sparse or meta tensor, not weights",
        ),
        (
            lambda ck: ck["model"].update({k: v.to("meta") for k, v in list(ck["model"].items())[:1]}),
            "malformed checkpoint: 'model' holds 'block1.0.weight' as a sparse or meta tensor",
        ),
    ],
)
def test_a_malformed_checkpoint_exits_2_in_one_line(tmp_path, tiny_run, change, message):
    from stnexp.errors import UserError
    from stnexp.store import checkpoints

    ck = torch.load(tiny_run / "checkpoints" / "rts" / "cnn-s0-best.pt", weights_only=True)
    change(ck)
    torch.save(ck, tmp_path / "odd.pt")
    r = cli("eval", tmp_path / "odd.pt")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and message in r.output, r.output
    with pytest.raises(UserError, match="odd.pt: malformed checkpoint"):
        checkpoints.load(tmp_path / "odd.pt")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ck: ck.update(global_rng={"torch": torch.zeros(3, dtype=torch.uint8)}), "'global_rng' is not a random"),
        (lambda ck: ck.update(global_rng={"torch": "abc"}), "'global_rng' is not a random generator's state"),
        (lambda ck: ck.update(rng={"torch": torch.zeros(5056)}), "'rng' is not a random generator's state"),
        (lambda ck: ck["optimizer"]["param_groups"].pop(), "its optimizer has 0 parameter groups, this version's 1"),
        (lambda ck: ck["optimizer"].update(param_groups="x"), "its optimizer or schedule does not load"),
        (lambda ck: ck.update(scheduler={}), "malformed checkpoint: its optimizer or schedule does not load"),
        (lambda ck: ck.update(history=[1, 2]), "malformed checkpoint: 'history' holds entries that are not records"),
        (
            lambda ck: ck["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(3)),
            "malformed checkpoint: the optimizer's momentum_buffer of a (32, 1, 9, 9) parameter is (3,)",
        ),
    ],
)
def test_a_checkpoint_damaged_inside_exits_2_on_resume_before_anything_trains(tmp_path, tiny_run, change, message):
    run = _copy_run(tiny_run, tmp_path / "run")
    path = run / "checkpoints" / "rts" / "cnn-s0-last.pt"
    ck = torch.load(path, weights_only=True)
    change(ck)
    torch.save(ck, path)
    before = (run / "metrics.csv").read_bytes()
    r = cli("train", "configs/smoke.yaml", "--out", run, "--resume", sets=TINY)
    (error,) = [line for line in r.output.splitlines() if line.startswith("error:")]  # after the run's first lines
    assert r.exit_code == 2 and error.startswith(f"error: {path}: ") and message in error, r.output
    assert (run / "metrics.csv").read_bytes() == before


@pytest.mark.slow
def test_a_closed_stdout_does_not_stop_training_and_train_log_gets_everything(tmp_path):
    """`stnexp train CFG | head -1`: the reader goes after the first line; training goes on to the end."""
    argv = [sys.executable, "-m", "stnexp", "train", "configs/smoke.yaml", "--out", str(tmp_path / "run")]
    for s in TINY + ["data.train_size=256", "data.test_size=200"]:
        argv += ["--set", s]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()  # head -1 exits
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    run = tmp_path / "run"
    assert (run / "results.json").is_file() and (run / "checkpoints" / "rts" / "st-cnn-s0-best.pt").is_file()
    log = (run / "train.log").read_text()
    assert "rts s0 epoch 2/2" in log and "results:" in log


@pytest.mark.parametrize(
    "command", [["config", "show", "configs/smoke.yaml"], ["runs", "{run}"], ["eval", "{run}", "--out", "{out}"]]
)
def test_a_short_command_whose_reader_has_gone_ends_quietly(command, tiny_run, tmp_path):
    argv = [sys.executable, "-m", "stnexp"] + [a.format(run=tiny_run, out=tmp_path / "ev") for a in command]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    p = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, timeout=300)
    os.close(write)
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()


def test_ctrl_c_before_the_first_epoch_ends_says_nothing_is_resumable_and_writes_no_table(tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "stnexp", "train", "configs/smoke.yaml", "--out", str(out)]
    for s in [
        "data.train_size=20000",
        "data.val_size=256",
        "data.test_size=1000",
        "train.epochs=4",
        "train.batch_size=64",
        "device=cpu",
    ]:
        argv += ["--set", s]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while "device cpu" not in ((out / "train.log").read_text() if (out / "train.log").exists() else ""):
        assert p.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)  # its first epoch of 313 steps takes seconds
    output = p.communicate(timeout=120)[0]
    assert p.returncode == 130, output
    assert "interrupted before the first epoch ended: no checkpoint, nothing to resume" in output
    assert "checkpoints of the last completed epoch" not in output and "Traceback" not in output
    assert not list(out.rglob("*.pt")) and not (out / "results.md").exists() and not (out / "results.json").exists()
    # --resume says that it starts over (the training itself left out: it is any run's)
    from stnexp.training import loop

    monkeypatch.setattr(loop, "train", lambda *a: [])
    first = {**json.loads((out / "env.json").read_text()), "started": "2026-01-01T00:00:00+0000"}
    (out / "env.json").write_text(json.dumps(first))
    r = cli("train", out, "--resume")
    assert (
        r.exit_code == 0
        and "no checkpoint yet (no epoch had completed): training starts from the beginning" in r.output
    )
    # the run started when it first did: env.json keeps that, `stnexp runs` shows it, the resume is added
    env = json.loads((out / "env.json").read_text())
    assert env["started"] == first["started"] and len(env["resumed"]) == 1
    assert f"| {first['started']} |" in cli("runs", tmp_path).output


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """A tiny run of two seeds, trained once for the tests that copy it."""
    out = tmp_path_factory.mktemp("two-seeds") / "run"
    assert (
        cli("train", "configs/smoke.yaml", "--out", out, sets=TINY + ["seeds=[0,1]", "train.epochs=1"]).exit_code == 0
    )
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "swap, named",
    [
        (("cnn-s0-last.pt", "cnn-s1-last.pt"), "seed 1, not 0"),
        (("cnn-s0-last.pt", "st-cnn-s0-last.pt"), "model_name 'st-cnn', not 'cnn'"),
        (("cnn-s0-last.pt", "cnn-s0-best.pt"), "kind 'best', not 'last'"),
    ],
)
def test_resume_refuses_a_checkpoint_swapped_in_from_another_slot(two_seeds, tmp_path, swap, named):
    import shutil

    out = shutil.copytree(two_seeds, tmp_path / "run")
    folder = out / "checkpoints" / "rts"
    a, b = folder / swap[0], folder / swap[1]
    first, second = a.read_bytes(), b.read_bytes()
    a.write_bytes(second)
    b.write_bytes(first)
    r = cli("train", out, "--resume")
    assert r.exit_code == 2, r.output
    assert f"{a}: the checkpoint of another slot" in r.output and named in r.output


def test_a_path_that_is_not_utf8_exits_2_before_anything_is_made(tmp_path):
    out = os.fsencode(tmp_path) + b"/run\xff"
    p = subprocess.run(
        [sys.executable, "-m", "stnexp", "train", "configs/smoke.yaml", "--out", out], capture_output=True, timeout=120
    )
    assert p.returncode == 2 and b"not valid UTF-8" in p.stderr and b"Traceback" not in p.stderr, p.stderr
    assert os.listdir(tmp_path) == []


def _disk_full(*a, **k):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_the_first_checkpoint_exits_2_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    from stnexp.store import checkpoints

    monkeypatch.setattr(checkpoints.torch, "save", _disk_full)
    out = tmp_path / "run"
    r = cli("train", "configs/smoke.yaml", "--out", out, sets=TINY)
    assert r.exit_code == 2, r.output
    assert (
        "checkpoints/rts/cnn-s0-best.pt: no space left on device" in r.output
        and "unexpected" not in r.output
        and "Traceback" not in r.output
    )
    assert not out.exists()


def test_a_full_disk_when_the_run_directory_is_made_leaves_no_directory_and_no_lock(tmp_path, monkeypatch):
    from stnexp.store import runs

    monkeypatch.setattr(runs, "_lock", _disk_full)
    out = tmp_path / "new" / "run"
    r = cli("train", "configs/smoke.yaml", "--out", out, sets=TINY)
    assert r.exit_code == 2 and f"--out {out}: not writable (No space left on device)" in r.output
    assert os.listdir(tmp_path) == []


def test_a_full_disk_mid_run_keeps_the_last_checkpoints_and_resume_finishes_once_there_is_space(tmp_path, monkeypatch):
    from stnexp.store import checkpoints

    out = tmp_path / "run"
    save = checkpoints.torch.save
    calls = []

    def full_after_the_first_epoch(obj, f, *a, **k):  # 2 models x (best, last) per epoch
        calls.append(1)
        return _disk_full() if len(calls) > 4 else save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoints.torch, "save", full_after_the_first_epoch)
    r = cli("train", "configs/smoke.yaml", "--out", out, sets=TINY)
    assert r.exit_code == 2 and "no space left on device" in r.output
    assert (
        torch.load(out / "checkpoints" / "rts" / "cnn-s0-last.pt", weights_only=True)["epoch"] == 1
    )  # whole, not half
    monkeypatch.undo()
    r = cli("train", out, "--resume")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())


def _copy_run(tiny_run, to):
    import shutil

    shutil.copytree(tiny_run, to)
    return to


@pytest.mark.parametrize(
    "link, target",
    [
        ("evals", "notes"),  # a folder of the user's, linked in where the run keeps its evaluations
        ("checkpoints", "other/checkpoints"),  # another run's checkpoints
        (".stnexp-lock", "victim.txt"),
        (".stnexp-run", "dangling-target"),
        ("stn/rts/st-cnn-s0.png", "victim.txt"),
    ],
)
@pytest.mark.parametrize("how", ["--force", "--resume"])
def test_a_symlink_where_a_run_keeps_its_files_exits_2_and_nothing_outside_changes(
    tiny_run, tmp_path, link, target, how
):
    run = _copy_run(tiny_run, tmp_path / "run")
    _copy_run(tiny_run, tmp_path / "other")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.md").write_text("my notes")
    (tmp_path / "victim.txt").write_text("keep me")
    where = run / link
    if where.is_dir():
        import shutil

        shutil.rmtree(where)
    else:
        where.unlink(missing_ok=True)
    where.symlink_to(tmp_path / target)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and run not in p.parents}
    r = cli("train", "configs/smoke.yaml", "--out", run, how, sets=TINY)
    assert r.exit_code == 2 and f"{where}: a symbolic link" in r.output and "nothing was changed" in r.output, r.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and run not in p.parents} == before
    assert not (tmp_path / "dangling-target").exists()


def test_eval_refuses_a_runs_evals_folder_that_is_a_symlink(tiny_run, tmp_path):
    import shutil

    run = _copy_run(tiny_run, tmp_path / "run")
    (tmp_path / "notes").mkdir()
    shutil.rmtree(run / "evals", ignore_errors=True)  # what evals other tests left in the shared run
    (run / "evals").symlink_to(tmp_path / "notes")
    r = cli("eval", run)
    assert r.exit_code == 2 and f"{run / 'evals'}: a symbolic link" in r.output
    assert list((tmp_path / "notes").iterdir()) == []


def test_report_embeds_no_picture_that_is_a_symlink(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not the run's")
    picture = run / "curves" / "rts" / "s0.png"
    picture.unlink()
    picture.symlink_to(secret)
    r = cli("report", run, "--html", "--out", tmp_path / "rep")
    assert r.exit_code == 2 and f"{picture}: a symbolic link" in r.output
    assert not (tmp_path / "rep" / "report.html").exists()


@pytest.mark.slow
def test_a_sweep_child_that_is_a_symlink_to_another_run_is_refused_before_it_is_cleared(tiny_run, tmp_path):
    base = ["train", "configs/smoke.yaml", "--sweep", "train.lr=0.01,0.05", "--out", tmp_path / "sweep"]
    sets = ["data.train_size=256", "data.val_size=128", "data.test_size=1000"]
    assert cli(*base, sets=sets).exit_code == 0
    other = _copy_run(tiny_run, tmp_path / "other")
    child = tmp_path / "sweep" / "01-lr=0.01"
    import shutil

    shutil.rmtree(child)
    child.symlink_to(other)
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    for how in ("--resume", "--force"):
        r = cli(*base, how, sets=sets)
        assert r.exit_code == 2 and f"{child}: a symbolic link where the sweep keeps a child run" in r.output, r.output
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before


def test_a_tampered_evaluations_index_names_no_file_outside_evals(tiny_run, tmp_path):
    """The index is read back from the run directory: a line naming ../../victim/notes is not an
    evaluation, so clearing the run (what --force does) leaves the victim's files alone."""
    from stnexp.store import evals, runs

    run = _copy_run(tiny_run, tmp_path / "t1")
    victim = tmp_path / "victim"
    victim.mkdir()
    for suffix in (".md", ".csv", ".json", ".png", ".pdf"):
        (victim / f"notes{suffix}").write_text("keep me")
    (run / "evals").mkdir(exist_ok=True)
    (run / "evals" / "mine.md").write_text("an evaluation")
    lines = ["- `../../victim/notes`: x", "- `/abs/notes`: x", "- `.hidden`: x", "- `mine`: scored"]
    (run / "evals" / "index.md").write_text("# Evaluations\n\n" + "\n".join(lines) + "\n")
    assert evals.eval_names(run / "evals") == ["mine"]
    assert all(run.resolve() in p.resolve().parents for p in runs.written_files(run))
    runs.clear(run, remove_dir=False)
    assert sorted(p.name for p in victim.iterdir()) == [f"notes{s}" for s in (".csv", ".json", ".md", ".pdf", ".png")]
    assert not (run / "evals" / "mine.md").exists()  # the index's own evaluation went with the run


@pytest.mark.parametrize("inside", ["curves/rts", "stn/rts", ".", "checkpoints"])
def test_eval_writes_into_a_run_only_under_its_evals_folder(tiny_run, tmp_path, inside):
    run = _copy_run(tiny_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = cli("eval", run, "--out", run / inside, "--name", "s0", "--sweep", "rotation=0:10:10")
    assert r.exit_code == 2 and f"inside the run {run.resolve()}" in r.output and len(r.output.splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "folder", ["results.json", "train.log", "env.json", "metrics.csv", "report.html", "stn/rts/st-cnn-s0.png"]
)
@pytest.mark.parametrize("how", ["--force", "--resume"])
def test_a_folder_where_a_run_keeps_a_file_exits_2_before_anything_is_changed(tiny_run, tmp_path, folder, how):
    run = _copy_run(tiny_run, tmp_path / "run")
    (run / folder).unlink()
    (run / folder).mkdir()
    (run / folder / "inside").write_text("the user's")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = cli("train", "configs/smoke.yaml", "--out", run, how, sets=TINY)
    assert r.exit_code == 2 and f"{run / folder}: not a regular file" in r.output, r.output
    assert "nothing was changed" in r.output and len(r.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_report_reads_the_same_in_markdown_and_html_whatever_a_runs_path_and_command_hold(tiny_run, tmp_path):
    """A run's path and its command line come back into report.md: a newline and a table rule in the
    path, and a backtick that closes the command's code span before an HTML tag, are shown as written,
    and neither a CommonMark renderer that passes HTML through nor report.html runs the tag."""
    from markdown_it import MarkdownIt

    run = _copy_run(tiny_run, tmp_path / "tr2\n|-|\nx")
    env = json.loads((run / "env.json").read_text())
    env["command"] = ["stnexp", "train", "c.yaml", "--set", "train.lr=0.01 #`<img src=x onerror=alert(1)>`"]
    (run / "env.json").write_text(json.dumps(env))
    r = cli("report", run, "--out", tmp_path / "report", "--html")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "report" / "report.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    for html in (rendered, page):
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "tr2\\n|-|\\nx</code>" in html  # the path on one line, as written
    assert "<table>" in page and "<th>model</th>" in page  # the results table is still a table


def test_swept_values_and_eval_file_names_go_into_markdown_escaped(tmp_path):
    from stnexp.results import sweep_table, tables

    assert tables.text("a|b <img src=x> [l](j:x) `c`") == r"a\|b \<img src=x\> \[l\](j:x) \`c\`"
    assert tables.text("two\nlines") == "two\\\\nlines"
    assert tables.code("plain") == "`plain`" and tables.code("a `b` c") == "`` a `b` c ``"
    table = tables.markdown(["value"], [[tables.text("x | y")]])
    assert table.splitlines()[-1] == r"| x \| y |"
    # a swept value the config takes (YAML drops the comment) is shown in sweep.md as given, and inert
    from markdown_it import MarkdownIt

    value = "0.01 #`<img src=x onerror=alert(1)>` | x"
    row = {"train.lr": value, "run": "01", "model": "cnn", "variant": "rts", "seeds": "0"}
    md = sweep_table.markdown(
        [{**row, "error_mean": 1.0, "error_std": None, "val_acc": 0.9, "best": True}], ["train.lr"]
    )
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<img" not in rendered and "<td>0.01 #`&lt;img src=x onerror=alert(1)&gt;` | x</td>" in rendered


@pytest.mark.slow
def test_json_nested_thousands_deep_in_a_runs_files_is_damage_not_a_crash(tiny_run, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    for name in (".stnexp-run", "env.json", "results.json", "plain"):
        run = _copy_run(tiny_run, tmp_path / "all" / name.strip("."))
        if name != "plain":
            (run / name).write_text(deep)
    r = cli("runs", tmp_path / "all")
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    assert sorted(line.split(" | ")[0][2:] for line in rows) == ["env.json", "plain", "results.json", "stnexp-run"]
    assert "damaged: results.json is not stnexp's" in r.output
    r = cli("report", tmp_path / "all" / "results.json")
    assert r.exit_code == 2 and "results.json: unreadable (maximum recursion depth" in r.output
    sweep = tmp_path / "sweep"
    assert cli("train", "configs/smoke.yaml", "--sweep", "seeds=[0]", "--out", sweep, sets=TINY).exit_code == 0
    (sweep / ".stnexp-sweep").write_text(deep)
    r = cli("train", "configs/smoke.yaml", "--sweep", "seeds=[0]", "--out", sweep, "--resume", sets=TINY)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output


def test_a_failed_eval_leaves_no_empty_folder_behind(tiny_run, tmp_path):
    import shutil

    run = _copy_run(tiny_run, tmp_path / "run")
    shutil.rmtree(run / "evals", ignore_errors=True)
    r = cli("eval", run, "--variant", "nosuch")
    assert r.exit_code == 2 and "--variant nosuch" in r.output
    assert not (run / "evals").exists()
    r = cli("eval", run, "--variant", "nosuch", "--out", tmp_path / "a" / "b")
    assert r.exit_code == 2 and not (tmp_path / "a").exists()


def test_a_huge_picture_in_a_run_is_named_in_the_report_not_embedded(tiny_run, tmp_path):
    from stnexp.results import report

    run = _copy_run(tiny_run, tmp_path / "run")
    with open(run / "curves" / "rts" / "s0.png", "r+b") as f:
        f.truncate(report.MAX_PICTURE + 1)  # sparse: no disk used
    r = cli("report", run, "--out", tmp_path / "report", "--html")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"`curves/rts/s0.png`: not shown ({report.MAX_PICTURE + 1:,} bytes, more than the" in md
    assert not any("curves" in p.name for p in (tmp_path / "report" / "images").iterdir())
    assert (tmp_path / "report" / "report.html").stat().st_size < report.MAX_PICTURE


def test_a_run_directory_deleted_while_it_trains_stops_the_run_and_is_not_made_again(tmp_path, monkeypatch):
    import shutil

    from stnexp.training import loop

    out = tmp_path / "run"
    save = loop.save

    def save_then_delete(run, m, kind):
        save(run, m, kind)
        if m.epoch == 1 and kind == "last" and out.exists():
            shutil.rmtree(out)  # a user cleaning up, mid-run

    monkeypatch.setattr(loop, "save", save_then_delete)
    r = cli("train", "configs/smoke.yaml", "--out", out, sets=TINY)
    assert r.exit_code == 2 and f"{out}: the run directory (or its config.yaml) went away while it trained" in r.output
    assert not out.exists()


def test_the_process_ends_with_its_whole_output_and_its_exit_code_when_piped(tmp_path):
    """main() ends the process with os._exit once the command is done (the interpreter's teardown is
    skipped): what was printed into a pipe, and the exit code, must come out whole."""
    shown = CliRunner().invoke(app, ["config", "show", "configs/smoke.yaml"])
    p = subprocess.run([sys.executable, "-m", "stnexp", "config", "show", "configs/smoke.yaml"], capture_output=True)
    assert p.returncode == 0 and p.stdout.decode() == shown.output and len(p.stdout) > 500
    missing = tmp_path / "missing.yaml"
    p = subprocess.run([sys.executable, "-m", "stnexp", "config", "show", str(missing)], capture_output=True)
    assert p.returncode == 2 and p.stderr.decode().startswith(f"error: {missing}"), p.stderr.decode()
