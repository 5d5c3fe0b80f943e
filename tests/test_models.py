import pytest
import torch
import torch.nn.functional as F

from stnexp import config, models, training

TRANSFORMS = ["affine", "attention", "similarity", "translation", "rotation"]


def stn(**kw):
    return config.STNConfig(arch="stn-cnn", **kw)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("at", ["input", "conv1"])
@pytest.mark.parametrize("size", [28, 42])
def test_every_transform_and_place_gives_logits_and_an_identity_theta(transform, at, size):
    net = models.build(stn(transform=transform, at=at), size)
    x = torch.rand(3, 1, size, size)
    assert net(x).shape == (3, 10)
    theta = net.theta(x)
    assert theta.shape == (3, 2, 3)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3), atol=1e-6)


def test_out_size_sets_the_sampler_grid():
    net = models.build(stn(out_size=28), 42)
    x = torch.rand(2, 1, 42, 42)
    assert net.stn(x, x).shape == (2, 1, 28, 28) and net(x).shape == (2, 10)


def test_identity_initialised_stn_cnn_gives_the_cnn_logits():
    torch.manual_seed(0)
    cnn = models.build(config.CNNConfig(arch="cnn"), 42)
    for at in ("input", "conv1"):
        net = models.build(stn(at=at), 42)
        missing = net.load_state_dict(cnn.state_dict(), strict=False).missing_keys
        assert all(k.startswith("stn.") for k in missing)
        x = torch.rand(4, 1, 42, 42)
        assert torch.allclose(net(x), cnn(x), atol=1e-4)


def test_localisation_parameters_get_loc_lr_scale():
    cfg = config.validate({"models": {"s": {"arch": "stn-cnn", "loc_lr_scale": 0.1}}, "train": {"lr": 0.02}})
    net = models.build(cfg.models["s"], 42)
    opt = training.make_optimizer(cfg, net, 0.1)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"model": 0.02, "loc": pytest.approx(0.002)}
    loc = {id(p) for p in opt.param_groups[1]["params"]}
    assert loc == {id(p) for p in net.stn.parameters()}
    assert len(opt.param_groups[0]["params"]) + len(loc) == len(list(net.parameters()))


def test_theta_is_float32_under_autocast():
    net = models.build(stn(transform="similarity"), 42)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net.theta(torch.rand(2, 1, 42, 42)).dtype == torch.float32


@pytest.mark.parametrize("arch", ["cnn", "stn-cnn"])
def test_a_few_hundred_images_of_training_lower_the_loss(arch):
    from stnexp import mnist

    d = mnist.load()
    x = torch.from_numpy(d.train_images[:512].copy()).unsqueeze(1).float() / 255
    y = torch.from_numpy(d.train_labels[:512].copy()).long()
    torch.manual_seed(0)
    net = models.build(config.CNNConfig(arch="cnn") if arch == "cnn" else stn(), 28)
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
        f = training.lr_factor(cfg, steps_per_epoch=10, total=30)
        return [round(f(s), 4) for s in steps]

    assert lr_at({"schedule": "constant"}) == [1.0] * 6
    assert lr_at({"schedule": "step", "every": 1, "gamma": 0.5}) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    cos = lr_at({"schedule": "cosine"})
    assert cos[0] == 1.0 and cos[-1] < 0.01 and cos == sorted(cos, reverse=True)
    assert lr_at({"schedule": "constant", "warmup": 1})[:3] == [0.1, 0.6, 1.0]
    one = lr_at({"schedule": "onecycle"}, steps=(0, 9, 29))
    assert one[0] < 0.1 and one[1] == 1.0 and one[2] < 0.01
