import torch

from stnexp import config, geometry, mnist, variants


def identity(n):
    z = torch.zeros(n)
    return geometry.theta_from_params(z, torch.ones(n), z, z)


def test_identity_theta_returns_the_input():
    # float32 rounding of the grid moves samples by ~1e-7 px: every 8-bit grey level comes back exactly
    digits = torch.randint(0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float() / 255
    out = geometry.warp(digits, identity(8), 28)
    assert torch.equal((out * 255).round(), (digits * 255).round())
    assert torch.allclose(out, digits, atol=1e-5)
    for size in (13, 42, 60):
        x = torch.rand(2, 3, size, size)
        assert torch.allclose(geometry.warp(x, identity(2), size), x, atol=1e-5)


def test_90_degree_rotation_equals_rot90():
    x = torch.rand(4, 1, 28, 28)
    theta = geometry.distortion_theta(torch.full((4,), 90.0), torch.ones(4), torch.zeros(4, 2), 28, 28)
    assert torch.allclose(geometry.warp(x, theta, 28), torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_shift_moves_the_digit_by_whole_pixels():
    x = torch.rand(1, 1, 28, 28)
    theta = geometry.distortion_theta(torch.zeros(1), torch.ones(1), torch.tensor([[3.0, -2.0]]), 28, 28)
    out = geometry.warp(x, theta, 28)
    # 3 px to the right, 2 px up (y points down)
    assert torch.allclose(out[..., :-2, 3:], x[..., 2:, :-3], atol=1e-5)


def test_warp_runs_in_float32_under_autocast():
    x = torch.rand(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = geometry.warp(x, identity(2), 28)
    assert out.dtype == torch.float32


def _test_digits(n=2000):
    d = mnist.load()
    return torch.from_numpy(d.test_images[:n].copy()), torch.from_numpy(d.test_labels[:n].copy())


def test_translation_fit_keeps_every_digit_pixel_on_the_canvas():
    x, y = _test_digits()
    spec = config.VariantConfig(preset="rts")
    s = variants.fixed(x, y, spec, 0, "rts", "test")
    # the same placements on a canvas 20 px larger: no ink may lie outside the central 42x42
    big = variants.distort(x, s.params, 62)
    assert torch.allclose(big[..., 10:52, 10:52], s.images, atol=1e-4)
    outside = big.sum((1, 2, 3)) - big[..., 10:52, 10:52].sum((1, 2, 3))
    assert outside.abs().max() < 1e-3


def test_sampled_parameters_respect_their_ranges():
    x, y = _test_digits()
    spec = config.VariantConfig(canvas=42, rotation=(-30, 10), scale=(0.8, 0.9), translation=5)
    p = variants.fixed(x, y, spec, 1, "v", "test").params
    assert p.angle.min() >= -30 and p.angle.max() <= 10 and p.angle.max() - p.angle.min() > 35
    assert p.scale.min() >= 0.8 and p.scale.max() <= 0.9
    assert p.shift.abs().max() <= 5 and p.shift.abs().max() > 4.5


def test_same_seed_same_test_set_other_seed_different():
    x, y = _test_digits(500)
    spec = config.VariantConfig(preset="rts")
    a = variants.fixed(x, y, spec, 0, "rts", "test")
    b = variants.fixed(x, y, spec, 0, "rts", "test")
    c = variants.fixed(x, y, spec, 1, "rts", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.params.angle, b.params.angle)
    assert not torch.equal(a.images, c.images)


def test_training_stream_replays_an_epoch_and_differs_between_epochs():
    x, y = _test_digits(600)
    spec = config.VariantConfig(preset="rts")
    s = variants.Stream(x, y, spec, 0, "rts", 256, resample=True)
    a, b, c = (list(s.epoch(e)) for e in (1, 1, 2))
    assert len(a) == 2 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
