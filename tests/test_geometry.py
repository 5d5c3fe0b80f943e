import numpy as np
import pytest
import torch

from stnexp import config, data, geometry, pose
from stnexp.data import distortions, mnist


def identity(n):
    z = torch.zeros(n)
    return geometry.theta_from_params(z, torch.ones(n), z, z)


def warp(x, theta, size):
    return geometry.sample(x, geometry.affine_grid(theta, size))


def test_identity_theta_returns_the_input():
    # float32 rounding of the grid moves samples by ~1e-7 px: every 8-bit grey level comes back exactly
    digits = torch.randint(0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float() / 255
    out = warp(digits, identity(8), 28)
    assert torch.equal((out * 255).round(), (digits * 255).round())
    assert torch.allclose(out, digits, atol=1e-5)
    for size in (13, 42, 60):
        x = torch.rand(2, 3, size, size)
        assert torch.allclose(warp(x, identity(2), size), x, atol=1e-5)


def test_90_degree_rotation_equals_rot90():
    x = torch.rand(4, 1, 28, 28)
    theta = pose.distortion_theta(torch.full((4,), 90.0), torch.ones(4), torch.zeros(4, 2), 28, 28)
    assert torch.allclose(warp(x, theta, 28), torch.rot90(x, 1, (-2, -1)), atol=1e-5)


def test_shift_moves_the_digit_by_whole_pixels():
    x = torch.rand(1, 1, 28, 28)
    theta = pose.distortion_theta(torch.zeros(1), torch.ones(1), torch.tensor([[3.0, -2.0]]), 28, 28)
    out = warp(x, theta, 28)
    # 3 px to the right, 2 px up (y points down)
    assert torch.allclose(out[..., :-2, 3:], x[..., 2:, :-3], atol=1e-5)


def test_warp_runs_in_float32_under_autocast():
    x = torch.rand(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(x, identity(2), 28)
    assert out.dtype == torch.float32


def _test_digits(n=2000):
    d = mnist.load()
    return data.Digits(torch.from_numpy(d.test_images[:n].copy()), torch.from_numpy(d.test_labels[:n].copy()).long())


def test_translation_fit_keeps_every_digit_pixel_on_the_canvas():
    digits = _test_digits()
    spec = config.VariantConfig(preset="rts")
    s = data.fixed(digits, spec, 0, "rts", "test")
    # the same placements on a canvas 20 px larger: no ink may lie outside the central 42x42
    big = distortions.render(digits.images, s.params, spec.model_copy(update={"canvas": 62}))
    assert torch.allclose(big[..., 10:52, 10:52], s.images, atol=1e-4)
    outside = big.sum((1, 2, 3)) - big[..., 10:52, 10:52].sum((1, 2, 3))
    assert outside.abs().max() < 1e-3


def test_sampled_parameters_respect_their_ranges():
    spec = config.VariantConfig(canvas=42, rotation=(-30, 10), scale=(0.8, 0.9), translation=5)
    p = data.fixed(_test_digits(), spec, 1, "v", "test").params
    assert p["angle"].min() >= -30 and p["angle"].max() <= 10 and p["angle"].max() - p["angle"].min() > 35
    assert p["scale"].min() >= 0.8 and p["scale"].max() <= 0.9
    assert p["shift"].abs().max() <= 5 and p["shift"].abs().max() > 4.5


def test_same_seed_same_test_set_other_seed_different():
    digits = _test_digits(500)
    spec = config.VariantConfig(preset="rts")
    a = data.fixed(digits, spec, 0, "rts", "test")
    b = data.fixed(digits, spec, 0, "rts", "test")
    c = data.fixed(digits, spec, 1, "rts", "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.params["angle"], b.params["angle"])
    assert not torch.equal(a.images, c.images)


def test_training_stream_replays_an_epoch_and_differs_between_epochs():
    spec = config.VariantConfig(preset="rts")
    s = data.Stream(_test_digits(600), spec, 0, "rts", 256, resample=True)
    a, b, c = (list(s.epoch(e)) for e in (1, 1, 2))
    assert len(a) == 2 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


# ---------------------------------------------------------------- the other grid generators


def test_base_grid_is_the_identity_affine_grid():
    for size in (5, 28, (7, 12)):
        assert torch.allclose(geometry.base_grid(size)[None], geometry.affine_grid(identity(1), size), atol=1e-6)


def test_identity_homography_and_tps_return_the_input():
    x = torch.rand(3, 2, 30, 30)
    eye = torch.eye(3).expand(3, 3, 3)
    assert torch.allclose(geometry.sample(x, geometry.projective_grid(eye, 30)), x, atol=1e-5)
    still = geometry.control_points(4).expand(3, 16, 2)
    assert torch.allclose(geometry.sample(x, geometry.tps_grid(still, 30, 4)), x, atol=1e-5)


def test_a_homography_with_last_row_001_is_its_affine_grid():
    theta = pose.distortion_theta(
        torch.tensor([30.0, -60.0]), torch.tensor([0.8, 1.1]), torch.tensor([[2.0, -3.0], [0.0, 4.0]]), 28, 42
    )
    matrix = torch.cat([theta, torch.tensor([0.0, 0.0, 1.0]).expand(2, 1, 3)], 1)
    assert torch.allclose(geometry.projective_grid(matrix, 42), geometry.affine_grid(theta, 42), atol=1e-5)


def _homography_through(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 matrix (h33 = 1) sending four points src to dst, by the direct linear transform in float64."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1.0).reshape(3, 3)


def test_a_homography_grid_sends_the_corners_where_a_closed_form_says():
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    moved = corners + np.array([[0.1, -0.05], [-0.2, 0.1], [0.05, 0.15], [0.1, -0.1]])
    h = _homography_through(corners, moved)
    grid = geometry.projective_grid(torch.tensor(h, dtype=torch.float32)[None], 16)[0].double().numpy()
    base = geometry.base_grid(16).double().numpy()
    # an independent evaluation of the same map at every output pixel centre
    q = np.einsum("ij,hwj->hwi", h, np.concatenate([base, np.ones_like(base[..., :1])], -1))
    assert np.allclose(grid, q[..., :2] / q[..., 2:], atol=1e-5)
    # stnexp's own homography from four point pairs is the same matrix, and its `project` sends the
    # corners where they were sent
    src, dst = torch.tensor(corners)[None], torch.tensor(moved)[None]
    ours = geometry.homography(src, dst)
    assert np.allclose(ours[0].double().numpy(), h, atol=1e-6)
    assert np.allclose(geometry.project(ours, src)[0].double().numpy(), moved, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_tps_sends_each_control_point_where_it_was_moved(k):
    c = geometry.control_points(k)
    targets = c + 0.1 * torch.randn(2, k * k, 2, generator=torch.Generator().manual_seed(k))
    assert torch.allclose(geometry.tps_map(targets, c, k), targets, atol=1e-4)


def test_tps_of_affinely_moved_points_is_that_affine_map():
    theta = geometry.theta_from_params(
        torch.tensor([0.3]), torch.tensor([0.9]), torch.tensor([0.1]), torch.tensor([-0.2])
    )
    c = geometry.control_points(4)
    targets = c @ theta[0, :, :2].T + theta[0, :, 2]
    assert torch.allclose(geometry.tps_grid(targets[None], 20, 4), geometry.affine_grid(theta, 20), atol=1e-4)


@pytest.mark.parametrize("size", [9, 28, 42, (60, 30), 84])
def test_affine_grid_is_torchs_bit_for_bit_and_needs_no_loop_under_vmap(size):
    import warnings

    import torch.nn.functional as F
    from torch.func import vmap

    torch.manual_seed(0)
    h, w = (size, size) if isinstance(size, int) else size
    theta = torch.randn(7, 2, 3)
    assert torch.equal(geometry.affine_grid(theta, size), F.affine_grid(theta, [7, 1, h, w], align_corners=False))
    # models stepped together (stacked.py): one grid per model, with no fallback to a loop and its warning
    thetas = torch.randn(3, 7, 2, 3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grids = vmap(lambda t: geometry.affine_grid(t, size))(thetas)
        grids.square().sum().backward()
    assert torch.equal(grids[2], geometry.affine_grid(thetas[2], size))
    # and its gradient is torch's affine_grid's, to fp32 rounding
    t = thetas[2].detach().requires_grad_()
    F.affine_grid(t, [7, 1, h, w], align_corners=False).square().sum().backward()
    assert torch.allclose(thetas.grad[2], t.grad, rtol=1e-5, atol=1e-4)
