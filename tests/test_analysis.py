"""Paired significance and rectification: what stnexp says beyond accuracy."""

import math
import statistics

import pytest
import torch

from stnexp import geometry, pose
from stnexp.models import transforms
from stnexp.results import analysis


def test_mcnemar_counts_the_digits_only_one_model_gets_right_and_tests_them_exactly():
    a = torch.tensor([True] * 10 + [False] * 2 + [True] * 50)
    b = torch.tensor([False] * 10 + [True] * 2 + [True] * 50)
    only_a, only_b, p = analysis.mcnemar(a, b)
    assert (only_a, only_b) == (10, 2)
    # two-sided binomial test of 2 in 12 at 1/2: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12
    assert p == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert analysis.mcnemar(a, a) == (0, 0, 1.0)
    assert analysis.mcnemar(b, a)[2] == p  # symmetric


def test_pairs_are_formed_within_each_variant_and_seed():
    ok = torch.ones(5, dtype=torch.bool)
    right = {
        ("rts", 0, "cnn"): ok,
        ("rts", 0, "st"): ok,
        ("rts", 0, "fcn"): ok,
        ("rts", 1, "cnn"): ok,
        ("rts", 1, "st"): ok,
    }
    rows = analysis.paired_rows(right, {k: 0.0 for k in right})
    assert [(r["seed"], r["model_a"], r["model_b"]) for r in rows] == [
        (0, "cnn", "st"),
        (0, "cnn", "fcn"),
        (0, "st", "fcn"),
        (1, "cnn", "st"),
    ]
    assert not any(r["significant"] for r in rows)


def _poses(n=500):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, generator=g) * 90 - 45,
        0.7 + 0.5 * torch.rand(n, generator=g),
        torch.rand(n, 2, generator=g) * 10 - 5,
    )


def test_with_no_transformer_the_residual_is_the_distortion_itself():
    angle, scale, shift = _poses()
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(angle), 2, 3)
    r = pose.residual(eye, {"angle": angle, "scale": scale, "shift": shift}, 42)
    assert torch.allclose(r["angle"].float(), angle, atol=1e-4)
    assert torch.allclose(r["log_scale"].float(), torch.log(42 / (28 * scale)), atol=1e-5)


def test_a_transformer_that_undoes_each_distortion_leaves_every_digit_in_one_pose():
    angle, scale, shift = _poses()
    d = pose.distortion_theta(angle, scale, shift, 28, 42).double()
    full = torch.cat([d, torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype).expand(len(d), 1, 3)], 1)
    undo = torch.linalg.inv(full)[:, :2]  # what the classifier sees is the undistorted digit
    r = pose.residual(undo, {"angle": angle, "scale": scale, "shift": shift}, 42)
    assert r["angle"].abs().max() < 1e-6 and r["log_scale"].abs().max() < 1e-6 and r["shift"].abs().max() < 1e-6


def test_a_transformer_that_undoes_each_distortion_then_applies_a_fixed_map_leaves_that_map():
    """Residual = distortion o transformer (classifier view -> canvas -> digit). A transformer that is
    the distortion's inverse followed by a fixed E leaves E for every digit. The reversed composition,
    transformer o distortion = D^-1 E D, keeps E's angle and scale but not its shift, so this catches it."""
    angle, scale, shift = _poses()
    d = pose.distortion_theta(angle, scale, shift, 28, 42).double()
    row = torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype).expand(len(d), 1, 3)
    a = math.radians(20.0)
    e = torch.tensor(
        [[0.9 * math.cos(a), -0.9 * math.sin(a), 0.2], [0.9 * math.sin(a), 0.9 * math.cos(a), -0.1], [0, 0, 1]],
        dtype=d.dtype,
    )
    t = (torch.linalg.inv(torch.cat([d, row], 1)) @ e)[:, :2]
    r = pose.residual(t, {"angle": angle, "scale": scale, "shift": shift}, 42)
    assert torch.allclose(r["angle"], torch.full_like(r["angle"], 20.0), atol=1e-6)
    assert torch.allclose(r["log_scale"], torch.full_like(r["log_scale"], math.log(0.9)), atol=1e-6)
    assert torch.allclose(r["shift"], torch.tensor([0.2 * 14, -0.1 * 14], dtype=d.dtype).expand(len(d), 2), atol=1e-6)


def test_a_model_without_an_affine_transformer_has_no_rectification():
    from stnexp import config, models

    params = {"angle": torch.zeros(4), "scale": torch.ones(4), "shift": torch.zeros(4, 2)}
    x = torch.rand(4, 1, 42, 42)
    assert analysis.rectification(models.build(config.CNNConfig(arch="cnn"), 42), x, params, 42) is None
    tps = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig(transform="tps")), 42)
    assert analysis.rectification(tps, x, params, 42) is None
    aff = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig()), 42)
    angle, scale, shift = _poses(4)
    r = analysis.rectification(aff, x, {"angle": angle, "scale": scale, "shift": shift}, 42)
    # a transformer at the identity leaves the spread as it was
    assert r.row["angle_std_after"] == pytest.approx(r.row["angle_std_before"], abs=1e-3)
    assert math.isfinite(r.row["shift_std_after"])


def test_where_rectification_is_not_measured_analysis_md_says_why(tmp_path):
    from stnexp import config, data, models
    from stnexp.results import outputs

    cnn = models.build(config.CNNConfig(arch="cnn"), 28)
    tps = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig(transform="tps")), 28)
    aff = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig()), 28)
    from stnexp.data.sets import Digits

    digits = Digits((torch.rand(8, 28, 28) * 255).to(torch.uint8), torch.arange(8))
    projective = data.fixed(digits, config.VariantConfig(preset="projective"), 0, "projective", "test").params
    pose_only = data.fixed(digits, config.VariantConfig(preset="rotated"), 0, "rotated", "test").params
    assert analysis.unmeasured(aff, pose_only) is None
    assert analysis.unmeasured(cnn, pose_only) == "no transformer"
    assert "tps family has no affine theta" in analysis.unmeasured(tps, pose_only)
    at_conv1 = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig(at="conv1")), 28)
    assert analysis.unmeasured(at_conv1, pose_only) is None  # the CNN declares its conv1 frame
    at_conv1.conv1_kernel = None  # a backbone that does not: no silently wrong frame, a reason
    assert "declares no conv1 frame" in analysis.unmeasured(at_conv1, pose_only)
    why = analysis.unmeasured(aff, projective)
    assert why.startswith("the variant warps more than the pose (") and "corners" in why
    assert analysis.rectification(aff, torch.rand(8, 1, 28, 28), projective, 28) is None
    unmeasured = [{"variant": "projective", "seed": 0, "model": "st-cnn", "why": why}]
    outputs.write_analysis(tmp_path, [], [], [], None, unmeasured)
    assert f"- st-cnn on projective, seed 0: {why}" in (tmp_path / "analysis.md").read_text()


def test_error_is_binned_by_the_true_distortion_of_each_digit():
    angle = torch.linspace(-45, 45, 600)
    params = {("rts", 0): {"angle": angle, "scale": torch.ones(600), "shift": torch.zeros(600, 2)}}
    wrong_when_turned_right = angle <= 0  # right only for digits turned one way
    rows = analysis.binned({("rts", 0, "m"): wrong_when_turned_right}, params)
    (row,) = rows  # scale and shift do not vary: no rows for them
    assert row["by"] == "angle" and row["edges"][0] == -45 and row["edges"][-1] == 45
    assert row["error"] == [0.0, 0.0, 0.0, 100.0, 100.0, 100.0] and row["n"] == [100] * 6
    # each bin's exact 95% interval: 0 of 100 wrong is [0, 3.62]%, 100 of 100 is [96.38, 100]%
    assert row["interval"] == [[0.0, 3.62]] * 3 + [[96.38, 100.0]] * 3
    md = analysis.binned_markdown(rows)
    assert "| model | -45 to -30 (100) | -30 to -15 (100) |" in md
    assert "| m | 0.00 [0.00, 3.62] | 0.00 [0.00, 3.62] | 0.00 [0.00, 3.62] | 100.00 [96.38, 100.00] |" in md


@pytest.mark.parametrize(
    "lo, hi, steps, edges",
    [
        (-45, 45, analysis.ANGLE_STEPS, [-45, -30, -15, 0, 15, 30, 45]),  # RTS's angles
        (-89.97, 89.99, analysis.ANGLE_STEPS, [-90, -60, -30, 0, 30, 60, 90]),  # R's, as drawn
        (-15.2, 0.004, None, [-20, -15, -10, -5, 0, 5]),  # not "-15 to 0.004"
        (0.7, 1.2, None, [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]),  # RTS's scales
        (0.0, 16.8, None, [0, 5, 10, 15, 20]),  # shifts in px
    ],
)
def test_bins_have_round_edges_that_cover_the_values(lo, hi, steps, edges):
    assert analysis.round_edges(lo, hi, steps) == pytest.approx(edges)


def test_a_conv1_transformers_theta_read_in_image_coordinates_moves_the_image_as_it_moves_the_maps():
    from stnexp import config, models

    m = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig(at="conv1")), 42)
    with (
        torch.no_grad()
    ):  # conv1 copies the pixel under its kernel's centre: the maps are the image, cropped and pooled
        m.block1[0].weight.zero_()
        m.block1[0].weight[:, :, 4, 4] = 1
        m.block1[0].bias.zero_()
    yy, xx = torch.meshgrid(torch.arange(42.0), torch.arange(42.0), indexing="ij")
    blob = torch.exp(-((xx - 19) ** 2 + (yy - 23) ** 2) / 8)[None, None]

    def centre(maps):  # of the first map, in map pixels
        f = maps[0, 0]
        ys, xs = torch.meshgrid(torch.arange(17.0), torch.arange(17.0), indexing="ij")
        return torch.stack([(f * xs).sum(), (f * ys).sum()]) / f.sum()

    theta = torch.tensor([[[0.8, 0.0, 0.6], [0.0, 0.8, -0.3]]])
    with torch.no_grad():
        warped_maps = geometry.sample(m.block1(blob), geometry.affine_grid(theta, 17))
        maps_of_warped = m.block1(
            geometry.sample(blob, geometry.affine_grid(analysis._in_image(theta, 42, m.conv1_kernel), 42))
        )
        maps_of_naive = m.block1(geometry.sample(blob, geometry.affine_grid(theta, 42)))
    assert (centre(warped_maps) - centre(maps_of_warped)).abs().max() < 0.15
    assert (centre(warped_maps) - centre(maps_of_naive)).abs().max() > 0.5  # the raw theta would misplace it


def _fixed_transformer(transform: str, at: str, params: torch.Tensor):
    """A CNN behind a transformer whose localisation net answers `params` for every image."""
    from stnexp import config, models

    m = models.build(config.CNNConfig(arch="cnn", stn=config.TransformerConfig(transform=transform, at=at)), 42)
    m.transform_params = lambda x: params.expand(len(x), -1)
    return m


def test_a_family_that_cannot_turn_says_so_instead_of_a_residual_angle():
    angle, scale, shift = _poses(200)
    att = _fixed_transformer("attention", "input", torch.tensor([[0.8, 0.1, 0.0]]))
    r = analysis.rectification(att, torch.rand(200, 1, 42, 42), {"angle": angle, "scale": scale, "shift": shift}, 42)
    assert r.row["cannot"] == ["angle"] and r.row["at"] == "input"
    line = analysis.rectification_markdown([{"variant": "rts", "seed": 0, "model": "att", **r.row}]).splitlines()[-1]
    assert line.startswith("| rts | 0 | att | 26") and "-> (cannot rotate) |" in line and "cannot scale" not in line
    c1 = _fixed_transformer("affine", "conv1", torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]))
    r = analysis.rectification(c1, torch.rand(200, 1, 42, 42), {"angle": angle, "scale": scale, "shift": shift}, 42)
    assert r.row["cannot"] == [] and "| c1 (at conv1) |" in analysis.rectification_markdown(
        [{"variant": "rts", "seed": 0, "model": "c1", **r.row}]
    )


def test_the_scatter_puts_a_transformer_that_undoes_the_pose_on_the_diagonal_and_the_identity_on_zero(tmp_path):
    from PIL import Image

    from stnexp.results import pictures

    angle, scale, shift = _poses(300)
    params = {"angle": angle, "scale": scale, "shift": shift}
    d = pose.distortion_theta(angle, scale, shift, 28, 42).double()
    undo = torch.linalg.inv(torch.cat([d, torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype).expand(len(d), 1, 3)], 1))[
        :, :2
    ].float()
    images = torch.rand(300, 1, 42, 42)
    inverse = _fixed_transformer("affine", "input", torch.zeros(1, 6))
    inverse.transform_params = lambda x: undo[: len(x)].reshape(len(x), 6)  # one batch of all 300 digits
    r = analysis.rectification(inverse, images, params, 42, batch=300)
    for part in ("angle", "log_scale", "shift"):
        assert torch.allclose(r.undone[part], r.true[part], atol=1e-3)  # all of it undone
    assert len(r.true["shift"]) == 2 * 300  # x and y of every digit
    assert abs(float(r.true["log_scale"].mean())) < 1e-6  # about the mean (the angle: about its circular mean)
    assert r.row["angle_std_after"] < 1e-3 and r.row["shift_std_after"] < 1e-3
    identity = _fixed_transformer("affine", "input", torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]))
    r = analysis.rectification(identity, images, params, 42)
    assert all(r.undone[p].abs().max() < 1e-4 for p in ("angle", "log_scale", "shift"))  # none of it
    path = pictures.scatter(r.true, r.undone, tmp_path / "s.png", "scatter")
    with Image.open(path) as png:
        png.verify()


def test_the_invariance_plot_draws_the_binned_errors_of_every_model(tmp_path):
    from PIL import Image

    from stnexp.results import pictures

    angle = torch.linspace(-45, 45, 600)
    params = {("rts", 0): {"angle": angle, "scale": torch.linspace(0.7, 1.2, 600), "shift": torch.zeros(600, 2)}}
    rows = analysis.binned({("rts", 0, "a"): angle <= 0, ("rts", 0, "b"): angle > 0}, params)
    assert {(r["model"], r["by"]) for r in rows} == {(m, k) for m in "ab" for k in ("angle", "scale")}
    with Image.open(pictures.invariance(rows, tmp_path / "inv.png", "by distortion")) as png:
        assert png.width > 2 * png.height  # a panel per varying part: angle and scale side by side


# Student's t, 97.5% quantile, by degrees of freedom (standard tables, 4 significant digits)
T975 = {
    1: 12.71,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    100: 1.984,
}


@pytest.mark.parametrize("df", sorted(T975))
def test_the_interval_over_seeds_uses_students_t_for_any_number_of_seeds(df):
    values = [float(i % 3) for i in range(df + 1)]  # n = df + 1 seeds, not all equal
    mean, half = analysis.mean_interval(values)
    sd = statistics.stdev(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert half / (sd / math.sqrt(len(values))) == pytest.approx(T975[df], rel=5e-4)


def test_twelve_seeds_get_the_t_interval_not_the_normal_one():
    values = [0.0, 1.0] * 6
    # sd = sqrt(12 / 11 / 4); t(0.975, 11) = 2.201, where the normal 1.96 would give 0.295 for sd 0.522
    assert analysis.mean_interval(values)[1] == pytest.approx(2.201 * math.sqrt(3 / 11) / math.sqrt(12), rel=1e-3)
    assert analysis.mean_interval([1.0]) is None


def test_holm_multiplies_the_ith_smallest_p_by_m_minus_i_and_keeps_the_order():
    # m = 4: 0.01 * 4, 0.02 * 3, 0.03 * 2 -> 0.06, max(0.06, 0.8 * 1)
    assert analysis.holm([0.03, 0.8, 0.01, 0.02]) == pytest.approx([0.06, 0.8, 0.04, 0.06])
    # a later, smaller product does not fall below an earlier one (step-down monotone), and 1 caps it
    assert analysis.holm([0.01, 0.011, 0.9, 0.6]) == pytest.approx([0.04, 0.04, 1.0, 1.0])
    assert analysis.holm([0.2]) == [0.2] and analysis.holm([]) == []


def test_many_pairs_of_one_variant_and_seed_are_judged_on_holms_adjusted_p():
    n = 200
    base = torch.zeros(n, dtype=torch.bool)
    # a and b differ on 12 digits, all one way: raw p = 2 / 2^12 = 4.9e-4; with 28 pairs it stays significant
    # a and c differ on 7, all one way: raw p = 2 / 2^7 = 0.0156 < 0.05, but not after Holm over 28 pairs
    right = {("rts", 0, "a"): base.clone(), ("rts", 0, "b"): base.clone(), ("rts", 0, "c"): base.clone()}
    right[("rts", 0, "b")][:12] = True
    right[("rts", 0, "c")][100:107] = True
    for k in range(5):  # five more models like a: 8 models, 28 pairs in the family
        right[("rts", 0, f"x{k}")] = base.clone()
    rows = {(r["model_a"], r["model_b"]): r for r in analysis.paired_rows(right, {k: 0.0 for k in right})}
    assert len(rows) == 28 and {r["pairs"] for r in rows.values()} == {28}
    ab, ac = rows[("a", "b")], rows[("a", "c")]
    assert ab["p_value"] == pytest.approx(2 / 2**12, rel=5e-3) and ab["significant"]
    assert ac["p_value"] == pytest.approx(2 / 2**7, rel=5e-3) and ac["p_value"] < 0.05
    assert ac["p_holm"] > 0.05 and not ac["significant"]
    md = analysis.paired_markdown(list(rows.values()))
    assert "Holm's method" in md and "| p | p Holm |" in md


def test_the_table1_figure_draws_our_mean_and_interval_beside_the_papers_number(tmp_path, monkeypatch):
    from stnexp.results import pictures

    drawn = []
    monkeypatch.setattr(pictures, "_save", lambda fig, path: drawn.append(fig) or path)
    cells = [
        {"label": "CNN", "column": "RTS", "mean": 1.5, "half": 0.4, "seeds": 3, "paper": 0.8},
        {"label": "mine", "column": "RTS", "mean": 2.0, "half": None, "seeds": 1, "paper": None},
    ]
    pictures.table1(cells, tmp_path / "t.png", "table 1")
    (ax,) = [a for a in drawn[0].axes]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["CNN", "mine"]
    bars = [c for c in ax.containers]  # one errorbar per cell: the CNN's spans mean +- half
    (segments,) = bars[0].lines[2]
    assert segments.get_segments()[0][:, 0].tolist() == [1.1, 1.9]
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in crosses] == [(0.8, 0)]  # the paper, CNN's row only


def test_across_seeds_is_a_paired_t_test_on_the_per_seed_differences_of_two_recipes():
    a = [1.10, 1.30, 1.00, 1.25]
    b = [0.90, 1.00, 0.95, 1.00]  # better on every seed, by different amounts
    errors = {("R", s, "cnn"): e for s, e in enumerate(a)} | {("R", s, "st"): e for s, e in enumerate(b)}
    errors[("R", 0, "fcn")] = errors[("R", 1, "fcn")] = 2.0  # two seeds only: no test for its pairs
    (row,) = analysis.across_seeds(errors)
    d = [x - y for x, y in zip(a, b)]
    mean, sd = statistics.mean(d), statistics.stdev(d)
    t = mean / (sd / math.sqrt(4))
    assert (row["model_a"], row["model_b"], row["seeds"]) == ("cnn", "st", [0, 1, 2, 3])
    assert row["difference"] == pytest.approx(mean, abs=1e-4)
    # Student's t with 3 degrees of freedom: 3.182 is its 97.5% quantile
    assert row["interval"] == pytest.approx([mean - 3.1824 * sd / 2, mean + 3.1824 * sd / 2], abs=1e-3)
    from scipy import stats

    assert row["p_value"] == pytest.approx(2 * stats.t.sf(t, 3), rel=1e-2) and row["p_value"] < 0.05
    assert row["significant"] and row["p_holm"] == row["p_value"]  # the only pair of its family
    # seed against seed: shuffling one recipe's seeds changes the test (an unpaired one would not change)
    shuffled = {**errors, ("R", 0, "st"): b[3], ("R", 3, "st"): b[0]}
    assert analysis.across_seeds(shuffled)[0]["p_value"] != row["p_value"]
    # the same difference on every seed: no spread, the t statistic is undefined, and not called significant
    same = {("R", s, "cnn"): 1.0 + s for s in range(3)} | {("R", s, "st"): 0.5 + s for s in range(3)}
    (flat,) = analysis.across_seeds(same)
    assert flat["p_value"] is None and not flat["significant"] and flat["difference"] == pytest.approx(0.5)
    assert "n/a" in analysis.across_seeds_markdown([flat])


def test_a_run_of_three_seeds_writes_the_test_across_seeds_into_analysis_json_and_md(tmp_path):
    import json

    from stnexp.results import outputs

    errors = {("R", s, "cnn"): 1.2 + 0.1 * s for s in range(3)} | {("R", s, "st"): 0.8 + 0.05 * s for s in range(3)}
    outputs.write_analysis(tmp_path, [], [], [], analysis.across_seeds(errors))
    (row,) = json.loads((tmp_path / "analysis.json").read_text())["across_seeds"]
    assert (row["model_a"], row["model_b"], row["seeds"]) == ("cnn", "st", [0, 1, 2])
    assert "**Across training seeds: a paired t-test" in (tmp_path / "analysis.md").read_text()


def test_the_transformer_picture_shows_the_first_digits_then_a_row_of_the_first_it_gets_wrong():
    from stnexp.results.outputs import FAILURE_DIGITS, PICTURE_DIGITS, picked

    right = torch.ones(1000, dtype=torch.bool)
    right[[3, 40, 41, 500]] = False
    shown, failures = picked(right)
    # four wrong: the first 28 of the others, then those four (digit 3 among them, not twice)
    assert failures == 4 and shown.tolist() == [*(i for i in range(29) if i != 3), 3, 40, 41, 500]
    right[:] = False
    shown, failures = picked(right)
    # every digit wrong: a row of the first of them last, the next ones before it
    assert failures == FAILURE_DIGITS and shown.tolist() == [*range(FAILURE_DIGITS, PICTURE_DIGITS), *range(8)]
    right[:] = True
    assert picked(right)[1] == 0 and picked(right)[0].tolist() == list(range(PICTURE_DIGITS))


def test_the_sampling_box_of_the_identity_is_the_image_and_a_shift_moves_it():
    from stnexp.results import pictures

    identity = transforms.grid("affine", torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]), 42)
    box = pictures.outline(identity, 42)[0]
    # the grid's border runs through the centres of the outer pixels: 0 and 41 in pixel coordinates
    assert box[:, 0].min() == pytest.approx(0, abs=1e-4) and box[:, 0].max() == pytest.approx(41, abs=1e-4)
    assert box[:, 1].min() == pytest.approx(0, abs=1e-4) and box[:, 1].max() == pytest.approx(41, abs=1e-4)
    assert len(box) == 4 * 41 + 1 and torch.equal(box[0], box[-1])  # the border once round, closed
    # half the canvas to the right and at half the size: x from 21 to 41.5 - 0.25 px
    half = transforms.grid("affine", torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.5, 0.0]]), 42)
    moved = pictures.outline(half, 42)[0]
    assert moved[:, 0].min() == pytest.approx(20.75, abs=1e-4) and moved[:, 0].max() == pytest.approx(41.25, abs=1e-4)


def test_the_error_interval_is_the_exact_clopper_pearson_interval_of_scipy():
    from scipy.stats import binomtest

    from stnexp.results.analysis import error_interval

    for n in (1, 2, 38, 100, 1000, 10000):
        for wrong in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ci = binomtest(wrong, n).proportion_ci(0.95, method="exact")
            assert error_interval(wrong, n) == (round(100 * ci.low, 2), round(100 * ci.high, 2)), (wrong, n)
    assert error_interval(0, 38) == (0.0, 9.25)  # no error in 38 digits: up to 9.25 % is as likely
