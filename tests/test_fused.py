"""Models stepped as one (stacked.py: a stack, or fused.py: Together) take the steps each model takes on its own,
and `train.fuse: on` gives a run the numbers of an unfused one."""

import math
import re
from pathlib import Path

import pytest
import torch

from stnexp import config
from stnexp.training import fused, members, stacked
from stnexp.training.step import TrainStep

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 convolutions on CUDA too (cuDNN's default is TF32, 10-bit mantissas): what is left between
    two ways of taking the same steps is the order of float sums, not the kernels' precision."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def assert_same_steps(p: torch.Tensor, q: torch.Tensor, start: torch.Tensor, device: str, atol: float = 1e-5) -> None:
    """p and q took the same steps from `start`: on the CPU to float rounding; on CUDA, where a graph or
    grouped kernels sum in other orders, their difference is under 2% of how far the steps moved them,
    so a step skipped or taken twice (a fifth to a third of the way, in these tests) fails."""
    moved = float((q - start).norm())
    assert moved > 0, "the weights never moved"
    if device == "cpu":
        assert torch.allclose(p, q, rtol=1e-5, atol=atol)
    assert float((p - q).norm()) <= 0.02 * moved


def _cfg(device: str, stn: dict | None, graphs: bool = True):
    return config.validate(
        {
            "device": device,
            "seeds": [0, 1, 2],
            "data": {"train_size": 512, "val_size": 0, "variants": {"rts": None}},
            "models": {"m": {"arch": "cnn", **({"stn": stn} if stn is not None else {})}},
            "train": {"batch_size": 32, "lr": 0.01, "amp": "off", "cuda_graphs": graphs},
        }
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "stn", [None, {"loc_lr_scale": 0.1}, {"transform": "tps"}], ids=["cnn", "st-cnn", "st-cnn-tps"]
)
def test_a_stack_of_three_seeds_steps_as_the_three_models_do_alone(device, stn):
    cfg = _cfg(device, stn)
    dev = torch.device(device)
    length = members.Length(8, 8, 1)
    own = [members.build(cfg, "m", "rts", s, length, dev) for s in cfg.seeds]
    alone = [TrainStep(members.build(cfg, "m", "rts", s, length, dev), cfg.train, None) for s in cfg.seeds]
    start = [[p.detach().clone() for p in m.model.parameters()] for m in own]
    stack = stacked.Stack(own, cfg.train, cfg.models["m"], None, 8, 8)
    assert stacked.fusable(own) and len(stack.opt.param_groups) == (1 if stn is None else 2)
    rtol = 1e-5 if device == "cpu" else 1e-3
    g = torch.Generator().manual_seed(0)
    # three steps: on random images the sampler's pixel boundaries make float-rounding differences grow
    # several-fold a step (a TPS transformer's weights: under a thousandth of the tolerance after three steps,
    # about 0.4 of it after five on a 2-core EPYC, past it after five on a 16-core Xeon)
    for k in range(3):  # member i steps on batch i: each seed its own stream
        x, y = torch.rand(3, 32, 1, 42, 42, generator=g).to(dev), torch.randint(0, 10, (3, 32), generator=g).to(dev)
        stack(x, y)
        stack.sched.step()
        for i, step in enumerate(alone):
            step(x[i], y[i])
            step.m.sched.step()
        if k == 0:  # the first step's losses: the same arithmetic but for the order of float sums
            assert torch.allclose(stack.sums.loss, torch.stack([s.sums.loss for s in alone]), rtol=rtol)
    stack.unstack()
    for m, step, first in zip(own, alone, start):  # three steps on: the weights still agree
        for p, q, p0 in zip(m.model.parameters(), step.m.model.parameters(), first):
            assert_same_steps(p.detach(), q.detach(), p0, device, atol=1e-4)


def test_fuse_auto_is_on_only_where_it_was_measured_faster():
    def wanted(device, **train):
        return fused.wanted(config.validate({"train": train}).train, torch.device(device))

    # one graph with a stream per model on CUDA: the measurement auto rests on (docs/performance.md,
    # `bench.py --fused 3` on an H200): every "together / one after another" ratio there is above 1
    page = (Path(__file__).resolve().parent.parent / "docs" / "performance.md").read_text()
    ratios = [float(r) for r in re.findall(r"\| \*\*(\d\.\d+)\*\* \|$", page, flags=re.M)]
    assert len(ratios) >= 3 and min(ratios) > 1.0
    assert wanted("cuda") and wanted("cuda:1", fuse="auto")
    # a CPU steps the models one after another either way; eager or data-parallel steps have no graph
    assert not wanted("cpu") and not wanted("cuda", cuda_graphs=False) and not wanted("cuda", parallel="data")
    assert wanted("cpu", fuse="on") and not wanted("cuda", fuse="off")


def test_models_with_dropout_or_different_shapes_are_not_fused():
    cfg = config.validate(
        {
            "seeds": [0, 1],
            "models": {
                "d": {"arch": "cnn", "dropout": 0.5},
                "a": {"arch": "cnn"},
                "b": {"arch": "cnn", "channels": [16, 64]},
            },
        }
    )
    length = members.Length(1, 1, 1)
    build = lambda name, seed: members.build(cfg, name, "rts", seed, length, torch.device("cpu"))  # noqa: E731
    assert stacked.fusable([build("a", 0), build("a", 1)])
    assert not stacked.fusable([build("d", 0), build("d", 1)])
    assert not stacked.fusable([build("a", 0), build("b", 0)])
    assert not stacked.fusable([build("a", 0)])


def _two_seeds(device: str, sizes: tuple[int, int], third: dict, **train):
    """Seeds 0 and 1 of RTS with `sizes` (training, validation digits): a CNN, an ST-CNN and a `third`
    model, trained in fp32 by `train`."""
    models = {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {"loc_lr_scale": 0.1}}, **third}
    data = {"train_size": sizes[0], "val_size": sizes[1], "variants": {"rts": None}}
    return config.validate(
        {"device": device, "seeds": [0, 1], "data": data, "models": models, "train": {"amp": "off", **train}}
    )


@pytest.mark.parametrize("device", DEVICES)
def test_models_stepped_together_take_the_steps_they_take_alone(device):
    # a CNN, an ST-CNN and a CNN with dropout for each of two seeds, each on its own batch: on CUDA one
    # graph with a stream per model and the dropout models (no graph) eagerly beside it, on the CPU
    # one after another
    cfg = _two_seeds(device, (512, 0), {"drop": {"arch": "cnn", "dropout": 0.5}}, batch_size=32, lr=0.01)
    dev = torch.device(device)
    length = members.Length(8, 8, 1)

    def fresh():
        return [
            TrainStep(members.build(cfg, name, "rts", s, length, dev), cfg.train, None)
            for s in cfg.seeds
            for name in cfg.models
        ]

    together, alone = fused.Together(fresh()), fresh()
    start = [[p.detach().clone() for p in step.m.model.parameters()] for step in alone]
    in_graph = [together.steps[i].m.name for i in together.shared]
    assert in_graph == (["cnn", "st-cnn"] * 2 if device == "cuda" else []) and not together.graphed
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.rand(6, 32, 1, 42, 42, generator=g).to(dev), torch.randint(0, 10, (6, 32), generator=g).to(dev)
        together(x, y)
        for i, step in enumerate(alone):
            step(x[i], y[i])
        for step in together.steps + alone:
            step.m.sched.step()
    # the same steps on the same numbers; on CUDA cuDNN may pick other kernels for a graph
    rtol = 1e-5 if device == "cpu" else 1e-3
    for a, b, first in zip(together.steps, alone, start):
        assert torch.allclose(a.sums.loss, b.sums.loss, rtol=rtol)
        for p, q, p0 in zip(a.m.model.parameters(), b.m.model.parameters(), first):
            assert_same_steps(p.detach(), q.detach(), p0, device)


# train.fuse: on. On the CPU the models are stepped one after another either way, so fused training must
# give exactly the numbers of unfused training; on CUDA the same test checks one graph of six models.
def _training(tmp_path, device: str, fuse: str):
    """A run's training without its final scoring: CNN, ST-CNN and `wild` for two seeds of RTS."""
    import logging
    import threading

    from stnexp import config, data
    from stnexp.training import loop

    cfg = _two_seeds(device, (256, 128), {"wild": {"arch": "cnn"}}, epochs=2, batch_size=64, fuse=fuse)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(config.dump(cfg))  # a run directory holds its config while it trains
    dev = torch.device(device)
    run = loop.Run(cfg, tmp_path, dev, None, logging.getLogger("test"), threading.Event(), data.split(cfg.data, dev))

    def train():
        groups = [loop.make_group(run, "rts", seed) for seed in cfg.seeds]  # resumed from tmp_path's checkpoints
        start = [
            {k: v.clone() for k, v in m.model.state_dict().items()}
            for g in groups
            for m in g.members
            if m.name != "wild"
        ]
        loop.train_groups(run, groups, [], fused.wanted(cfg.train, dev))
        return groups, start

    return train


def _numbers(trained):
    """Each model's history (without timings), final and first weights; of `wild` only when it stopped
    (the step at which a loss is seen to be nan depends on when the host reads it)."""
    groups, start = trained
    history = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for g in groups
        for m in g.members
        for r in m.history
    ]
    wild = [(r["epoch"], math.isnan(r["train_loss"])) for r in history if r["model"] == "wild"]
    return (
        [r for r in history if r["model"] != "wild"],
        wild,
        [m.model.state_dict() for g in groups for m in g.members if m.name != "wild"],
        start,
    )


@pytest.fixture
def wild_diverges(monkeypatch):
    """Model `wild` blows up in its first epoch: the models stepped together must go on without it."""
    build = members.build

    def absurd_lr_for_wild(cfg, name, *args):
        m = build(cfg, name, *args)
        if name == "wild":
            m.sched.base_lrs = [1e30 for _ in m.sched.base_lrs]
        return m

    monkeypatch.setattr(members, "build", absurd_lr_for_wild)


def _same(a, b, exact: bool):
    (history_a, wild_a, weights_a, _), (history_b, wild_b, weights_b, start) = a, b
    assert wild_a == wild_b == [(1, True), (1, True)]  # both seeds' wild stopped in epoch 1, the others went on
    if exact:
        assert history_a == history_b
    else:
        assert [r["model"] for r in history_a] == [r["model"] for r in history_b]
    for wa, wb, w0 in zip(weights_a, weights_b, start):
        for k in wa:  # on CUDA a graph may pick other kernels
            if exact:
                assert torch.equal(wa[k], wb[k]), k
            else:
                assert_same_steps(wa[k], wb[k], w0[k], "cuda")


@pytest.fixture(scope="module")
def unfused(tmp_path_factory):
    """The numbers of unfused training on a device, trained once for the tests below (which make
    `wild` diverge before they ask)."""
    done = {}

    def numbers(device: str):
        if device not in done:
            done[device] = _numbers(_training(tmp_path_factory.mktemp("unfused"), device, "off")())
        return done[device]

    return numbers


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_fused_training_gives_every_model_the_numbers_of_unfused_training(tmp_path, device, wild_diverges, unfused):
    on = _numbers(_training(tmp_path / "on", device, "on")())
    _same(on, unfused(device), exact=device == "cpu")


def test_fused_training_resumes_with_its_seeds_at_different_epochs(tmp_path, monkeypatch, wild_diverges, unfused):
    from stnexp.training import loop

    end_epoch = loop.end_epoch

    def stop_after_seed_0_epoch_1(run, group, epoch):
        end_epoch(run, group, epoch)
        if (group.seed, epoch.number) == (0, 1):  # seed 1 has no checkpoint yet
            raise loop.Interrupted()

    monkeypatch.setattr(loop, "end_epoch", stop_after_seed_0_epoch_1)
    train = _training(tmp_path / "cut", "cpu", "on")
    with pytest.raises(loop.Interrupted):
        train()
    monkeypatch.setattr(loop, "end_epoch", end_epoch)
    _same(_numbers(train()), unfused("cpu"), exact=True)


def test_fuse_trains_each_variants_seeds_in_lockstep():
    from stnexp.training import modes

    groups = [("rts", 0), ("rts", 1), ("rotated", 0), ("rotated", 1)]
    assert modes.OneByOne.bundles(groups) == [[g] for g in groups]
    assert modes.Fused.bundles(groups) == [[("rts", 0), ("rts", 1)], [("rotated", 0), ("rotated", 1)]]
