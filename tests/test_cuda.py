"""CUDA checks; each skips on a machine without CUDA."""

import json

import pytest
import torch
from typer.testing import CliRunner

from stnexp import config, geometry, mnist, training, variants
from stnexp.cli import app

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TINY = ["data.train_size=1024", "data.val_size=256", "train.epochs=2", "train.batch_size=128", "device=cuda"]


def test_identity_and_rotation_on_cuda():
    x = torch.rand(4, 1, 28, 28, device="cuda")
    z = torch.zeros(4, device="cuda")
    assert torch.allclose(geometry.warp(x, geometry.theta_from_params(z, z + 1, z, z), 28), x, atol=1e-5)
    theta = geometry.distortion_theta(z + 90, z + 1, torch.zeros(4, 2, device="cuda"), 28, 28)
    assert torch.allclose(geometry.warp(x, theta, 28), torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_test_set_on_cuda_matches_the_cpu_one():
    d = mnist.load()
    x, y = torch.from_numpy(d.test_images[:1000].copy()), torch.from_numpy(d.test_labels[:1000].copy())
    spec = config.VariantConfig(preset="rts")
    cpu = variants.fixed(x, y, spec, 0, "rts", "test")
    gpu = variants.fixed(x.cuda(), y.cuda(), spec, 0, "rts", "test")
    assert torch.equal(cpu.params.angle, gpu.params.angle.cpu())
    assert torch.allclose(cpu.images, gpu.images.cpu(), atol=1e-4)


def _members(graphs: bool):
    cfg = config.validate({"device": "cuda", "train": {"cuda_graphs": graphs, "amp": "off"},
                           "models": {"cnn": {"arch": "cnn"}, "st": {"arch": "stn-cnn"}}})
    return cfg, [training.build_member(cfg, n, 42, 0, 10, 20, torch.device("cuda")) for n in cfg.models]


def test_graphed_training_steps_match_eager_ones():
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    d = mnist.load()
    x, y = torch.from_numpy(d.train_images[:2560].copy()).cuda(), torch.from_numpy(d.train_labels[:2560].copy()).cuda()
    stream = variants.Stream(x, y, config.VariantConfig(preset="rts"), 0, "rts", 256, True)
    runs = {}
    for graphs in (False, True):
        cfg, members = _members(graphs)
        for m in members:
            m.loss_sum = torch.zeros((), device="cuda")
            m.correct = torch.zeros((), dtype=torch.long, device="cuda")
            m.timer = training.Timer(torch.device("cuda"))
        training.run_epoch(members, stream, 1, 1, len(stream), cfg, "rts", 0, torch.device("cuda"), None, _Quiet(), _Never())
        runs[graphs] = members
        assert all((m.graph is not None) == graphs for m in members)
    for eager, graphed in zip(runs[False], runs[True]):
        assert eager.step == graphed.step == len(stream)
        assert abs(float(eager.loss_sum) - float(graphed.loss_sum)) < 1e-2 * float(eager.loss_sum)
        for (k, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-2), k
        # the graphed step keeps the lr in a float32 device tensor
        assert float(eager.opt.param_groups[0]["lr"]) == pytest.approx(float(graphed.opt.param_groups[0]["lr"]), rel=1e-6)


class _Quiet:
    def info(self, *a):
        pass

    warning = debug = info


class _Never:
    def is_set(self):
        return False


def test_train_and_eval_on_cuda_agree(tmp_path):
    out = tmp_path / "run"
    args = ["train", "configs/smoke.yaml", "--out", str(out)]
    for s in TINY:
        args += ["--set", s]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["eval", str(out), "--out", str(tmp_path / "e"), "--device", "cuda"])
    assert r.exit_code == 0, r.output
    got = {e["model"]: e["accuracy"] for e in json.loads((tmp_path / "e" / "eval.json").read_text())}
    want = {e["model"]: e["accuracy"] for e in json.loads((out / "results.json").read_text()) if e["checkpoint"] == "best"}
    assert got == want
    assert json.loads((out / "env.json").read_text())["device"].startswith("cuda")


def test_resume_on_cuda_continues_a_graphed_run(tmp_path):
    out = tmp_path / "run"
    base = ["train", "configs/smoke.yaml", "--out", str(out)]
    sets = []
    for s in TINY[:-2] + ["train.epochs=1", "device=cuda"]:
        sets += ["--set", s]
    assert CliRunner().invoke(app, base + sets).exit_code == 0
    sets2 = [a if a != "train.epochs=1" else "train.epochs=2" for a in sets]
    r = CliRunner().invoke(app, base + ["--resume"] + sets2)
    # a longer run is another config: refused, one line
    assert r.exit_code == 2 and "differs from the run's in train.epochs" in r.output
