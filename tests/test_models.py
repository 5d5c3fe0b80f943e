import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stnexp import config, models
from stnexp.models import backbones, kernels, spectral, transformer, transforms
from stnexp.training import optim

TRANSFORMS = list(transforms.FAMILIES)


def stn(**kw):
    return config.CNNConfig(arch="cnn", stn=config.TransformerConfig(**kw))


def cnn():
    return config.CNNConfig(arch="cnn")


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("at", ["input", "conv1"])
@pytest.mark.parametrize("size", [28, 42])
def test_every_transform_and_place_gives_logits_and_starts_at_the_identity(transform, at, size):
    net = models.build(stn(transform=transform, at=at), size)
    x = torch.rand(3, 1, size, size)
    assert net(x).shape == (3, 10)
    p = net.transform_params(x)
    assert p.shape == (3, transforms.FAMILIES[transform].n_params) and p.dtype == torch.float32
    assert torch.allclose(net.transformed_images(x), x, atol=1e-4)


def test_affine_families_give_the_identity_theta_at_start():
    for name, family in transforms.FAMILIES.items():
        if family.theta is None:
            continue
        theta = transforms.theta(name, torch.tensor([family.identity] * 2))
        assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3), atol=1e-6), name


def test_a_model_says_in_its_type_whether_it_has_a_transformer():
    assert models.build(cnn(), 28).stn is None
    assert isinstance(models.build(stn(), 28).stn, transformer.Transformer)


def test_out_size_sets_the_sampler_grid():
    net = models.build(stn(out_size=28), 42)
    x = torch.rand(2, 1, 42, 42)
    assert net.stn(x, x).shape == (2, 1, 28, 28) and net(x).shape == (2, 10)


@pytest.mark.parametrize(
    "spec, smallest",
    [
        (cnn(), 24),
        (stn(), 24),
        (stn(at="conv1"), 24),
        (stn(out_size=24), 4),  # the CNN runs on the sampler's 24x24 output; the loc net needs 4 px
        (stn(at="conv1", out_size=8), 16),  # the loc net on conv1's maps needs them 4 px wide
    ],
)
def test_smallest_input_is_the_first_size_the_layers_take(spec, smallest):
    assert backbones.smallest_input(spec) == smallest
    models.build(spec, smallest)(torch.rand(1, 1, smallest, smallest))
    with pytest.raises(ValueError, match="do not fit this model"):
        models.build(spec, smallest - 1)


def test_an_out_size_too_small_for_the_layers_behind_names_the_smallest_that_works():
    assert backbones.smallest_input(stn(out_size=23)) is None
    assert backbones.smallest_out_size(stn(out_size=23)) == 24
    assert backbones.smallest_out_size(stn(at="conv1", out_size=7)) == 8
    assert backbones.smallest_out_size(stn(out_size=24)) is None


def test_identity_initialised_stn_cnn_gives_the_cnn_logits():
    torch.manual_seed(0)
    cnn_net = models.build(cnn(), 42)
    for at in ("input", "conv1"):
        net = models.build(stn(at=at), 42)
        missing = net.load_state_dict(cnn_net.state_dict(), strict=False).missing_keys
        assert all(k.startswith("stn.") for k in missing)
        x = torch.rand(4, 1, 42, 42)
        assert torch.allclose(net(x), cnn_net(x), atol=1e-4)


def test_localisation_parameters_get_loc_lr_scale():
    cfg = config.validate({"models": {"s": {"arch": "cnn", "stn": {"loc_lr_scale": 0.1}}}, "train": {"lr": 0.02}})
    net = models.build(cfg.models["s"], 42)
    opt = optim.optimizer(cfg.train, net, cfg.models["s"])
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"model": 0.02, "loc": pytest.approx(0.002)}
    loc = {id(p) for p in opt.param_groups[1]["params"]}
    assert loc == {id(p) for p in net.stn.parameters()}
    assert len(opt.param_groups[0]["params"]) + len(loc) == len(list(net.parameters()))


def test_transform_parameters_and_sampling_are_float32_under_autocast():
    torch.manual_seed(0)
    net = models.build(stn(transform="similarity"), 42)
    with torch.no_grad():  # a trained regressor: weights well away from zero, so theta is not the identity
        net.stn.regress.weight.normal_(0, 0.05)
    x = torch.rand(8, 1, 42, 42)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = net.transform_params(x)
        features = net.stn.loc(net.loc_input(x))  # the localisation convs run in bf16, as in training
        assert p.dtype == torch.float32
        with torch.autocast("cpu", enabled=False):
            exact = net.stn.regress(features.float())
        # the regressor's values are fp32's, not bf16's rounded up to fp32
        assert torch.equal(p, exact)
        assert not torch.equal(p, p.bfloat16().float())
        assert transforms.theta("similarity", p).dtype == torch.float32
        assert net.transformed_images(x).dtype == torch.float32


BF16_U = 2.0**-8  # bf16's unit roundoff: 8 significant bits, rounding to nearest
FP32_U = 2.0**-24


def bf16_error_bound(magnitude: torch.Tensor, roundings: int, products: int) -> torch.Tensor:
    """Elementwise bound on a bf16 result's error: `roundings` roundings to bf16 (inputs, partial results,
    the result), each of a value at most `magnitude` * (1 + u)^roundings, where `magnitude` is the sum of
    the absolute values of the products, and `products` of them summed in fp32 (products of bf16 values
    are exact in fp32)."""
    return (roundings * BF16_U + products * FP32_U) * (1 + BF16_U) ** roundings * magnitude


@pytest.mark.parametrize("size", [28, 42, 60])  # the canvases of R, P and E; RTS; TC
def test_conv1_behind_a_transformer_gets_the_gradients_of_a_plain_conv(size):
    # ImageConv computes the gradient for its images its own way on the CPU: it must be nn.Conv2d's in
    # fp32, and under bf16 autocast within the error bf16 rounding allows, which nn.Conv2d's own bf16
    # gradient must meet too. The gradient is a sum of 32 x 9 x 9 products, mostly cancelling (the
    # result is ~1% of the sum of their magnitudes), so the bound is relative to that sum, element by element
    torch.manual_seed(0)
    conv = kernels.ImageConv(1, 32, 9)
    plain = torch.nn.Conv2d(1, 32, 9)
    plain.load_state_dict(conv.state_dict())
    image = torch.rand(8, 1, size, size)
    side = size - 8
    probe = torch.linspace(-1, 1, 8 * 32 * side * side).view(8, 32, side, side)

    def grads(layer, autocast):
        x = image.clone().requires_grad_()
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(x)
        (out.float() * probe).sum().backward()
        return [t.detach().clone() for t in (out, x.grad, layer.weight.grad, layer.bias.grad)]

    def off(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    truth = grads(plain, False)
    assert all(off(a, b) < 1e-6 for a, b in zip(grads(conv, False), truth))
    ours, theirs = grads(conv, True), grads(plain, True)
    assert [t.dtype for t in ours] == [t.dtype for t in theirs]
    # the image gradient in float64 from the same probe and weights, and the sum of its products' magnitudes
    w = conv.weight.detach().double()
    exact = F.conv_transpose2d(probe.double(), w)
    magnitude = F.conv_transpose2d(probe.double().abs(), w.abs())
    # nn.Conv2d rounds the probe, the weights and its result to bf16; ours also each channel's part of the sum
    assert ((theirs[1].double() - exact).abs() <= bf16_error_bound(magnitude, 3, 32 * 81)).all()
    assert ((ours[1].double() - exact).abs() <= bf16_error_bound(magnitude, 4, 32 * 81)).all()
    # the same bound rejects a gradient that is wrong by one channel of the sum
    wrong = F.conv_transpose2d(probe.double()[:, 1:], w[1:])
    assert not ((wrong - exact).abs() <= bf16_error_bound(magnitude, 4, 32 * 81)).all()
    # the output and the weight and bias gradients come from the same oneDNN kernels as nn.Conv2d's
    for i in (0, 2, 3):
        assert off(ours[i], truth[i]) <= max(off(theirs[i], truth[i]), 1e-6) * 1.01


@pytest.mark.parametrize(
    "shape",
    [
        (4, 3, 5, 3, 8, 9),  # batch, c_in, c_out, kernel, height, width: odd and even sides
        (4, 3, 5, 3, 9, 8),
        (2, 2, 3, 4, 4, 4),  # the kernel as large as the image: one output
        (16, 32, 64, 7, 10, 10),  # the paper CNN's conv2 on 28x28 canvases (R, P, E)
        (16, 32, 64, 7, 17, 17),  # on 42x42 (RTS)
        (16, 32, 64, 7, 26, 26),  # on 60x60 (TC)
    ],
)
def test_the_convolution_through_the_dft_is_a_valid_conv2d_and_has_its_gradients(shape):
    n, c, o, k, h, w = shape
    torch.manual_seed(0)
    x, weight, bias = torch.randn(n, c, h, w), torch.randn(o, c, k, k), torch.randn(o)
    probe = torch.randn(n, o, h - k + 1, w - k + 1)

    def run(conv):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = conv(*inputs)
        return [out.detach(), *torch.autograd.grad((out * probe).sum(), inputs)]

    for ours, truth in zip(run(spectral.conv2d), run(F.conv2d)):
        assert float((ours - truth).norm() / truth.norm()) < 1e-5


def test_conv2_trains_through_the_dft_on_the_cpu_and_scores_through_conv2d(monkeypatch):
    calls = []
    through_dft = spectral.conv2d
    monkeypatch.setattr(spectral, "conv2d", lambda *a: calls.append(1) or through_dft(*a))
    torch.manual_seed(0)
    conv = kernels.Conv(32, 64, 7)
    plain = torch.nn.Conv2d(32, 64, 7)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(4, 32, 17, 17)
    with torch.no_grad():
        assert torch.equal(conv(x), plain(x)) and not calls
    out = conv(x)
    assert len(calls) == 1 and torch.allclose(out, plain(x), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # oneDNN's bf16 kernels, not the DFT in fp32
        assert conv(x).dtype == torch.bfloat16 and len(calls) == 1
    with kernels.switched(False):  # the one switch: nn.Conv2d's own kernels
        conv(x)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "stn",
    [None, {"transform": "affine"}, {"transform": "affine", "at": "conv1"}],
    ids=["cnn", "st-cnn", "st-cnn-conv1"],
)
@pytest.mark.parametrize("size", [28, 42, 60])
def test_a_models_gradients_are_the_same_with_the_fast_cpu_kernels_on_and_off(stn, size, monkeypatch):
    cfg = config.CNNConfig(arch="cnn", stn=None if stn is None else config.TransformerConfig(**stn))
    torch.manual_seed(0)
    model = models.build(cfg, size)
    with torch.no_grad():  # a transformer away from the identity, so that conv1's input gradient matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = torch.rand(16, 1, size, size), torch.randint(0, 10, (16,))

    def grads():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    calls = []
    dft, image_conv = spectral.conv2d, kernels._ImageConvFn.apply
    monkeypatch.setattr(spectral, "conv2d", lambda *a: calls.append("dft") or dft(*a))
    monkeypatch.setattr(kernels._ImageConvFn, "apply", lambda *a: calls.append("image") or image_conv(*a))
    fast = grads()
    # the fast kernels did run: conv2 through the DFT, and conv1's image gradient behind an input transformer
    assert calls == (["image", "dft"] if stn and stn.get("at") != "conv1" else ["dft"])
    with kernels.switched(False):
        plain = grads()
    assert kernels.enabled()
    assert len(calls) == (2 if stn and stn.get("at") != "conv1" else 1)  # and none with the switch off
    assert fast.keys() == plain.keys()
    for name in fast:
        assert float((fast[name] - plain[name]).norm()) <= 1e-5 * float(plain[name].norm()) + 1e-9, name


@pytest.mark.parametrize("arch", ["cnn", "stn-cnn", "fcn", "st-fcn"])
def test_a_few_hundred_images_of_training_lower_the_loss(arch):
    from stnexp.data import mnist

    d = mnist.load()
    x = torch.from_numpy(d.train_images[:512].copy()).unsqueeze(1).float() / 255
    y = torch.from_numpy(d.train_labels[:512].copy()).long()
    torch.manual_seed(0)
    net = models.build({"cnn": cnn, "stn-cnn": stn, "fcn": fcn, "st-fcn": lambda: fcn(transform="affine")}[arch](), 28)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    before = F.cross_entropy(net(x), y).item()
    for _ in range(3):
        for i in range(0, 512, 64):
            loss = F.cross_entropy(net(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert F.cross_entropy(net(x), y).item() < 0.7 * before


def test_schedules_shape_the_learning_rate():
    def lr_at(train, steps=(0, 5, 9, 10, 19, 29)):
        cfg = config.validate({"train": train})
        f = optim.lr_factor(cfg.train, steps_per_epoch=10, total=30)
        return [round(f(s), 4) for s in steps]

    assert lr_at({"schedule": "constant"}) == [1.0] * 6
    assert lr_at({"schedule": "step", "every": 1, "gamma": 0.5}) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    cos = lr_at({"schedule": "cosine"})
    assert cos[0] == 1.0 and cos[-1] < 0.01 and cos == sorted(cos, reverse=True)
    assert lr_at({"schedule": "constant", "warmup": 1})[:3] == [0.1, 0.6, 1.0]
    one = lr_at({"schedule": "onecycle"}, steps=(0, 9, 29))
    assert one[0] < 0.1 and one[1] == 1.0 and one[2] < 0.01
    # with a warm-up the cycle falls from the warm-up's end: no drop back to lr/25 and no jump
    warm = lr_at({"schedule": "onecycle", "warmup": 1}, steps=range(30))
    assert warm[:10] == [round((s + 1) / 10, 4) for s in range(10)]
    assert warm[9:] == sorted(warm[9:], reverse=True) and warm[10] > 0.99 and warm[29] < 0.01


def test_weight_decay_reaches_conv_and_linear_weights_only():
    net = models.build(config.CNNConfig(arch="cnn", norm="batch", stn=config.TransformerConfig(loc_norm="batch")), 42)
    norms = {n for n, m in net.named_modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))}
    assert norms
    names = {id(p): n for n, p in net.named_parameters()}
    plain = models.param_groups(net, 0.1, 0.5)
    assert [(g["name"], g["lr"]) for g in plain] == [("model", 0.1), ("loc", 0.05)]  # as older checkpoints hold
    assert "weight_decay" not in plain[0]
    groups = {g["name"]: g for g in models.param_groups(net, 0.1, 0.5, weight_decay=1e-3)}
    assert {n: (g["lr"], g["weight_decay"]) for n, g in groups.items()} == {
        "model": (0.1, 1e-3),
        "model-no-decay": (0.1, 0.0),
        "loc": (0.05, 1e-3),
        "loc-no-decay": (0.05, 0.0),
    }
    decayed = {names[id(p)] for n in ("model", "loc") for p in groups[n]["params"]}
    assert {"block1.0.weight", "classifier.weight", "stn.loc.1.weight", "stn.loc.9.weight"} <= decayed
    assert all(n.endswith("weight") and "regress" not in n and n.rsplit(".", 1)[0] not in norms for n in decayed)
    assert {"stn.regress.weight", "stn.regress.bias", "block1.0.bias"} <= {
        names[id(p)] for n in ("model-no-decay", "loc-no-decay") for p in groups[n]["params"]
    }
    assert sum(len(g["params"]) for g in groups.values()) == len(names)
    # the stacked trainer's holder (each parameter stacked over seeds) splits the same way
    from stnexp.training import stacked

    holder = copy.deepcopy(net)
    for name, param in net.named_parameters():
        stacked._set(holder, name, torch.nn.Parameter(torch.stack([param.detach()] * 2)))
    held = {id(p): n for n, p in holder.named_parameters()}
    split = {g["name"]: [held[id(p)] for p in g["params"]] for g in models.param_groups(holder, 0.1, 0.5, 1e-3)}
    assert split == {k: [names[id(p)] for p in g["params"]] for k, g in groups.items()}
    # the optimizer decays the identity bias of the regressor not at all
    cfg = config.validate({"train": {"weight_decay": 0.1, "optimizer": "adamw"}})
    opt = optim.optimizer(cfg.train, net, stn(transform="affine"))
    before = net.stn.regress.bias.detach().clone()
    net.stn.regress.bias.grad = torch.zeros_like(before)
    for p in net.parameters():
        p.grad = torch.zeros_like(p) if p.grad is None else p.grad
    opt.step()
    assert torch.equal(net.stn.regress.bias, before)
    # without weight decay none at all: not AdamW's own default of 0.01
    cfg = config.validate({"train": {"optimizer": "adamw"}})
    assert [g["weight_decay"] for g in optim.optimizer(cfg.train, net, stn(transform="affine")).param_groups] == [0, 0]


def fcn(**stn_kw):
    return config.FCNConfig(arch="fcn", stn=config.TransformerConfig(**stn_kw) if stn_kw else None)


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_an_st_fcn_has_a_fully_connected_localisation_net_and_starts_at_the_identity(transform):
    net = models.build(fcn(transform=transform), 28)
    assert all(isinstance(m, (torch.nn.Linear, torch.nn.ReLU, torch.nn.Flatten)) for m in net.stn.loc)
    assert [m.out_features for m in net.stn.loc if isinstance(m, torch.nn.Linear)] == [32, 32]
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(net.transformed_images(x), x, atol=1e-4)
    # at the identity the ST-FCN computes what the FCN with the same weights computes
    plain = models.build(fcn(), 28)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("stn.")})
    assert torch.allclose(net(x), plain(x), atol=1e-5)


def test_an_fcn_has_two_hidden_layers_of_the_configured_widths():
    net = models.build(config.FCNConfig(arch="fcn", hidden=(64, 32)), 42)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(42 * 42, 64), (64, 32), (32, 10)]
    assert models.n_params(net) == 42 * 42 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


def test_pooling_averages_the_transformers_output_before_the_layers_behind():
    net = models.build(stn(out_size=60, pool=2), 42)
    x = torch.rand(2, 1, 42, 42)
    sampled = net.stn(x, x)
    assert sampled.shape == (2, 1, 30, 30)
    grid = transforms.grid("affine", net.transform_params(x), 60)
    from stnexp import geometry

    assert torch.allclose(sampled, F.avg_pool2d(geometry.sample(x, grid), 2), atol=1e-6)
    assert net(x).shape == (2, 10) and backbones.sizes(stn(out_size=60, pool=2), 42).side == 2


def test_parameter_counts_of_a_config_are_those_of_the_built_models(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "data: {variants: {rts: null, rotated: null}}\nmodels: {f: {arch: fcn, stn: {transform: tps}}, c: {arch: "
        "cnn}}\n"
    )
    cfg = config.load(p)
    counts = models.param_counts(cfg)
    assert counts["f"]["rotated"] == models.n_params(models.build(cfg.models["f"], 28))
    assert counts["c"]["rts"] == models.n_params(models.build(cfg.models["c"], 42)) == 119050


@pytest.mark.parametrize("arch", list(backbones.BACKBONES))
def test_every_backbone_of_the_registry_builds_what_its_size_plan_says_with_and_without_a_transformer(arch):
    assert arch in config.ARCHS
    for stn in (None, {"transform": "affine"}, {"transform": "attention", "out_size": 30}):
        cfg = config.validate({"models": {"m": {"arch": arch, "stn": stn}}}).models["m"]
        assert isinstance(cfg, backbones.BACKBONES[arch].schema)
        for side in (28, 42):
            model = models.build(cfg, side)
            assert model(torch.rand(2, 1, side, side)).shape == (2, 10)
            assert (model.stn is None) == (stn is None)
        smallest = backbones.smallest_input(cfg)  # 1 for an fcn whose sampler has a fixed out_size
        assert backbones.fits(cfg, smallest)
        if smallest > 1:
            assert not backbones.fits(cfg, smallest - 1)


def test_the_models_do_not_import_the_config_nor_anything_above_them():
    import subprocess
    import sys

    # the config asks the backbone registry; the registry, the layers and the kernels know no config
    above = ("stnexp.config", "stnexp.training", "stnexp.data")
    code = f"import sys, stnexp.models; assert not any(m.startswith({above!r}) for m in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    for source in (Path(__file__).parent.parent / "stnexp" / "models").glob("*.py"):
        imports = [
            line.strip() for line in source.read_text().splitlines() if line.strip().startswith(("from ", "import "))
        ]
        for above in ("config", "data", "training", "results", "store"):
            assert not [
                line for line in imports if f"stnexp.{above}" in line or line.startswith(f"from stnexp import {above}")
            ], source


def test_the_ptn_cnn_backbone_is_polar_transformer_networks_plain_cnn_with_an_optional_transformer():
    from stnexp.config.loading import validate
    from stnexp.models import network

    cfg = validate(
        {
            "name": "t",
            "data": {"variants": {"rts": {}}},
            "models": {"p": {"arch": "ptn-cnn"}, "sp": {"arch": "ptn-cnn", "stn": {"transform": "similarity"}}},
        }
    )
    plain, st = (network.build(cfg.models[n], 42) for n in ("p", "sp"))
    assert 120_000 < network.n_params(plain) < 130_000  # the paper's "about 129k", without conv biases
    assert [m.stride[0] for m in plain.features if isinstance(m, torch.nn.Conv2d)] == [1, 2, 1, 1, 2, 1, 1, 2, 1, 1]
    x = torch.rand(3, 1, 42, 42)
    assert plain(x).shape == st(x).shape == (3, 10)
    assert st.transform_params(x).shape == (3, 4)


def test_the_localisation_net_takes_a_width_and_batch_norm_and_keeps_its_old_layers_by_default():
    from stnexp.models.config_blocks import TransformerConfig
    from stnexp.models.transformer import Transformer

    old = Transformer(1, 42, 42, TransformerConfig(), "conv")
    assert [type(m).__name__ for m in old.loc] == [
        "MaxPool2d", "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "ReLU", "Flatten", "Linear", "ReLU"
    ]  # fmt: skip
    new = Transformer(1, 42, 42, TransformerConfig(loc_norm="batch", loc_width=48), "conv")
    assert sum(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in new.loc) == 3
    assert new.regress.in_features == 48 and new.loc[1].out_channels == 48


def test_a_ptn_cnn_needs_one_stride_per_conv_block_even_when_strides_are_left_at_their_default():
    from stnexp.config.loading import validate
    from stnexp.errors import UserError

    with pytest.raises((UserError, ValueError), match="strides: one per conv block"):
        validate({"name": "t", "models": {"a": {"arch": "ptn-cnn", "channels": [8, 8]}}})


def test_a_cuda_run_recorded_as_fp32_computes_in_fp32_not_tf32():
    # cuDNN's convolutions default to TF32 (10-bit mantissa); configure turns it off for every CUDA run.
    # Setting the flags needs no GPU, so this runs everywhere. The flags are set and put back by hand:
    # cuda.matmul.allow_tf32 is no plain attribute, and pytest 9.2's monkeypatch cannot restore it
    from stnexp import device

    flags = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]
    flags.append((torch.backends.cudnn, "benchmark"))
    before = [getattr(obj, name) for obj, name in flags]
    try:
        for (obj, name), value in zip(flags, (True, True, False)):
            setattr(obj, name, value)
        device.configure(torch.device("cuda"), deterministic=False)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        for (obj, name), value in zip(flags, before):
            setattr(obj, name, value)


def test_a_regressed_homography_never_folds_the_image_and_a_mild_one_passes_unchanged():
    # perspective terms g, h with |g| + |h| >= 1 put the denominator's zero inside the image
    folding = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.5, -0.8]])
    grid = transforms.grid("projective", folding, 28)
    assert torch.isfinite(grid).all()
    # every sample point keeps the side of the denominator's zero it had: x, y of the grid in [-1, 1],
    # the capped g x + h y + 1 >= 0.1
    base = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="xy"), -1)
    g, h = 1.5 * 0.9 / 2.3, -0.8 * 0.9 / 2.3
    assert float((g * base[..., 0] + h * base[..., 1] + 1).min()) >= 0.1 - 1e-6
    from stnexp import geometry

    assert torch.allclose(
        grid[0], geometry.projective_grid(torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [g, h, 1]]]), 28)[0], atol=1e-5
    )
    mild = torch.tensor([[1.1, 0.1, 0.05, -0.1, 0.9, 0.0, 0.2, -0.3]])
    exact = geometry.projective_grid(torch.cat([mild, torch.ones(1, 1)], 1).view(1, 3, 3), 28)
    assert torch.equal(transforms.grid("projective", mild, 28), exact)


def _turn(degrees: float) -> torch.Tensor:
    a = torch.tensor(degrees).deg2rad()
    return torch.tensor([[a.cos(), -a.sin(), 0.0], [a.sin(), a.cos(), 0.0]])


def test_compositional_stages_start_at_the_identity_and_compose_each_warp_by_matrix_product():
    from stnexp.models.config_blocks import TransformerConfig
    from stnexp.models.transformer import Transformer

    one = Transformer(1, 42, 42, TransformerConfig(loc_norm="batch"), "conv")
    two = Transformer(1, 42, 42, TransformerConfig(loc_norm="batch", stages=2), "conv")
    assert set(one.state_dict()) < set(two.state_dict())  # a single warp keeps its names: old checkpoints load
    assert all(k.startswith("refine.0.") for k in set(two.state_dict()) - set(one.state_dict()))
    x = torch.rand(5, 1, 42, 42)
    two.eval()
    assert torch.allclose(two.params(x), torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(5, 6))
    # the first stage shifts, the second turns: output point u is read at shift(turn(u))
    shift = torch.tensor([[1.0, 0.0, 0.3], [0.0, 1.0, -0.2]])
    turn = _turn(30)
    with torch.no_grad():
        two.regress.bias.copy_(shift.flatten())
        two.refine[0]["regress"].bias.copy_(turn.flatten())
    u = torch.tensor([0.5, -0.25, 1.0])
    want = shift @ torch.cat([turn @ u, torch.ones(1)])
    got = two.params(x).view(-1, 2, 3)[0] @ u
    assert torch.allclose(got, want, atol=1e-6)


def test_a_later_stage_looks_at_the_input_as_the_warps_before_it_place_it():
    from stnexp import geometry
    from stnexp.models.config_blocks import TransformerConfig
    from stnexp.models.transformer import Transformer

    two = Transformer(1, 42, 42, TransformerConfig(stages=2), "conv").eval()
    shift = torch.tensor([1.0, 0.0, 0.4, 0.0, 1.0, 0.1])
    with torch.no_grad():
        two.regress.bias.copy_(shift)
    seen = []
    two.refine[0]["loc"].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    x = torch.rand(3, 1, 42, 42)
    two.params(x)
    want = geometry.sample(x, transforms.grid("affine", shift.expand(3, 6), (42, 42)), padding="border")
    assert torch.equal(seen[0], want)


def test_stages_compose_affine_matrices_only_and_weight_decay_spares_every_regressor():
    from stnexp.config.loading import validate
    from stnexp.errors import UserError

    with pytest.raises((UserError, ValueError), match="stages: 2 composes 2x3 matrices"):
        validate({"name": "t", "models": {"a": {"arch": "cnn", "stn": {"transform": "similarity", "stages": 2}}}})
    net = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig(stages=3)), 42)
    decayed = {
        id(p) for g in models.param_groups(net, 0.1, 1.0, weight_decay=1e-3) if g["weight_decay"] for p in g["params"]
    }
    regressors = net.stn.regressors()
    assert len(regressors) == 3 and not any(id(r.weight) in decayed for r in regressors)
    assert id(net.stn.refine[1]["loc"][1].weight) in decayed  # a later stage's conv decays like the first's
