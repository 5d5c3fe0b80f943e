"""What version 0.1 made keeps working: its run directories load, score and resume, and every preset's
test, validation and training streams are the same: the distortions bit for bit on any CPU, the pixels
bit for bit with MKL's reproducible mode (else to float rounding).

tests/data/v01-run is a run made by stnexp 0.1 (commit eba549d): variants rotated and rts, a CNN and
ST-CNNs with affine and attention transformers at the input and at conv1 (channels 8/16 to keep it small).
tests/data/v01-streams.json holds SHA-256 digests of streams made by 0.1 (tests/data/README.md).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stnexp import config, data
from stnexp.cli import app
from stnexp.data import mnist

DATA = Path(__file__).parent / "data"
OLD_RUN = DATA / "v01-run"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def sha(*tensors):
    return hashlib.sha256(b"".join(t.contiguous().numpy().tobytes() for t in tensors)).hexdigest()


def old_results(run, kind):
    return {
        (r["variant"], r["model"], r["seed"]): r["accuracy"]
        for r in json.loads((run / "results.json").read_text())
        if r["checkpoint"] == kind
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["best", "last"])
def test_eval_of_a_0_1_run_gives_exactly_its_results(kind, tmp_path):
    r = invoke("eval", OLD_RUN, "--checkpoint", kind, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    got = {
        (e["variant"], e["model"], e["seed"]): e["accuracy"]
        for e in json.loads((tmp_path / f"{kind}-on-own.json").read_text())
    }
    assert got == old_results(OLD_RUN, kind) and len(got) == 10


@pytest.mark.slow
def test_a_finished_0_1_run_resumes_as_already_trained_with_the_same_table(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    r = invoke("train", run / "config.yaml", "--out", run, "--resume")
    assert r.exit_code == 0, r.output
    assert "rts seed 0: already trained" in r.output
    for kind in ("best", "last"):
        assert old_results(run, kind) == old_results(OLD_RUN, kind)


def preset_streams() -> dict:
    """SHA-256 digests of each 0.1 preset's test set (parameters, images) and first training batches."""
    want = json.loads((DATA / "v01-streams.json").read_text())
    d = mnist.load()
    digits = data.Digits(
        torch.from_numpy(d.test_images[:1000].copy()), torch.from_numpy(d.test_labels[:1000].copy()).long()
    )
    # the presets of version 0.1 (later ones, such as projective, have no 0.1 streams to match)
    specs = {p: config.VariantConfig(preset=p) for p in ("plain", "rotated", "rts", "translated", "scaled")}
    specs["custom"] = config.VariantConfig(canvas=36, rotation=(-10, 20), scale=(0.8, 1.1), translation=3.5)
    assert set(want) == set(specs) and set(specs) - {"custom"} <= set(config.PRESETS)
    got = {}
    for name, spec in specs.items():
        fixed = data.fixed(digits, spec, 3, name, "test")
        batches = list(data.Stream(digits, spec, 3, name, 64, True).epoch(2))[:3]
        got[name] = {
            "params": sha(fixed.params["angle"], fixed.params["scale"], fixed.params["shift"]),
            "images": sha(fixed.images),
            "train": sha(*[t for b in batches for t in b]),
        }
    return got


def test_every_preset_draws_the_distortions_of_0_1_bit_for_bit_on_any_cpu():
    want = json.loads((DATA / "v01-streams.json").read_text())
    assert {k: v["params"] for k, v in preset_streams().items()} == {k: v["params"] for k, v in want.items()}


def test_every_preset_makes_the_images_of_0_1_bit_for_bit_with_mkl_reproducible():
    # the pixels agree to float rounding across CPU kinds (MKL's batched matmul in the sampling grid
    # takes other code paths on Intel CPUs than on the AMD one that made the digests); with MKL's
    # conditional numerical reproducibility on, bit for bit. It must be set before MKL starts: a fresh process
    code = "import json, test_compat; print(json.dumps(test_compat.preset_streams()))"
    path = os.pathsep.join(
        p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
    )  # keep the caller's
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got == json.loads((DATA / "v01-streams.json").read_text())
