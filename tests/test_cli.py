import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY
from typer.testing import CliRunner

import stnexp
from stnexp import config, models
from stnexp.cli import app
from stnexp.data import idx, mnist
from stnexp.errors import UserError
from stnexp.results import paper

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_log_says_where_the_time_went_phase_by_phase(tiny_run):
    """train.log (debug lines) times each phase: the digits, the training, the one scoring pass, then each
    output made from the scores, in the order they are written."""
    log = (tiny_run / "train.log").read_text()
    phases = ["digits on cpu in", "training:", "scoring:", "transformer pictures:", "rectification:"]
    phases += ["analysis:", "invariance figures:", "curves:", "tables:", "report page:"]
    at = [log.find(f" DEBUG {phase}") for phase in phases]
    assert -1 not in at, [p for p, i in zip(phases, at) if i == -1]
    assert at == sorted(at)


def test_train_writes_tables_checkpoints_pictures_and_logs(tiny_run):
    for name in (
        "config.yaml",
        "env.json",
        "metrics.csv",
        "results.md",
        "results.csv",
        "results.json",
        "analysis.md",
        "analysis.json",
        "report.html",
        "train.log",
    ):
        assert (tiny_run / name).is_file(), name
    for model in ("cnn", "st-cnn"):
        for kind in ("best", "last"):
            assert (tiny_run / "checkpoints" / "rts" / f"{model}-s0-{kind}.pt").is_file()
    from PIL import Image

    for picture in ("curves/rts/s0.png", "invariance/rts/s0.png", "rectification/rts/st-cnn-s0.png"):
        with Image.open(tiny_run / picture) as png:
            png.verify()  # training curves, error by the true distortion, what the transformer undid
    with Image.open(tiny_run / "stn" / "rts" / "st-cnn-s0.png") as png:
        png.verify()  # a complete, well-formed PNG
    with Image.open(tiny_run / "stn" / "rts" / "st-cnn-s0.png") as png:
        assert png.width > png.height > 2 * 42  # 32 pairs of 42x42 digits, 8 pairs a row
    assert sorted(p.name for p in (tiny_run / "stn").rglob("*")) == [
        "rts",
        "st-cnn-s0.pdf",
        "st-cnn-s0.png",
    ]  # none for the CNN
    # every figure also as a PDF beside its PNG, for papers
    for picture in ("curves/rts/s0", "invariance/rts/s0", "rectification/rts/st-cnn-s0", "stn/rts/st-cnn-s0"):
        assert (tiny_run / f"{picture}.pdf").read_bytes().startswith(b"%PDF"), picture
    rows = json.loads((tiny_run / "results.json").read_text())
    assert {(r["model"], r["checkpoint"]) for r in rows} == {
        (m, k) for m in ("cnn", "st-cnn") for k in ("best", "last")
    }
    for r in rows:
        assert r["n_test"] == 1000 and r["accuracy"] == r["correct"] / 1000 and r["status"] == "ok"  # data.test_size
        assert r["error"] == round(0.1 * (1000 - r["correct"]), 1)  # 1.8, not 1.7999999999999998
    md = (tiny_run / "results.md").read_text()
    assert "| cnn | 119,050 |" in md and "| st-cnn |" in md
    metrics = (tiny_run / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("variant,seed,model,epoch,step,train_loss,train_acc,val_acc,lr,seconds,images_per_s")
    assert len(metrics) == 1 + 2 * 2  # two models, two epochs
    env = json.loads((tiny_run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"


def _git_state_of(package_parent: Path) -> dict:
    """What env.json records of git when stnexp is imported from `package_parent`/stnexp."""
    code = "import json; from stnexp.store.env import _git_state; print(json.dumps(_git_state()))"
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=package_parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_env_records_the_commit_and_dirtiness_of_the_checkout_stnexp_runs_from(tiny_run, tmp_path):
    def git(*args, cwd):
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    package = Path(stnexp.__file__).resolve().parent
    clone = tmp_path / "clone"
    shutil.copytree(package, clone / "stnexp", ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", cwd=clone)
    git("add", ".", cwd=clone)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x", cwd=clone)
    head = git("rev-parse", "HEAD", cwd=clone)
    assert _git_state_of(clone) == {"git_commit": head, "git_dirty": False}
    (clone / "notes.txt").write_text("an untracked file is not a change to the code\n")
    assert _git_state_of(clone) == {"git_commit": head, "git_dirty": False}
    with open(clone / "stnexp" / "seeds.py", "a") as f:
        f.write("# edited\n")
    assert _git_state_of(clone) == {"git_commit": head, "git_dirty": True}
    # a package that is not the top of a checkout (installed, or vendored into another repository) has none
    vendored = clone / "vendor"
    shutil.copytree(package, vendored / "stnexp", ignore=shutil.ignore_patterns("__pycache__"))
    assert _git_state_of(vendored) == {"git_commit": None, "git_dirty": None}
    plain = tmp_path / "plain"
    shutil.copytree(package, plain / "stnexp", ignore=shutil.ignore_patterns("__pycache__"))
    assert _git_state_of(plain) == {"git_commit": None, "git_dirty": None}
    # and a run records what stnexp ran from: here the tests' own stnexp
    env = json.loads((tiny_run / "env.json").read_text())
    assert {k: env[k] for k in ("git_commit", "git_dirty")} == _git_state_of(package.parent)


def test_an_eval_sweeps_plot_is_named_after_the_whole_eval_name_dots_and_all(tiny_run, tmp_path):
    import shutil

    from stnexp.store import runs

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for name in ("v1.1", "v1.2"):
        r = invoke("eval", run, "--sweep", "rotation=0:7.5:7.5", "--name", name)
        assert r.exit_code == 0, r.output
    r = invoke("eval", run, "--sweep", "rotation=0:7.5:7.5")
    assert r.exit_code == 0, r.output
    stems = ["v1.1", "v1.2", "best-on-sweep-rotation=0_7.5_7.5"]  # not v1.png twice, nor ..._7.5_7.png
    for suffix in (".png", ".pdf"):
        assert sorted(p.name for p in (run / "evals").glob("*" + suffix)) == sorted(x + suffix for x in stems)
    # the run's list of its files (what --force clears) holds them
    assert {run / "evals" / (x + ".png") for x in stems} <= set(runs.written_files(run))


def test_train_tests_each_pair_of_models_on_the_same_digits_and_measures_rectification(tiny_run):
    result = json.loads((tiny_run / "analysis.json").read_text())
    (pair,) = result["paired"]
    assert result["across_seeds"] == []  # one seed: nothing to test across seeds
    best = {e["model"]: e for e in json.loads((tiny_run / "results.json").read_text()) if e["checkpoint"] == "best"}
    assert (pair["model_a"], pair["model_b"]) == ("cnn", "st-cnn")
    # the digits only one model gets right account for the whole difference in their counts
    assert pair["only_b_right"] - pair["only_a_right"] == best["st-cnn"]["correct"] - best["cnn"]["correct"]
    # one pair: Holm leaves its p as it is
    assert (
        0 <= pair["p_value"] <= 1
        and pair["p_holm"] == pair["p_value"]
        and pair["significant"] == (pair["p_value"] < 0.05)
    )
    (rect,) = result["rectification"]
    assert rect["model"] == "st-cnn" and rect["angle_std_before"] == pytest.approx(
        26, abs=1.5
    )  # U[-45, 45]: 90 / sqrt(12)
    # the spreads after are this checkpoint's transformer on these test digits, at its trained precision
    # (test_analysis.py checks that the measure itself is right on transformers of known effect)
    import stnexp
    from stnexp.results import analysis

    st = stnexp.load(tiny_run / "checkpoints" / "rts" / "st-cnn-s0-best.pt")
    digits = stnexp.test_set(st)
    with st.autocast():
        again = analysis.rectification(st.model, digits.images, digits.params, digits.images.shape[-1]).row
    after = [k for k in rect if k.endswith("_after")]
    assert after and {k: rect[k] for k in after} == {k: again[k] for k in after}
    md = (tiny_run / "analysis.md").read_text()
    assert "McNemar" in md and "| rts | 0 | st-cnn |" in md
    by = {(r["model"], r["by"]): r for r in result["by_distortion"]}
    assert set(by) == {(m, k) for m in ("cnn", "st-cnn") for k in ("angle", "scale", "shift")}
    # the bins hold every test digit, and their errors weigh up to the model's error
    r = by[("cnn", "angle")]
    assert sum(r["n"]) == 1000
    assert sum(e * n for e, n in zip(r["error"], r["n"])) / 1000 == pytest.approx(best["cnn"]["error"], abs=0.01)


def test_eval_reproduces_results_json_exactly(tiny_run, tmp_path):
    for kind in ("best", "last"):
        r = invoke("eval", tiny_run, "--checkpoint", kind, "--out", tmp_path / kind)
        assert r.exit_code == 0, r.output
        got = {
            (e["model"], e["seed"]): e["accuracy"]
            for e in json.loads((tmp_path / kind / f"{kind}-on-own.json").read_text())
        }
        want = {
            (e["model"], e["seed"]): e["accuracy"]
            for e in json.loads((tiny_run / "results.json").read_text())
            if e["checkpoint"] == kind
        }
        assert got == want


@pytest.mark.slow
@pytest.mark.parametrize("trained_with_bf16", [True, False])
def test_eval_scores_at_the_precision_the_model_trained_at_on_any_machine(tmp_path, monkeypatch, trained_with_bf16):
    from stnexp import device
    from stnexp.store import checkpoints

    # `train.amp: auto` resolves by the CPU's bf16 instructions: train on one kind of CPU, score on the other
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: trained_with_bf16)
    # bf16 is emulated on AVX2 CPUs, slowly: few digits, undistorted 28x28 ones
    r = _train(tmp_path / "run", sets=["data.train_size=128", "data.val_size=64", "data.test_size=200", PLAIN])
    assert r.exit_code == 0, r.output
    want = "bf16" if trained_with_bf16 else "fp32"
    ck = checkpoints.load(tmp_path / "run" / "checkpoints" / "plain" / "st-cnn-s0-best.pt")
    assert ck["precision"] == want and json.loads((tmp_path / "run" / "env.json").read_text())["precision"] == want
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: not trained_with_bf16)
    r = invoke("eval", tmp_path / "run", "--out", tmp_path / "eval")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "eval" / "best-on-own.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [(e["model"], e["correct"]) for e in rows] == [
        (e["model"], e["correct"]) for e in results if e["checkpoint"] == "best"
    ]
    assert {e["precision"] for e in rows} == {want} == {e["precision"] for e in results}
    assert (
        f"Scored at the precision each model trained at ({want}: cnn, st-cnn)."
        in (tmp_path / "eval" / "best-on-own.md").read_text()
    )


def test_eval_of_one_checkpoint_on_other_variants(tiny_run, tmp_path):
    ck = tiny_run / "checkpoints" / "rts" / "st-cnn-s0-best.pt"
    r = invoke("eval", ck, "--variant", "rts", "--variant", "translated", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "st-cnn-s0-best-on-rts+translated.json").read_text())
    assert [row["tested_on"] for row in rows] == ["rts", "translated"]
    assert "translated" in r.output


def test_eval_of_a_loose_checkpoint_writes_beside_it(tiny_run, tmp_path):
    import shutil

    ck = tmp_path / "model.pt"
    shutil.copy(tiny_run / "checkpoints" / "rts" / "cnn-s0-best.pt", ck)
    r = invoke("eval", ck)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "evals" / "model-on-own.json").is_file()


def test_eval_draws_a_variant_of_another_canvas_on_the_models_and_says_so(tiny_run, tmp_path):
    r = invoke("eval", tiny_run, "--variant", "rotated", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "--variant rotated: drawn on the 42x42 canvas the models of rts take (its own is 28x28" in r.output
    # progress: each checkpoint scored says how far eval is and, until the last, the time left
    assert re.search(r"scored \S+cnn-s0-best.pt \(1/2, about \dm \d\ds left\)", r.output), r.output
    assert re.search(r"scored \S+st-cnn-s0-best.pt \(2/2\)", r.output), r.output
    r = invoke("eval", tiny_run, "--variant", "rotated", "--canvas", "model", "--out", tmp_path)
    assert r.exit_code == 0 and "drawn on the" not in r.output, r.output  # asked for: nothing to say
    drawn = json.loads((tmp_path / "best-on-rotated.json").read_text())
    asked = json.loads((tmp_path / "best-on-rotated-canvas-model.json").read_text())
    assert [row["correct"] for row in drawn] == [row["correct"] for row in asked]
    # a side no model takes is still refused, naming the one it takes
    r = invoke("eval", tiny_run, "--variant", "rotated", "--canvas", "28", "--out", tmp_path)
    assert r.exit_code == 2 and "--canvas 28: cnn-s0-best.pt takes 42x42" in r.output, r.output


def test_eval_renders_a_variant_on_the_models_canvas_or_an_ad_hoc_one(tiny_run, tmp_path):
    r = invoke("eval", tiny_run, "--variant", "plain", "--canvas", "model", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "best-on-plain-canvas-model.json").read_text())
    assert {(row["model"], row["tested_on"]) for row in rows} == {("cnn", "plain"), ("st-cnn", "plain")}
    # the centred, upright digits of `plain` on 42x42 are the `translated` digits with no shift
    r = invoke("eval", tiny_run, "--set", "data.variants.mid={canvas: 42}", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    mid = json.loads((tmp_path / "best-on-mid.json").read_text())
    assert [row["correct"] for row in mid] == [row["correct"] for row in rows]
    for bad, message in [
        (["--canvas", "7"], "--canvas '7': expected model or a side in px from 8 to 512"),
        (["--set", "train.lr=1"], "--set train: eval takes only data.variants.NAME=..."),
        (["--set", "data.variants.v={rotation: [1]}"], "data.variants.v.rotation: expected [min, max]"),
        (["--variant", "nope"], "--variant nope: not a variant of the run or --set"),
    ]:
        r = invoke("eval", tiny_run, *bad, "--out", tmp_path)
        assert r.exit_code == 2 and message in r.output, (bad, r.output)


@pytest.mark.slow
def test_evaluations_keep_their_own_names_and_an_index(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert invoke("eval", run, "--variant", "rts", "--variant", "translated").exit_code == 0
    ck = run / "checkpoints" / "rts" / "st-cnn-s0-best.pt"
    assert invoke("eval", ck, "--variant", "translated").exit_code == 0
    evals = run / "evals"
    assert sorted(p.name for p in evals.glob("*.json")) == [
        "best-on-rts+translated.json",
        "st-cnn-s0-best-on-translated.json",
    ]
    assert (
        len(json.loads((evals / "best-on-rts+translated.json").read_text())) == 4
    )  # not replaced by the one-row table
    # the same evaluation again is refused, with --force replaced, with --name kept beside
    again = invoke("eval", ck, "--variant", "translated")
    assert (
        again.exit_code == 2
        and "evaluation 'st-cnn-s0-best-on-translated' exists" in again.output
        and "--force" in again.output
    )
    assert invoke("eval", ck, "--variant", "translated", "--force").exit_code == 0
    assert invoke("eval", ck, "--variant", "translated", "--name", "second").exit_code == 0
    index = (evals / "index.md").read_text().splitlines()
    names = [line.split("`")[1] for line in index if line.startswith("- `")]
    assert names == ["best-on-rts+translated", "st-cnn-s0-best-on-translated", "second"]
    # an eval name may not be a file the run or the index owns: results.md stays the run's
    own = (run / "results.md").read_bytes()
    for name in ("results", "index", "analysis"):
        r = invoke("eval", run, "--out", run, "--name", name, "--force")
        assert (
            r.exit_code == 2
            and f"--name {name}: the name of a file that a run or the evaluations' index owns" in r.output
        )
    assert (run / "results.md").read_bytes() == own
    # train --force clears a run's evaluations, those its index lists, with the rest of what it wrote;
    # a file of the user's there stays, though it looks like a table
    (evals / "notes.md").write_text("mine")
    r = invoke(
        "train",
        "configs/smoke.yaml",
        "--out",
        run,
        "--force",
        *[a for s in TINY for a in ("--set", s)],
        "--set",
        "train.epochs=1",
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in evals.iterdir()) == ["notes.md"]


def test_evals_that_end_together_each_get_their_line_in_the_index(tmp_path, monkeypatch):
    import threading
    import time

    from stnexp.store import atomic, evals

    write = atomic.write_text

    def slow(path, text):  # widen the window between reading the index and writing it back
        time.sleep(0.05)
        write(path, text)

    monkeypatch.setattr(atomic, "write_text", slow)
    start = threading.Barrier(6)

    def one(i):
        start.wait()
        evals.index_eval(tmp_path, f"e{i}", "a line")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(evals.eval_names(tmp_path)) == [f"e{i}" for i in range(6)]


def test_an_eval_whose_name_another_eval_is_writing_exits_2(tiny_run, tmp_path):
    import fcntl
    import os

    out = tmp_path / "ev"
    out.mkdir()
    fd = os.open(out / ".mine.eval-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running `stnexp eval --name mine` holds it
    try:
        r = invoke("eval", tiny_run, "--out", out, "--name", "mine")
    finally:
        os.close(fd)
    assert r.exit_code == 2 and "evaluation 'mine' is being written by another stnexp eval" in r.output
    assert not (out / "mine.md").exists()
    assert invoke("eval", tiny_run, "--out", out, "--name", "mine").exit_code == 0  # once it is done
    assert not (out / ".mine.eval-lock").exists()


def test_a_configs_run_folder_stands_for_its_newest_run(tiny_run, tmp_path):
    import shutil

    folder = tmp_path / "runs" / "smoke"
    for stamp in ("20260101-000000", "20260202-000000"):
        shutil.copytree(tiny_run, folder / stamp, ignore=shutil.ignore_patterns("evals"))
    r = invoke("eval", folder, "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    assert f"using its newest run, {folder / '20260202-000000'}" in r.output
    r = invoke("report", folder)
    assert r.exit_code == 0 and "20260202-000000" in r.output


def test_train_resumes_a_run_directory_with_its_own_config(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    r = invoke("train", run, "--resume")
    assert r.exit_code == 0, r.output
    # nothing is trained again: the run says so, shows no epoch, and its checkpoints stay as they were
    assert "rts seed 0: already trained" in r.output and not re.search(r"epoch \d+/", r.output)
    for ck in (tiny_run / "checkpoints").rglob("*.pt"):
        assert (run / ck.relative_to(tiny_run)).read_bytes() == ck.read_bytes()
    assert json.loads((run / "results.json").read_text()) == json.loads((tiny_run / "results.json").read_text())
    r = invoke("train", run)
    assert r.exit_code == 2 and "a directory; to continue a run pass --resume" in r.output
    r = invoke("train", run, "--resume", "--set", "train.lr=0.5")
    assert r.exit_code == 2 and "the config differs from the run's in train.lr" in r.output


@pytest.mark.slow
def test_the_best_checkpoint_is_the_epoch_of_highest_validation_accuracy(tmp_path, monkeypatch):
    from stnexp.training import loop

    scripted = {1: 0.5, 2: 0.9, 3: 0.7}  # validation accuracy peaks at epoch 2 of 3
    monkeypatch.setattr(loop, "validation", lambda run, m, val: scripted[len(m.history) + 1])
    sets = [a for s in TINY for a in ("--set", s)]
    assert (
        invoke("train", "configs/smoke.yaml", "--out", tmp_path / "three", *sets, "--set", "train.epochs=3").exit_code
        == 0
    )
    monkeypatch.undo()
    assert (
        invoke("train", "configs/smoke.yaml", "--out", tmp_path / "two", *sets, "--set", "train.epochs=2").exit_code
        == 0
    )
    for model in ("cnn", "st-cnn"):
        best = torch.load(tmp_path / "three" / "checkpoints" / "rts" / f"{model}-s0-best.pt", weights_only=True)
        last = torch.load(tmp_path / "three" / "checkpoints" / "rts" / f"{model}-s0-last.pt", weights_only=True)
        after_two = torch.load(tmp_path / "two" / "checkpoints" / "rts" / f"{model}-s0-last.pt", weights_only=True)
        assert (best["epoch"], best["best_val"], last["epoch"]) == (2, 0.9, 3)
        # the weights of epoch 2 (the same batches and steps as a run that stopped there), not the last ones
        assert all(torch.equal(best["model"][k], after_two["model"][k]) for k in best["model"])
        assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_training_validation_and_test_digits_are_disjoint_by_index(monkeypatch):
    """Each digit's index into the 60,000 training images is written into its pixels: the training
    digits are the first train_size, the validation digits the last val_size, the test digits the
    test files' first test_size; a test_size over what the files hold is refused."""
    import types

    import numpy as np

    from stnexp import data

    def numbered(n, offset):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        i = np.arange(n) + offset
        images[:, 0, 0], images[:, 0, 1], images[:, 0, 2] = i % 256, (i // 256) % 256, i // 65536
        return images

    fake = types.SimpleNamespace(
        train_images=numbered(60000, 0),
        train_labels=np.zeros(60000, dtype=np.uint8),
        test_images=numbered(10000, 100000),
        test_labels=np.zeros(10000, dtype=np.uint8),
    )
    monkeypatch.setattr(mnist, "load", lambda *a: fake)

    def index(d):
        px = d.images[:, 0, :3].long()
        return set((px[:, 0] + 256 * px[:, 1] + 65536 * px[:, 2]).tolist())

    for train_size, val_size, test_size in [(50000, 10000, 10000), (1024, 512, 300), (59000, 0, 1)]:
        cfg = config.DataConfig(train_size=train_size, val_size=val_size, test_size=test_size)
        split = data.split(cfg, torch.device("cpu"))
        train, val, test = index(split.train), index(split.val), index(split.test)
        assert train == set(range(train_size)) and val == set(range(60000 - val_size, 60000))
        assert test == set(range(100000, 100000 + test_size)) and len(split.test.labels) == test_size
        assert not (train & val) and not (train & test) and not (val & test)
    with pytest.raises(UserError, match=r"^data.test_size = 10001 but the test files hold 10000 digits$"):
        data.split(config.DataConfig(test_size=10001), torch.device("cpu"))


def test_runs_lists_each_run_with_its_errors_and_status(tiny_run, tmp_path):
    import fcntl
    import os
    import shutil

    for name in ("a", "b", "c", "d", "old", "old-partial"):
        shutil.copytree(tiny_run, tmp_path / "smoke" / name)
    assert json.loads((tiny_run / ".stnexp-run").read_text())["state"] == "finished"
    # the state is data in the marker: Ctrl-C writes `interrupted`, a killed process leaves `training`
    for name, state in (("b", "interrupted"), ("d", "training")):
        marker = tmp_path / "smoke" / name / ".stnexp-run"
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "state": state}))
    # runs made before the marker held a state: an interrupted one said so in its table's title
    for name in ("old", "old-partial"):
        (tmp_path / "smoke" / name / ".stnexp-run").write_text(json.dumps({"stnexp": "0.2.0.dev0"}))
    md = tmp_path / "smoke" / "old-partial" / "results.md"
    md.write_text(
        md.read_text().replace(
            "Best checkpoint by validation accuracy",
            "Best checkpoint by validation accuracy (partial: the run was interrupted)",
        )
    )
    fd = os.open(tmp_path / "smoke" / "c" / ".stnexp-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a training process holds it
    try:
        r = invoke("runs", tmp_path)
    finally:
        os.close(fd)
    assert r.exit_code == 0, r.output
    rows = {line.split(" | ")[0].strip("| "): line for line in r.output.splitlines() if line.startswith("| smoke/")}
    assert set(rows) == {"smoke/a", "smoke/b", "smoke/c", "smoke/d", "smoke/old", "smoke/old-partial"}
    best = {
        e["model"]: e["error"] for e in json.loads((tiny_run / "results.json").read_text()) if e["checkpoint"] == "best"
    }
    assert f"cnn {best['cnn']:.2f}; st-cnn {best['st-cnn']:.2f}" in rows["smoke/a"]
    status = {name: row.rsplit(" | ", 1)[1].strip(" |") for name, row in rows.items()}
    assert status == {
        "smoke/a": "finished",
        "smoke/b": "interrupted",
        "smoke/c": "running",
        "smoke/d": "interrupted",
        "smoke/old": "finished",
        "smoke/old-partial": "interrupted",
    }
    assert invoke("runs", tmp_path / "none").exit_code == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda rows: [{**r, "error": "1.5"} for r in rows],
        lambda rows: [{**r, "seed": None} for r in rows],
        lambda rows: {"not": "a list"},
        lambda rows: ["a", "b"],
    ],
)
def test_a_damaged_results_json_is_refused_by_report_and_marked_by_runs_which_lists_the_others(
    tiny_run, tmp_path, damage
):
    import shutil

    for name in ("good", "bad"):
        shutil.copytree(tiny_run, tmp_path / "smoke" / name, ignore=shutil.ignore_patterns("checkpoints"))
    results = tmp_path / "smoke" / "bad" / "results.json"
    results.write_text(json.dumps(damage(json.loads(results.read_text()))))
    r = invoke("report", tmp_path / "smoke" / "bad")
    assert r.exit_code == 2 and f"{results}: not a results table written by stnexp" in r.output
    r = invoke("runs", tmp_path)
    assert r.exit_code == 0, r.output
    rows = {line.split(" | ")[0].strip("| "): line for line in r.output.splitlines() if line.startswith("| smoke/")}
    assert rows["smoke/good"].endswith("| finished |")
    assert rows["smoke/bad"].endswith("| damaged: results.json is not stnexp's |")


def test_external_idx_eval_scores_the_set_as_is(tiny_run, tmp_path):
    from stnexp import config, data

    d = mnist.load()
    x = torch.from_numpy(d.test_images[:300].copy())
    y = torch.from_numpy(d.test_labels[:300].copy()).long()
    s = data.fixed(data.Digits(x, y), config.VariantConfig(preset="rts"), 5, "ext", "test")
    idx.write(tmp_path / "img.gz", (s.images[:, 0] * 255).round().to(torch.uint8).numpy())
    idx.write(tmp_path / "lab.gz", d.test_labels[:300])
    r = invoke(
        "eval", tiny_run, "--images", tmp_path / "img.gz", "--labels", tmp_path / "lab.gz", "--out", tmp_path / "o"
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "o" / "best-on-img.json").read_text())
    assert len(rows) == 2 and all(row["n_test"] == 300 for row in rows)
    # a 28x28 set does not fit models trained on 42x42 canvases
    idx.write(tmp_path / "small.gz", d.test_images[:10])
    idx.write(tmp_path / "small-lab.gz", d.test_labels[:10])
    r = invoke("eval", tiny_run, "--images", tmp_path / "small.gz", "--labels", tmp_path / "small-lab.gz")
    assert r.exit_code == 2 and "images are 28x28" in r.output and "takes 42x42" in r.output
    idx.write(tmp_path / "lab9.gz", d.test_labels[:9])
    r = invoke("eval", tiny_run, "--images", tmp_path / "small.gz", "--labels", tmp_path / "lab9.gz")
    assert r.exit_code == 2 and "9 labels for 10 images" in r.output


def test_non_empty_out_is_refused_without_resume_or_force(tiny_run):
    r = invoke("train", "configs/smoke.yaml", "--out", tiny_run)
    assert r.exit_code == 2 and "not empty" in r.output and "--resume" in r.output


PLAIN = "data.variants={plain: {preset: plain}}"


def _train(out, *extra, sets=()):
    args = ["train", "configs/smoke.yaml", "--out", out, *extra]
    for s in TINY + ["train.epochs=1", "data.train_size=256", *sets]:
        args += ["--set", s]
    return invoke(*args)


@pytest.mark.slow
def test_force_overwrites_a_run_and_only_the_files_it_wrote(tmp_path):
    out = tmp_path / "run"
    assert _train(out).exit_code == 0
    (out / "mine.txt").write_text("keep me")
    (out / "checkpoints" / "mine").mkdir()
    (out / "checkpoints" / "mine" / "keep.pt").write_text("keep me")
    (out / "stn" / "my.png").write_text("keep me")
    accuracies = [r["accuracy"] for r in json.loads((out / "results.json").read_text())]
    (out / "results.json").write_text("old")
    r = _train(out, "--force")
    assert r.exit_code == 0, r.output
    for mine in ("mine.txt", "checkpoints/mine/keep.pt", "stn/my.png"):
        assert (out / mine).read_text() == "keep me", mine
    assert [r["accuracy"] for r in json.loads((out / "results.json").read_text())] == accuracies


@pytest.mark.parametrize("planted", ["config.yaml", "train.log", "results.md"])
def test_force_refuses_a_folder_stnexp_did_not_make(tmp_path, planted):
    out = tmp_path / "mine"
    out.mkdir()
    (out / planted).write_text("the user's own")
    r = _train(out, "--force")
    assert r.exit_code == 2 and "not a stnexp run directory" in r.output
    assert [p.name for p in out.iterdir()] == [planted] and (out / planted).read_text() == "the user's own"


def test_force_on_the_working_directory_refuses_a_non_run(tmp_path, monkeypatch):
    import shutil

    shutil.copy("configs/smoke.yaml", tmp_path / "config.yaml")
    (tmp_path / "train.log").write_text("mine")
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "config.yaml", "--out", ".", "--force", "--set", "data.train_size=256")
    assert r.exit_code == 2 and "not a stnexp run directory" in r.output
    assert (tmp_path / "train.log").read_text() == "mine" and (tmp_path / "config.yaml").is_file()


def test_a_run_of_0_1_without_the_marker_is_still_a_run_for_force(tmp_path):
    import shutil

    out = tmp_path / "old"
    shutil.copytree("tests/data/v01-run", out)
    assert not (out / ".stnexp-run").exists()
    r = _train(out, "--force")
    assert r.exit_code == 0, r.output
    assert not (out / "checkpoints" / "rotated").exists()  # the old run's files are gone, nothing else was there


@pytest.mark.slow
def test_a_second_train_into_a_directory_in_use_exits_2_naming_the_first(tmp_path):
    import fcntl
    import os

    out = tmp_path / "run"
    assert _train(out).exit_code == 0
    # another process holds the run's lock, as a training process does for its lifetime
    fd = os.open(out / ".stnexp-lock", os.O_RDWR)
    other = os.open(out / ".stnexp-lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, b"pid 4242 on host, since now")
    try:
        before = sorted(p.name for p in out.rglob("*"))
        for extra in (["--force"], ["--resume"]):
            r = _train(out, *extra)
            assert r.exit_code == 2 and "a run is training into it (pid 4242 on host, since now)" in r.output
        assert sorted(p.name for p in out.rglob("*")) == before
    finally:
        os.close(fd)
        os.close(other)
    assert _train(out, "--force").exit_code == 0  # released: a stale lock file is no obstacle


def test_preview_shows_each_variants_first_test_digits_beside_their_distorted_test_versions(tmp_path, monkeypatch):
    from PIL import Image

    from stnexp import data
    from stnexp.results import pictures

    shown = {}
    draw = pictures.pairs
    monkeypatch.setattr(
        pictures,
        "pairs",
        lambda left, right, path, title, *a: (
            shown.setdefault(path.stem, (left, right)) and draw(left, right, path, title, *a)
        ),
    )
    r = invoke(
        "preview", "configs/rts.yaml", "--out", tmp_path, "--n", 16, "--set", "data.variants.r={preset: rotated}"
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf", "r.png", "rts.pdf", "rts.png"]
    assert str(tmp_path / "rts.png") in r.output
    cfg = config.load("configs/rts.yaml", sets=["data.variants.r={preset: rotated}"])
    split = data.split(cfg.data, torch.device("cpu"))
    for name in ("rts", "r"):
        left, right = shown[name]
        assert torch.equal(left, split.test.images[:16].unsqueeze(1).float() / 255.0)  # the originals
        assert torch.equal(right, data.fixed(split.test, cfg.variant(name), cfg.seeds[0], name, "test").images[:16])
        with Image.open(tmp_path / f"{name}.png") as png:  # 16 pairs: two rows of 8, each digit zoomed twice
            side = cfg.variant(name).canvas
            assert png.width >= 8 * 2 * side * pictures.ZOOM and png.height >= 2 * side * pictures.ZOOM


def test_config_show_applies_set_and_schema_is_json():
    r = invoke("config", "show", "configs/smoke.yaml", "--set", "train.lr=0.125")
    assert r.exit_code == 0 and "lr: 0.125" in r.output
    r = invoke("config", "schema")
    assert r.exit_code == 0 and json.loads(r.output)["title"] == "Config"


def test_config_show_counts_each_models_parameters_on_each_variant():
    r = invoke("config", "show", "configs/paper/table1.yaml")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    head = lines.index("# parameters of each model on each variant's canvas:")
    assert lines[head + 1].split() == [
        "#",
        "model",
        "rotated",
        "(28x28)",
        "rts",
        "(42x42)",
        "projective",
        "(28x28)",
        "elastic",
        "(28x28)",
        "cluttered",
        "(60x60)",
    ]
    assert lines[head + 3].split() == ["#", "cnn", "105,610", "119,050", "105,610", "105,610", "167,050"]
    assert len(lines) == head + 2 + 8  # every model of the config


@pytest.mark.parametrize("column", ["rotated", "rts", "projective", "elastic", "cluttered", "table1"])
def test_every_paper_config_is_the_papers_protocol(column):
    from stnexp import config
    from stnexp.results import paper

    cfg = config.load(f"configs/paper/{column}.yaml")
    t = cfg.train
    assert (t.iterations, t.batch_size, t.optimizer, t.lr, t.momentum, t.schedule, t.every, t.gamma) == (
        150000,
        256,
        "sgd",
        0.01,
        0.9,
        "step",
        50000,
        0.1,
    )
    assert cfg.seeds == [0, 1, 2] and (cfg.data.train_size, cfg.data.val_size) == (50000, 10000)
    # and nothing else that changes the numbers: no decay, warm-up or smoothing, MNIST itself, fresh
    # distortions, validation every epoch, no models' precision forced to bf16
    assert (t.weight_decay, t.warmup, t.label_smoothing, t.eval_every, t.amp) == (0.0, 0, 0.0, 1, "auto")
    assert cfg.data.root is None and cfg.data.resample_train
    assert all(m.stn is None or m.stn.loc_lr_scale == 1.0 for m in cfg.models.values())
    assert all(paper.column(cfg, v) for v in cfg.data.variants)
    # every model is the paper's (widths, norm, localisation net, pooling) in every column it can be:
    # table1.yaml's one set of transformers cannot pool on RTS and TC only, so there they are not
    for v in cfg.data.variants:
        rows = {paper.row(cfg, m, v) for m in cfg.models}
        if v == "cluttered" and column == "cluttered":
            assert rows == {"FCN", "CNN", "ST-FCN Aff", "ST-CNN Aff"}
        elif column == "table1" and paper.column(cfg, v) in paper.POOLED:
            assert rows == {"FCN", "CNN", None}
        else:
            assert rows == set(paper.ROWS)
    # the paper reports no localisation lr multiplier for MNIST, and a tenth measured worse (RESULTS.md)
    assert all(m.stn.loc_lr_scale == 1.0 for m in cfg.models.values() if m.stn)
    # the sizes `config show` prints for the paper's CNN and FCN (the paper's own are not known)
    side = {v: cfg.variant(v).canvas for v in cfg.data.variants}
    cnn = {28: 105_610, 42: 119_050, 60: 167_050}
    for v, s in side.items():
        fcn = (s * s * 256 + 256) + (256 * 200 + 200) + (200 * 10 + 10)  # three weight layers, 256/200 hidden
        assert (
            models.n_params(models.build(cfg.models["cnn"], s)),
            models.n_params(models.build(cfg.models["fcn"], s)),
        ) == (cnn[s], fcn)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_every_shipped_config_validates(name):
    from stnexp import config

    cfg = config.load(CONFIGS / name)
    # what the file says survives validation: a dump of it reads back to the same config
    assert config.validate(yaml.safe_load(config.dump(cfg))) == cfg
    # and every model runs on every variant's canvas, ten logits per image
    for v in cfg.data.variants:
        side = cfg.variant(v).canvas
        for m in cfg.models.values():
            with torch.no_grad():
                assert models.build(m, side).eval()(torch.zeros(2, 1, side, side)).shape == (2, 10)


def _copy_results(run, to, seed, error):
    """A second run with the tables of `run`, its seed and one error changed."""
    import shutil

    shutil.copytree(run, to, ignore=shutil.ignore_patterns("checkpoints", "stn"))
    rows = json.loads((to / "results.json").read_text())
    for r in rows:
        r["seed"] = seed
        if r["model"] == "cnn":
            r["error"] = error
    (to / "results.json").write_text(json.dumps(rows))


def test_report_merges_runs_and_puts_the_papers_number_beside_ours(tiny_run, tmp_path):
    rows = json.loads((tiny_run / "results.json").read_text())
    cnn = next(r["error"] for r in rows if r["model"] == "cnn" and r["checkpoint"] == "best")
    _copy_results(tiny_run, tmp_path / "second", 1, cnn + 2.0)
    r = invoke("report", tiny_run, tmp_path / "second", "--paper", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "| model | params | RTS |" in lines
    # the mean of the two seeds, its spread, and the paper's 0.8 in brackets
    assert f"| CNN | 119,050 | {cnn + 1.0:.2f} ± {2**0.5:.2f} (2 seeds) [0.8] |" in lines
    # the smoke config's transformer does not pool on RTS as the paper's did: not the paper's row
    st = next(line for line in lines if line.startswith("| st-cnn |"))
    assert "[" not in st and not any(line.startswith("| ST-CNN") for line in lines)
    assert any(f"`{tiny_run}`: 8 iterations of batch 128, seeds 0" in line for line in lines)
    # the 95% t-interval of two seeds: mean ± 12.706 * std / sqrt(2)
    assert f"- CNN, RTS: {cnn + 1.0:.2f} ± {12.706 * 2**0.5 / 2**0.5:.2f} (2 seeds)" in lines
    # report.md starts with what it reports (the runs, their commands, versions, machines), then the
    # table printed and its figure, then each run's analysis and pictures
    printed = r.output.strip().rsplit("\nwrote ", 1)[0]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.startswith(f"# stnexp report: `{tiny_run.name}`, `second`") and "; command `" in md and "torch " in md
    assert printed in md and md.index(printed) < md.index("![table1.png](images/table1.png)") < md.index("## Run 1")
    # the Table-1 figure: ours as mean and 95% interval over the two seeds, beside the paper's 0.8
    assert (tmp_path / "rep" / "table1.png").is_file() and (tmp_path / "rep" / "table1.pdf").is_file()
    plain = invoke("report", tiny_run)
    assert plain.exit_code == 0 and "| cnn | 119,050 |" in plain.output


def test_report_keeps_runs_of_different_recipes_apart_and_refuses_one_seed_given_twice(tiny_run, tmp_path):
    from stnexp import config

    rows = json.loads((tiny_run / "results.json").read_text())
    cnn = next(r["error"] for r in rows if r["model"] == "cnn" and r["checkpoint"] == "best")
    other = tmp_path / "other-lr"
    _copy_results(tiny_run, other, 1, cnn + 2.0)
    cfg = config.load(other / "config.yaml")
    (other / "config.yaml").write_text(
        config.dump(
            config.validate({**cfg.model_dump(mode="json"), "train": {**cfg.train.model_dump(mode="json"), "lr": 0.5}})
        )
    )
    r = invoke("report", tiny_run, other, "--paper")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert (
        f"| CNN ({tiny_run.name}) | 119,050 | {cnn:.2f} [0.8] |" in lines
        and f"| CNN (other-lr) | 119,050 | {cnn + 2.0:.2f} [0.8] |" in lines
    )
    # the same config, but a run interrupted after half its steps (metrics.csv ends at step 4 of 8)
    short = tmp_path / "short"
    _copy_results(tiny_run, short, 2, cnn + 3.0)
    metrics = (short / "metrics.csv").read_text().splitlines()
    (short / "metrics.csv").write_text(
        "\n".join([metrics[0]] + [m for m in metrics[1:] if m.split(",")[4] == "4"]) + "\n"
    )
    r = invoke("report", tiny_run, short, "--paper")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert (
        f"| CNN ({tiny_run.name}) | 119,050 | {cnn:.2f} [0.8] |" in lines
        and f"| CNN (short) | 119,050 | {cnn + 3.0:.2f} [0.8] |" in lines
    )
    assert any(f"`{short}`: 4 of 8 iterations (interrupted)" in line for line in lines)
    same = tmp_path / "same"
    _copy_results(tiny_run, same, 0, cnn)
    r = invoke("report", tiny_run, same)
    assert r.exit_code == 2 and f"{tiny_run} and {same} both hold seed 0 of cnn on rts with the same recipe" in r.output


def _with_lr(run, lr):
    from stnexp import config

    cfg = config.load(run / "config.yaml")
    train = {**cfg.train.model_dump(mode="json"), "lr": lr}
    (run / "config.yaml").write_text(config.dump(config.validate({**cfg.model_dump(mode="json"), "train": train})))


def test_report_never_averages_runs_of_different_recipes_whatever_their_folders_are_called(tiny_run, tmp_path):
    rows = json.loads((tiny_run / "results.json").read_text())
    cnn = next(r["error"] for r in rows if r["model"] == "cnn" and r["checkpoint"] == "best")
    # two folders of one name, a sweep child's name twice: runs of two recipes
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    _copy_results(tiny_run, a, 1, cnn + 2.0)
    _copy_results(tiny_run, b, 2, cnn + 4.0)
    _with_lr(b, 0.5)
    r = invoke("report", a, b)
    assert r.exit_code == 0, r.output
    assert f"| cnn (a/run) | 119,050 | {cnn + 2.0:.2f} |" in r.output.splitlines()
    assert f"| cnn (b/run) | 119,050 | {cnn + 4.0:.2f} |" in r.output.splitlines()
    # one run whose seeds trained 8 and 4 steps: two budgets, two rows, each named by its iterations
    both = tmp_path / "both"
    _copy_results(tiny_run, both, 0, cnn)
    rows = json.loads((both / "results.json").read_text())
    (both / "results.json").write_text(json.dumps(rows + [{**r, "seed": 1, "error": r["error"] + 1} for r in rows]))
    metrics = (both / "metrics.csv").read_text().splitlines()
    seed1 = [m.replace("rts,0,", "rts,1,", 1) for m in metrics[1:] if m.split(",")[4] == "4"]
    (both / "metrics.csv").write_text("\n".join(metrics + seed1) + "\n")
    lines = invoke("report", both).output.splitlines()
    assert f"| cnn (both, 8 iterations) | 119,050 | {cnn:.2f} |" in lines
    assert f"| cnn (both, 4 iterations) | 119,050 | {cnn + 1:.2f} |" in lines
    assert any(f"`{both}`: 4-8 of 8 iterations (interrupted)" in line for line in lines)
    # the same recipe at another precision (amp: auto is bf16 on one CPU, fp32 on another)
    fp32 = tmp_path / "fp32"
    _copy_results(tiny_run, fp32, 1, cnn + 2.0)
    rows = json.loads((fp32 / "results.json").read_text())
    (fp32 / "results.json").write_text(json.dumps([{**r, "precision": "fp32-test"} for r in rows]))
    lines = invoke("report", tiny_run, fp32).output.splitlines()
    assert f"| cnn ({tiny_run.name}) | 119,050 | {cnn:.2f} |" in lines
    assert f"| cnn (fp32) | 119,050 | {cnn + 2.0:.2f} |" in lines


def test_report_as_the_paper_counts_the_seeds_of_a_mean_and_names_a_diverged_one(tiny_run, tmp_path):
    rows = json.loads((tiny_run / "results.json").read_text())
    cnn = next(r["error"] for r in rows if r["model"] == "cnn" and r["checkpoint"] == "best")
    _copy_results(tiny_run, tmp_path / "s1", 1, cnn + 2.0)
    _copy_results(tiny_run, tmp_path / "s2", 2, 90.0)
    bad = json.loads((tmp_path / "s2" / "results.json").read_text())
    (tmp_path / "s2" / "results.json").write_text(
        json.dumps([{**r, "status": "diverged"} if r["model"] == "cnn" else r for r in bad])
    )
    r = invoke("report", tiny_run, tmp_path / "s1", tmp_path / "s2", "--paper")
    assert r.exit_code == 0, r.output
    assert f"| CNN | 119,050 | {cnn + 1.0:.2f} ± {2**0.5:.2f} (2 seeds, 1 diverged) [0.8] |" in r.output.splitlines()


def test_report_as_the_paper_gives_paper_rows_only_to_the_papers_models_and_lists_the_departures(tiny_run, tmp_path):
    """A run of configs/paper/rts.yaml's CNN and ST-CNN beside a CNN with batch norm and an unpooled
    ST-CNN: only the first two stand in the paper's rows; the others keep their names and sizes."""
    import shutil

    run = tmp_path / "paper-rts"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "stn"))
    paper_models = config.load("configs/paper/rts.yaml").models
    mine = {
        "cnn": paper_models["cnn"],
        "st-cnn-aff": paper_models["st-cnn-aff"],
        "cnn-bn": {"arch": "cnn", "norm": "batch"},
        "st-cnn": {"arch": "cnn", "stn": {"transform": "affine"}},
    }
    cfg = config.load(run / "config.yaml")
    raw = {
        **cfg.model_dump(mode="json"),
        "models": {k: v if isinstance(v, dict) else v.model_dump(mode="json") for k, v in mine.items()},
    }
    (run / "config.yaml").write_text(config.dump(config.validate(raw)))
    rows = [
        {"variant": "rts", "model": m, "seed": 0, "checkpoint": "best", "error": 1.0 + i, "params": 1000 + i}
        for i, m in enumerate(mine)
    ]
    (run / "results.json").write_text(json.dumps(rows))
    r = invoke("report", run, "--paper")
    assert r.exit_code == 0, r.output
    env = json.loads((run / "env.json").read_text())
    lines = r.output.splitlines()
    assert "| CNN | 1,000 | 1.00 [0.8] |" in lines and "| ST-CNN Aff | 1,001 | 2.00 [0.5] |" in lines
    assert "| cnn-bn | 1,002 | 3.00 |" in lines and "| st-cnn | 1,003 | 4.00 |" in lines
    assert f"- {paper.WIDTHS_NOTE}" in lines and f"- {paper.POOL_NOTE}" in lines
    assert (
        f"- `{run}`: 8 iterations (the paper: 150,000); train.batch_size 128 (the paper: 256); train.schedule "
        "constant (the paper: step); "
        "512 training and 256 validation digits (the paper: 50,000 and 10,000); tested on 1,000 digits (the paper: "
        "all 10,000); 1 seed (the paper: the mean of 3)"
        # the precision the run resolved: bf16 on a CPU with bf16 instructions, fp32 (no departure) elsewhere
        + ("; trained in bf16 mixed precision (the paper: fp32)" if env["precision"] == "bf16" else "")
        in lines
    )


def test_tensorboard_gets_each_models_scalars_per_epoch_and_the_transformers_picture(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = invoke(
        "train",
        "configs/smoke.yaml",
        "--out",
        tmp_path / "run",
        *[a for s in TINY for a in ("--set", s)],
        "--set",
        "train.tensorboard=true",
    )
    assert r.exit_code == 0, r.output
    for model in ("cnn", "st-cnn"):
        events = EventAccumulator(str(tmp_path / "run" / "tb" / "rts" / "s0" / model))
        events.Reload()
        tags = events.Tags()
        assert set(tags["scalars"]) == {"loss/train", "accuracy/train", "accuracy/val", "lr"}
        assert [e.step for e in events.Scalars("loss/train")] == [4, 8]  # the optimizer step after each of 2 epochs
        assert tags["images"] == (["transformer"] if model == "st-cnn" else [])
    from stnexp.store import runs

    runs.clear(tmp_path / "run", remove_dir=False)  # what --force does first
    assert not (tmp_path / "run" / "tb").exists()


def test_tensorboard_without_the_package_exits_2_before_any_run_directory(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    r = invoke("train", "configs/smoke.yaml", "--out", tmp_path / "run", "--set", "train.tensorboard=true")
    assert r.exit_code == 2 and "train.tensorboard: true needs the tensorboard package" in r.output
    assert not (tmp_path / "run").exists()


def test_report_of_a_folder_that_is_no_run_exits_2(tmp_path):
    r = invoke("report", tmp_path)
    assert r.exit_code == 2 and "not a stnexp run directory" in r.output


def test_misspelt_key_exits_2_naming_it(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrian: {epochs: 1}\n")
    r = invoke("preview", p)
    assert r.exit_code == 2
    assert r.output.strip() == "error: trian: unknown key (did you mean 'train'?)"


def test_unavailable_device_exits_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = invoke("train", "configs/smoke.yaml", "--device", "cuda", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "CUDA is not available" in r.output
    assert not (tmp_path / "x").exists()


def test_a_canvas_too_small_for_a_model_exits_2_before_any_run_directory(tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "configs/smoke.yaml", "--out", out, "--set", "data.variants.rts.canvas=9")
    assert r.exit_code == 2
    assert r.output.splitlines() == [
        "error: data.variants.rts: canvas 9 is too small for model cnn (it needs at least 24)",
        "error: data.variants.rts: canvas 9 is too small for model st-cnn (it needs at least 24)",
    ]
    assert not out.exists()


def test_transformer_pictures_of_look_alike_names_do_not_meet(tmp_path):
    from stnexp.store import artifacts

    one = artifacts.STN.path(tmp_path, variant="a", model="b-st", seed=0)
    assert one != artifacts.STN.path(tmp_path, variant="a-b", model="st", seed=0)


def test_a_terminal_that_cannot_encode_the_tables_gets_plain_characters(tiny_run, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    r = subprocess.run(
        [sys.executable, "-m", "stnexp", "eval", str(tiny_run), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "mean +- std" in r.stdout
    assert "mean ± std" in (tmp_path / "best-on-own.md").read_text(encoding="utf-8")  # the files keep the real sign


def test_an_external_set_that_is_empty_or_has_labels_outside_0_to_9_exits_2(tiny_run, tmp_path):
    import numpy as np

    idx.write(tmp_path / "none.gz", np.zeros((0, 42, 42), np.uint8))
    idx.write(tmp_path / "none-lab.gz", np.zeros((0,), np.uint8))
    r = invoke("eval", tiny_run, "--images", tmp_path / "none.gz", "--labels", tmp_path / "none-lab.gz")
    assert r.exit_code == 2 and "none.gz: holds no images" in r.output
    idx.write(tmp_path / "img.gz", np.zeros((3, 42, 42), np.uint8))
    idx.write(tmp_path / "lab.gz", np.array([1, 12, 3], np.uint8))
    r = invoke("eval", tiny_run, "--images", tmp_path / "img.gz", "--labels", tmp_path / "lab.gz")
    assert r.exit_code == 2 and "lab.gz: labels must be 0-9, found 12 (1 such)" in r.output


@pytest.mark.slow
def test_output_to_a_file_gets_plain_progress_lines_and_the_end_says_where_the_run_is(tmp_path, monkeypatch):
    from stnexp.training import loop

    monkeypatch.setattr(loop, "PLAIN_EVERY", 0.0)  # a line at every host read instead of every 30 s
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 0.0)
    out = tmp_path / "two"
    r = _train(out, sets=["seeds=[0, 1]"])  # CliRunner's output is not a terminal
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if " step " in line]
    assert lines and lines[0].startswith("rts s0 epoch 1/1 step 1/2, ")
    assert "images/s, cnn loss " in lines[0] and ", st-cnn loss " in lines[0] and lines[0].endswith(" left")
    assert lines[0] in (out / "train.log").read_text()
    assert r.output.splitlines()[-1].startswith("finished in ") and r.output.splitlines()[-1].endswith(
        f"run directory: {out}"
    )
    # with another group to come, the time left for this group and for the whole run
    first = next(line for line in r.output.splitlines() if line.startswith("rts s0 epoch 1/1 step 1/2, "))
    assert re.search(r"about \d+m \d\ds \(group\), \d+m \d\ds \(run\) left$", first), first
    assert next(line for line in r.output.splitlines() if line.startswith("rts s1 epoch 1/1 step 1/2, ")).endswith(
        "s left"
    )
    assert "(run)" not in next(line for line in r.output.splitlines() if line.startswith("rts s1 epoch 1/1 step 1/2, "))


def test_version_and_plain_help():
    import stnexp

    r = invoke("--version")
    assert r.exit_code == 0 and r.output == f"stnexp {stnexp.__version__}\n"
    r = invoke("--help")
    assert "Score trained models on their own, other or external test sets." in r.output  # whole, not cut
    r = invoke("train", "--help")
    assert "--set KEY=VALUE" in r.output and "--out DIR" in r.output and "list[str]" not in r.output
    r = invoke("preview", "--help")
    assert "--n N" in r.output and "int range" not in r.output


@pytest.mark.slow
def test_a_sweep_trains_each_combination_as_a_child_run_and_tables_them(tmp_path):
    import shutil

    out = tmp_path / "sweep"
    args = [
        "train",
        "configs/smoke.yaml",
        "--sweep",
        "train.lr=0.01,0.05",
        "--sweep",
        "models.st-cnn.loc_lr_scale=0.1",
        "--set",
        "data.train_size=256",
        "--set",
        "data.val_size=128",
        "--set",
        "data.test_size=200",
        "--out",
        out,
    ]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    children = ["01-lr=0.01-loc_lr_scale=0.1", "02-lr=0.05-loc_lr_scale=0.1"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == children
    from stnexp import config

    # each child is a normal run of the config with the swept values set (the flat 0.1 key lands in `stn`)
    child = config.load(out / children[1] / "config.yaml")
    assert child.train.lr == 0.05 and child.models["st-cnn"].stn.loc_lr_scale == 0.1
    rows = json.loads((out / "sweep.json").read_text())
    assert [(r["train.lr"], r["model"]) for r in rows] == [
        ("0.01", "cnn"),
        ("0.01", "st-cnn"),
        ("0.05", "cnn"),
        ("0.05", "st-cnn"),
    ]
    results = json.loads((out / children[1] / "results.json").read_text())
    want = next(e["error"] for e in results if e["model"] == "st-cnn" and e["checkpoint"] == "best")
    assert rows[3]["error_mean"] == want and rows[3]["seeds"] == 1
    assert (
        sum(r["best"] for r in rows if r["model"] == "cnn") == 1
        and sum(r["best"] for r in rows if r["model"] == "st-cnn") == 1
    )
    # `best` is the child of the highest validation accuracy, per model, as each child's metrics.csv has it
    for model in ("cnn", "st-cnn"):
        val = {
            child: max(
                float(m["val_acc"])
                for m in csv.DictReader((out / child / "metrics.csv").open())
                if m["model"] == model and m["val_acc"]
            )
            for child in children
        }
        (chosen,) = [r for r in rows if r["model"] == model and r["best"]]
        assert chosen["train.lr"] == ("0.01" if val[children[0]] >= val[children[1]] else "0.05")
    md = (out / "sweep.md").read_text()
    assert "| train.lr | models.st-cnn.loc_lr_scale | model | rts | val acc % | best |" in md
    # and a figure of it: two swept keys, a heat map of validation accuracy per model, as PNG and PDF
    from PIL import Image

    with Image.open(out / "sweep.png") as png:
        assert png.width > png.height
    assert (out / "sweep.pdf").read_bytes().startswith(b"%PDF")
    # report of the sweep folder, or of everything in it as `SWEEP/*` names it: every child, a row per
    # model and child (their lr differs, so no cell merges them)
    for given in ([out], sorted(p for p in out.iterdir() if not p.name.startswith("."))):
        rep = invoke("report", *given)
        assert rep.exit_code == 0, rep.output
        for child in children:
            for model in ("cnn", "st-cnn"):
                assert any(line.startswith(f"| {model} ({child}) |") for line in rep.output.splitlines()), rep.output
    # --resume skips finished children; an unfinished one (its marker says so) is trained again
    marker = out / children[1] / ".stnexp-run"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "state": "interrupted"}))
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert f"{children[0]}: finished already" in r.output and f"{children[1]}: finished already" not in r.output
    # another sweep cannot resume this one
    r = invoke(*args[:-2], "--sweep", "train.epochs=1,2", "--out", out, "--resume")
    assert r.exit_code == 2 and "the sweep differs" in r.output
    # nor the same options on another config file (other models): nothing is trained or changed
    other = tmp_path / "other.yaml"
    other.write_text(
        (Path("configs/smoke.yaml").read_text()).replace(
            "st-cnn: {arch: cnn, stn: {transform: affine}}",
            "st-cnn: {arch: cnn, norm: batch, stn: {transform: affine}}",
        )
    )
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    r = invoke("train", other, *args[2:], "--resume")
    assert r.exit_code == 2 and "the config differs from the one the sweep" in r.output, r.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # a plan whose children lie outside the sweep folder: --force clears nothing there
    outside = tmp_path / "elsewhere"
    shutil.copytree(out / children[0], outside)
    plan = json.loads((out / ".stnexp-sweep").read_text())
    (out / ".stnexp-sweep").write_text(json.dumps({**plan, "children": ["../elsewhere"]}))
    r = invoke(*args, "--force")
    assert r.exit_code == 2 and "names '../elsewhere' as a child, which is not a folder inside the sweep" in r.output
    assert (outside / "results.json").is_file() and (outside / "checkpoints").is_dir()


@pytest.mark.slow
def test_shards_of_a_sweep_train_their_own_children_into_one_folder_and_its_table(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "train",
        "configs/smoke.yaml",
        "--sweep",
        "train.lr=0.01,0.02,0.05",
        "--set",
        "data.train_size=256",
        "--set",
        "data.val_size=128",
        "--set",
        "data.test_size=200",
        "--set",
        "train.epochs=1",
        "--out",
        out,
    ]
    first = invoke(*args, "--shard", "1/2")
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["02-lr=0.02"]
    # the sweep can be reported while the other shard has not run: its scored children, the rest named
    r = invoke("report", out)
    assert (
        r.exit_code == 0 and "reporting its 1 scored child run(s); not scored yet: 01-lr=0.01, 03-lr=0.05" in r.output
    )
    # a shard of another split would train children that one of these trains
    r = invoke(*args, "--shard", "0/3")
    assert r.exit_code == 2 and "is split into 2 shards, not 3; every shard of a sweep takes the same N" in r.output
    # a shard past the children trains nothing, and says so
    r = invoke(*args[:3], "train.lr=0.01", *args[4:-1], tmp_path / "one", "--shard", "1/2")
    assert r.exit_code == 0 and "this shard (1/2) trains 0: 2 shards for 1 children leave this one none" in r.output
    second = invoke(*args, "--shard", "0/2")
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["01-lr=0.01", "02-lr=0.02", "03-lr=0.05"]
    assert "02-lr=0.02" not in second.output.split("this shard", 1)[1]  # the other shard's child is not trained again
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["train.lr"] for r in rows] == ["0.01", "0.01", "0.02", "0.02", "0.05", "0.05"]
    # a shard of another sweep cannot join this one
    r = invoke(*args[:3], "train.lr=0.1,0.2", *args[4:], "--shard", "0/2")
    assert r.exit_code == 2 and "the sweep differs" in r.output


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_shards_started_together_on_one_folder_all_finish_and_the_table_lists_every_child(tmp_path, n):
    """A job array's tasks start at the same moment: each makes or joins the plan in turn, trains its
    children, and whichever ends last leaves a table of all of them."""
    out = tmp_path / "sweep"
    lrs = ",".join(["0.01", "0.02", "0.03", "0.04"][:n])  # a child each
    argv = [sys.executable, "-m", "stnexp", "train", "configs/smoke.yaml", "--sweep", f"train.lr={lrs}"]
    for s in ["data.train_size=128", "data.val_size=64", "data.test_size=100", "train.epochs=1", "device=cpu", PLAIN]:
        argv += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shards = [
        subprocess.Popen(argv + ["--shard", f"{i}/{n}", "--out", str(out)], env=env, stdout=subprocess.PIPE, text=True)
        for i in range(n)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in shards]
    assert [p.returncode for p in shards] == [0] * n, outputs
    rows = json.loads((out / "sweep.json").read_text())
    assert sorted({r["train.lr"] for r in rows}) == lrs.split(",")
    assert len(rows) == n * 2 and all(r["error_mean"] is not None for r in rows)
    assert json.loads((out / ".stnexp-sweep").read_text())["shards"] == n


@pytest.mark.parametrize(
    "shard, message",
    [
        ("2/2", "--shard 2/2: expected I/N with 0 <= I < N, e.g. 0/4"),
        ("a/b", "--shard a/b: expected I/N with 0 <= I < N"),
        ("\u0660/\u0662", "--shard \u0660/\u0662: expected I/N"),  # Arabic-Indic digits: not 0/2
        (" 0 / 2", "--shard  0 / 2: expected I/N"),
    ],
)
def test_a_bad_shard_exits_2(tmp_path, shard, message):
    r = invoke("train", "configs/smoke.yaml", "--sweep", "train.lr=0.1,0.2", "--shard", shard, "--out", tmp_path / "s")
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "s").exists()
    r = invoke("train", "configs/smoke.yaml", "--shard", "0/2", "--out", tmp_path / "s")
    assert r.exit_code == 2 and "--shard splits the children of a --sweep over processes: give --sweep too" in r.output


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("train.lr", "--sweep train.lr: expected KEY=V1,V2,..."),
        ("train.lr=0.1,,0.2", "--sweep train.lr=0.1,,0.2: an empty value"),
        ("train.lrr=1,2", "train.lrr: unknown key (did you mean 'lr'?)"),
        ("train.lr=-1,1", "train.lr: input should be greater than 0, got -1"),
        ("train.lr=[0.1,0.2", "--sweep train.lr=[0.1,0.2: unbalanced brackets"),
        ("train.lr=0.1]", "--sweep train.lr=0.1]: unbalanced brackets"),
        (
            "train.lr=" + ",".join(str(i) for i in range(1, 1002)),
            "--sweep: 1001 = 1,001 runs, more than 1,000 in one sweep",
        ),
    ],
)
def test_a_bad_sweep_exits_2_before_anything_is_written(tmp_path, sweep, message):
    r = invoke("train", "configs/smoke.yaml", "--sweep", sweep, "--out", tmp_path / "s")
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("how", [["--sweep", "device=cpu,cuda"], ["--sweep", "train.lr=0.1,0.2", "--device", "cuda"]])
def test_a_sweep_whose_child_cannot_run_here_exits_2_before_any_trains(tmp_path, how):
    r = invoke("train", "configs/smoke.yaml", *how, "--set", "data.train_size=256", "--out", tmp_path / "s")
    assert r.exit_code == 2 and "CUDA is not available" in r.output, r.output
    assert not (tmp_path / "s").exists()


def test_eval_sweep_holds_at_most_two_swept_test_sets_at_a_time(tiny_run, tmp_path, monkeypatch):
    import gc
    import weakref

    from stnexp.results import scoring

    made = []
    swept = scoring.TestSets.swept

    def tracked(self, *a):
        gc.collect()  # the one being scored is still held while the next is made: never more
        assert all(ref() is None for ref in made[:-1]), "an earlier swept set is still held"
        test = swept(self, *a)
        made.append(weakref.ref(test.images))  # the rendered digits, what costs the memory
        return test

    monkeypatch.setattr(scoring.TestSets, "swept", tracked)
    r = invoke("eval", tiny_run, "--sweep", "rotation=-60:60:30", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert len(made) == 2 * 5  # each of two models on each of five values


def test_eval_on_a_canvas_no_model_takes_exits_2_before_rendering(tiny_run, tmp_path, monkeypatch):
    from stnexp import data

    monkeypatch.setattr(data, "render_all", lambda *a: pytest.fail("rendered a test set"))
    r = invoke("eval", tiny_run, "--canvas", "512", "--out", tmp_path)
    assert r.exit_code == 2 and "--canvas 512: cnn-s0-best.pt takes 42x42" in r.output, r.output


def test_eval_sweep_fixes_one_pose_parameter_at_each_value_and_plots_the_error(tiny_run, tmp_path, monkeypatch):
    from PIL import Image

    from stnexp.results import pictures

    plotted = []
    draw = pictures.sweep
    monkeypatch.setattr(
        pictures,
        "sweep",
        lambda rows, swept, path, title: plotted.append((rows, swept)) or draw(rows, swept, path, title),
    )
    r = invoke("eval", tiny_run, "--sweep", "rotation=-30:30:30", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "best-on-sweep-rotation=-30_30_30.json").read_text())
    assert [(row["model"], row["tested_on"]) for row in rows] == [
        (m, f"rotation={v}") for m in ("cnn", "st-cnn") for v in (-30, 0, 30)
    ]
    # the plot draws exactly these errors against the swept values
    ((drawn, swept),) = plotted
    assert swept == ("rotation", [-30.0, 0.0, 30.0])
    assert [(d["model"], d["tested_on"], d["error"]) for d in drawn] == [
        (row["model"], row["tested_on"], row["error"]) for row in rows
    ]
    with Image.open(tmp_path / "best-on-sweep-rotation=-30_30_30.png") as png:
        assert png.width > 600 and png.height > 300
    from stnexp import config
    from stnexp.results import scoring

    cfg = config.load(tiny_run / "config.yaml")
    tests = scoring.TestSets(torch.device("cpu"))
    base = tests.get(cfg, "rts", 0)
    fixed = tests.swept(cfg, "rts", 0, "rotation", 30.0)
    # every digit turned by exactly 30 degrees; its scale and place as in the test set
    assert torch.all(fixed.params["angle"] == 30.0)
    assert torch.equal(fixed.params["scale"], base.params["scale"]) and torch.equal(
        fixed.params["shift"], base.params["shift"]
    )
    for bad in (
        "rotation=30:-30:1",
        "tilt=0:1:1",
        "scale=0:1:0.5",
        "rotation=0:1",
        "rotation=nan:1:1",
        "rotation=1e300:1e300:1",
        "shift=-inf:0:1",
    ):
        r = invoke("eval", tiny_run, "--sweep", bad, "--out", tmp_path)
        assert r.exit_code == 2 and "--sweep" in r.output, (bad, r.output)


def test_report_writes_the_analysis_and_pictures_of_each_run_and_a_self_contained_html(tiny_run, tmp_path):
    r = invoke("report", tiny_run, "--out", tmp_path / "rep", "--html")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"## Run 1: `{tiny_run}`" in md and "McNemar" in md and "Rectification" in md
    pngs = sorted(p.name for p in (tmp_path / "rep" / "images").iterdir())
    assert pngs == [
        "run1-curves-rts-s0.png",
        "run1-invariance-rts-s0.png",
        "run1-rectification-rts-st-cnn-s0.png",
        "run1-stn-rts-st-cnn-s0.png",
    ]
    assert all(f"(images/{name})" in md for name in pngs)
    page = (tmp_path / "rep" / "report.html").read_text()
    # one file that opens from anywhere: every picture inside it, nothing linked
    assert page.count('src="data:image/png;base64,') == 4 and 'src="images/' not in page
    assert "<table>" in page and "<td>st-cnn</td>" in page
    r = invoke("report", tiny_run, "--html")
    assert r.exit_code == 2 and "--html: name the folder" in r.output


def test_a_run_without_validation_digits_does_not_call_its_best_checkpoint_chosen_by_validation(tmp_path):
    out = tmp_path / "run"
    r = _train(out, sets=["data.val_size=0", "train.epochs=2"])
    assert r.exit_code == 0, r.output
    md = (out / "results.md").read_text()
    assert "by validation" not in md and "no validation digits: the last epoch before any divergence" in md
    assert "no validation digits" in invoke("report", out).output


def test_report_tests_recipes_across_seeds_where_three_seeds_are_merged(tiny_run, tmp_path):
    rows = json.loads((tiny_run / "results.json").read_text())
    cnn = next(r["error"] for r in rows if r["model"] == "cnn" and r["checkpoint"] == "best")
    st = next(r["error"] for r in rows if r["model"] == "st-cnn" and r["checkpoint"] == "best")
    _copy_results(tiny_run, tmp_path / "s1", 1, cnn + 1.0)
    _copy_results(tiny_run, tmp_path / "s2", 2, cnn + 3.0)
    r = invoke("report", tiny_run, tmp_path / "s1", tmp_path / "s2")
    assert r.exit_code == 0, r.output
    assert "**Across training seeds: a paired t-test per pair of models**" in r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("| rts | cnn | st-cnn | 3 |")]
    assert f"| {cnn + 4 / 3 - st:+.2f} |" in line
    # two seeds: no test across seeds
    assert "Across training seeds" not in invoke("report", tiny_run, tmp_path / "s1").output
