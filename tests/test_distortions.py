"""The paper's P, E and TC variants: projective corners, elastic thin-plate spline, clutter patches."""

import pytest
import torch

from stnexp import config, data, geometry
from stnexp.data import distortions, mnist


def _digits(n=500):
    d = mnist.load()
    return data.Digits(torch.from_numpy(d.test_images[:n].copy()), torch.from_numpy(d.test_labels[:n].copy()).long())


def spec(**kw):
    return config.VariantConfig(**kw)


def test_the_paper_presets_turn_on_their_kinds():
    assert distortions.used(spec(preset="projective")) == ["pose", "projective"]
    assert distortions.used(spec(preset="elastic")) == ["pose", "elastic"]
    assert distortions.used(spec(preset="cluttered")) == ["pose", "clutter"]
    assert distortions.used(spec(preset="rts")) == ["pose"]
    c = spec(preset="cluttered")
    assert (c.canvas, c.patches, c.patch_size, c.translation) == (60, 6, 6, "fit")


def test_a_homography_through_four_moved_corners_matches_the_closed_form():
    # the unit square's corners to a known quadrilateral: the closed-form square-to-quad mapping
    # (Heckbert 1989) gives the same matrix, up to scale, as the solved 8 x 8 system
    src = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    dst = torch.tensor([[[0.1, 0.2], [1.3, -0.1], [0.9, 1.2], [-0.2, 0.8]]])
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = dst[0].tolist()
    sx, sy = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    dx1, dx2, dy1, dy2 = x1 - x2, x3 - x2, y1 - y2, y3 - y2
    den = dx1 * dy2 - dx2 * dy1
    g, h = (sx * dy2 - dx2 * sy) / den, (dx1 * sy - sx * dy1) / den
    closed = torch.tensor(
        [[x1 - x0 + g * x1, x3 - x0 + h * x3, x0], [y1 - y0 + g * y1, y3 - y0 + h * y3, y0], [g, h, 1.0]]
    )
    solved = geometry.homography(src, dst)[0]
    assert torch.allclose(solved, closed, atol=1e-5)
    assert torch.allclose(geometry.project(solved[None], src), dst, atol=1e-5)


def test_zero_jitter_warps_leave_the_posed_digit_as_it_was():
    digits = _digits(64)
    rts = spec(preset="rts")
    params = data.fixed(digits, rts, 0, "v", "test").params
    posed = distortions.render(digits.images, params, rts)
    # the projective and elastic warps with zero moves compose into the same grid as pose alone
    both = rts.model_copy(update={"corner_jitter": 1.0, "elastic_jitter": 1.0})
    still = {**params, "corners": torch.zeros(64, 4, 2), "elastic": torch.zeros(64, 16, 2)}
    assert torch.allclose(distortions.render(digits.images, still, both), posed, atol=1e-4)


def test_a_moved_corner_reads_the_image_where_the_corner_went():
    canvas = 28
    p = spec(corner_jitter=5.0)
    moves = torch.zeros(1, 4, 2)
    moves[0, 2] = torch.tensor([-6.0, -4.0])  # the bottom-right corner reads 6 px left, 4 px up
    params = {"angle": torch.zeros(1), "scale": torch.ones(1), "shift": torch.zeros(1, 2), "corners": moves}
    corner = torch.tensor([[1.0, 1.0]])
    read = distortions.KINDS["projective"].warp(params, p, corner)
    assert torch.allclose(read, corner + moves[0, 2] * 2 / canvas, atol=1e-5)
    # the other three corners stay where they were
    others = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    assert torch.allclose(distortions.KINDS["projective"].warp(params, p, others), others[None], atol=1e-5)


def test_elastic_control_points_read_the_image_where_they_moved():
    e = spec(elastic_jitter=1.5, elastic_grid=3)
    moves = torch.randn(2, 9, 2, generator=torch.Generator().manual_seed(0))
    points = geometry.control_points(3)
    read = distortions.KINDS["elastic"].warp({"elastic": moves}, e, points)
    assert torch.allclose(read, points + moves * 2 / e.canvas, atol=1e-4)


def test_jitter_draws_have_the_configured_spread():
    digits = _digits(2000)
    p = data.fixed(digits, spec(preset="projective"), 0, "p", "test").params["corners"]
    e = data.fixed(digits, spec(preset="elastic"), 0, "e", "test").params["elastic"]
    assert p.shape == (2000, 4, 2) and e.shape == (2000, 16, 2)
    assert abs(p.std().item() - 5.0) < 0.15 and abs(p.mean().item()) < 0.15
    assert abs(e.std().item() - 1.5) < 0.05


def test_clutter_paints_patches_of_other_digits_and_keeps_the_digit_whole():
    digits = _digits(300)
    tc = spec(preset="cluttered")
    s = data.fixed(digits, tc, 0, "tc", "test")
    assert s.images.shape == (300, 1, 60, 60)
    clean = distortions.render(digits.images, s.params, tc.model_copy(update={"patches": 0}))
    # painting takes the pixel-wise maximum: the digit is all there, and clutter only adds ink
    assert torch.all(s.images >= clean - 1e-6)
    assert (s.images > clean + 1e-3).any(dim=(1, 2, 3)).float().mean() > 0.5
    # each patch is the cut it says it is, where it says it is (on a canvas with no digit)
    src, cut, at = s.params["patch_digit"][0, 0], s.params["patch_from"][0, 0], s.params["patch_at"][0, 0]
    patch = digits.images[src, cut[1] : cut[1] + 6, cut[0] : cut[0] + 6].float() / 255
    lone = {k: v[:1, :1] for k, v in s.params.items() if k.startswith("patch_")}
    blank = torch.zeros(1, 1, 60, 60)
    painted = distortions.KINDS["clutter"].paint(blank, lone, tc.model_copy(update={"patches": 1}), digits.images)
    assert torch.allclose(painted[0, 0, at[1] : at[1] + 6, at[0] : at[0] + 6], patch)
    assert painted.sum() == pytest.approx(patch.sum().item(), rel=1e-5)
    assert ((s.params["patch_at"] >= 0) & (s.params["patch_at"] <= 54)).all()


def test_new_kinds_draw_from_their_own_streams_so_pose_stays_as_it_was():
    digits = _digits(200)
    rts = spec(preset="rts")
    plain = data.fixed(digits, rts, 3, "v", "test").params
    jittered = data.fixed(digits, rts.model_copy(update={"corner_jitter": 2.0, "patches": 3}), 3, "v", "test").params
    for key in ("angle", "scale", "shift"):
        assert torch.equal(plain[key], jittered[key])


def test_training_batches_of_a_cluttered_variant_cut_patches_from_the_training_digits():
    digits = _digits(256)
    stream = data.Stream(digits, spec(preset="cluttered"), 0, "tc", 64, resample=True)
    a = [x for x, _ in stream.epoch(1)]
    b = [x for x, _ in stream.epoch(1)]
    assert len(a) == 4 and a[0].shape == (64, 1, 60, 60)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # an epoch replays exactly
    # where the patches come from: training digits all blank but digit 0, which is white all over, and
    # labels that name each digit. A digit other than 0 shows nothing but whole 6x6 white patches of digit
    # 0: patches are cut from these training digits, from no other set
    images = torch.zeros(256, 28, 28, dtype=torch.uint8)
    images[0] = 255
    stream = data.Stream(data.Digits(images, torch.arange(256)), spec(preset="cluttered"), 0, "tc", 64, resample=True)
    patches = 0
    for x, y in stream.epoch(1):
        for img in x[y != 0, 0]:
            lit = img > 0
            assert torch.equal(img[lit], torch.ones(int(lit.sum()))), "a pixel that is no white patch of digit 0"
            if lit.any():
                rows, cols = lit.any(1).nonzero(), lit.any(0).nonzero()
                assert rows.numel() >= 6 and cols.numel() >= 6  # whole patches, never cut smaller
                patches += 1
    assert patches > 0  # 4 batches of 64 with 6 patches each: about 6 from digit 0


def test_every_variant_key_belongs_to_one_kind_of_distortion():
    """A kind owns its keys (its class in config/variants.py, named by its Kind): each key of a variant,
    besides the preset and the canvas, is one kind's, and a variant is all of them."""
    from stnexp import config
    from stnexp.data import distortions

    owned = [key for kind in distortions.KINDS.values() for key in kind.keys.model_fields]
    assert sorted(owned) == sorted(set(config.VariantConfig.model_fields) - {"preset", "canvas"})
    assert all(issubclass(config.VariantConfig, kind.keys) for kind in distortions.KINDS.values())
