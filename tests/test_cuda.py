"""CUDA checks; each skips on a machine without CUDA."""

import json
import logging
import threading

import pytest
import torch
from typer.testing import CliRunner

from stnexp import config, data, geometry, pose
from stnexp.cli import app
from stnexp.data import mnist
from stnexp.training import loop, members
from stnexp.training.step import TrainStep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TINY = ["data.train_size=1024", "data.val_size=256", "train.epochs=2", "train.batch_size=128", "device=cuda"]


def test_identity_and_rotation_on_cuda():
    x = torch.rand(4, 1, 28, 28, device="cuda")
    z = torch.zeros(4, device="cuda")
    warp = lambda theta: geometry.sample(x, geometry.affine_grid(theta, 28))  # noqa: E731
    assert torch.allclose(warp(geometry.theta_from_params(z, z + 1, z, z)), x, atol=1e-5)
    theta = pose.distortion_theta(z + 90, z + 1, torch.zeros(4, 2, device="cuda"), 28, 28)
    assert torch.allclose(warp(theta), torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_projective_and_tps_identity_on_cuda():
    x = torch.rand(2, 1, 30, 30, device="cuda")
    eye = torch.eye(3, device="cuda").expand(2, 3, 3)
    assert torch.allclose(geometry.sample(x, geometry.projective_grid(eye, 30)), x, atol=1e-5)
    still = geometry.control_points(4, "cuda").expand(2, 16, 2)
    assert torch.allclose(geometry.sample(x, geometry.tps_grid(still, 30, 4)), x, atol=1e-4)


@pytest.mark.parametrize("preset", ["rts", "projective", "elastic", "cluttered"])
def test_test_set_on_cuda_matches_the_cpu_one(preset):
    d = mnist.load()
    x, y = torch.from_numpy(d.test_images[:1000].copy()), torch.from_numpy(d.test_labels[:1000].copy()).long()
    spec = config.VariantConfig(preset=preset)
    cpu = data.fixed(data.Digits(x, y), spec, 0, preset, "test")
    gpu = data.fixed(data.Digits(x.cuda(), y.cuda()), spec, 0, preset, "test")
    for k, v in cpu.params.items():
        # drawn on the CPU either way; a shift that `fit` computes on the device may differ in its last bit
        assert (
            torch.equal(v, gpu.params[k].cpu())
            if k in ("angle", "scale") or not v.is_floating_point()
            else torch.allclose(v, gpu.params[k].cpu(), atol=1e-4)
        ), k
    # a few pixels may differ by more where a near-degenerate homography amplifies float32 rounding
    assert (cpu.images - gpu.images.cpu()).abs().gt(1e-3).float().mean() < 1e-3


def _group(graphs: bool, stream):
    cfg = config.validate(
        {
            "device": "cuda",
            "train": {"cuda_graphs": graphs, "amp": "off"},
            "models": {
                "cnn": {"arch": "cnn"},
                "st": {"arch": "cnn", "stn": {}},
                "st-proj": {"arch": "cnn", "stn": {"transform": "projective"}},
                "st-tps": {"arch": "cnn", "stn": {"transform": "tps"}},
                "fcn": {"arch": "fcn"},
                "st-fcn-tps": {"arch": "fcn", "stn": {"transform": "tps"}},
            },
        }
    )
    length = members.Length(len(stream), 2 * len(stream), 2)
    group_members = [members.build(cfg, n, "rts", 0, length, torch.device("cuda")) for n in cfg.models]
    steps = {m.name: TrainStep(m, cfg.train, None) for m in group_members}
    run = loop.Run(cfg, None, torch.device("cuda"), None, logging.getLogger("test"), threading.Event(), None)
    return run, loop.Group("rts", 0, stream, None, length, group_members, steps)


def test_graphed_training_steps_match_eager_ones():
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    d = mnist.load()
    x, y = (
        torch.from_numpy(d.train_images[:2560].copy()).cuda(),
        torch.from_numpy(d.train_labels[:2560].copy()).cuda().long(),
    )
    stream = data.Stream(data.Digits(x, y), config.VariantConfig(preset="rts"), 0, "rts", 256, True)
    groups = {}
    for graphs in (False, True):
        run, group = _group(graphs, stream)
        (epoch,) = loop.run_epoch(run, [(group, group.members)], 1)
        assert epoch.steps == len(stream)
        groups[graphs] = group
        assert all((group.steps[m.name].graph is not None) == graphs for m in group.members)
    for eager, graphed in zip(groups[False].members, groups[True].members):
        assert eager.step == graphed.step == len(stream)
        e_loss, g_loss = (float(g.steps[eager.name].sums.loss) for g in (groups[False], groups[True]))
        assert abs(e_loss - g_loss) < 1e-2 * e_loss
        for (k, a), b in zip(eager.model.state_dict().items(), graphed.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-2), k
        # the graphed step keeps the lr in a float32 device tensor
        assert float(eager.opt.param_groups[0]["lr"]) == pytest.approx(
            float(graphed.opt.param_groups[0]["lr"]), rel=1e-6
        )


def test_train_and_eval_on_cuda_agree(tmp_path):
    out = tmp_path / "run"
    args = ["train", "configs/smoke.yaml", "--out", str(out)]
    for s in TINY:
        args += ["--set", s]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["eval", str(out), "--out", str(tmp_path / "e"), "--device", "cuda"])
    assert r.exit_code == 0, r.output
    got = {e["model"]: e["accuracy"] for e in json.loads((tmp_path / "e" / "best-on-own.json").read_text())}
    want = {
        e["model"]: e["accuracy"] for e in json.loads((out / "results.json").read_text()) if e["checkpoint"] == "best"
    }
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
