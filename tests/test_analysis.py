"""Paired significance and rectification: what stnexp says beyond accuracy."""

import math

import pytest
import torch

from stnexp import analysis, geometry


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
    right = {("rts", 0, "cnn"): ok, ("rts", 0, "st"): ok, ("rts", 0, "fcn"): ok, ("rts", 1, "cnn"): ok, ("rts", 1, "st"): ok}
    rows = analysis.paired_rows(right, {k: 0.0 for k in right})
    assert [(r["seed"], r["model_a"], r["model_b"]) for r in rows] == [(0, "cnn", "st"), (0, "cnn", "fcn"), (0, "st", "fcn"), (1, "cnn", "st")]
    assert not any(r["significant"] for r in rows)


def _poses(n=500):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, generator=g) * 90 - 45, 0.7 + 0.5 * torch.rand(n, generator=g), torch.rand(n, 2, generator=g) * 10 - 5)


def test_with_no_transformer_the_residual_is_the_distortion_itself():
    angle, scale, shift = _poses()
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(angle), 2, 3)
    r = analysis.residual(eye, angle, scale, shift, 42)
    assert torch.allclose(r["angle"].float(), angle, atol=1e-4)
    assert torch.allclose(r["log_scale"].float(), torch.log(42 / (28 * scale)), atol=1e-5)


def test_a_transformer_that_undoes_each_distortion_leaves_every_digit_in_one_pose():
    angle, scale, shift = _poses()
    d = geometry.distortion_theta(angle, scale, shift, 28, 42).double()
    full = torch.cat([d, torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype).expand(len(d), 1, 3)], 1)
    undo = torch.linalg.inv(full)[:, :2]  # what the classifier sees is the undistorted digit
    r = analysis.residual(undo, angle, scale, shift, 42)
    assert r["angle"].abs().max() < 1e-6 and r["log_scale"].abs().max() < 1e-6 and r["shift"].abs().max() < 1e-6


def test_a_model_without_an_affine_input_transformer_has_no_rectification():
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
    assert r["angle_std_after"] == pytest.approx(r["angle_std_before"], abs=1e-3)
    assert math.isfinite(r["shift_std_after"])


def test_error_is_binned_by_the_true_distortion_of_each_digit():
    angle = torch.linspace(-45, 45, 600)
    params = {("rts", 0): {"angle": angle, "scale": torch.ones(600), "shift": torch.zeros(600, 2)}}
    wrong_when_turned_right = angle <= 0  # right only for digits turned one way
    rows = analysis.binned({("rts", 0, "m"): wrong_when_turned_right}, params)
    (row,) = rows  # scale and shift do not vary: no rows for them
    assert row["by"] == "angle" and row["edges"][0] == -45 and row["edges"][-1] == 45
    assert row["error"] == [0.0, 0.0, 0.0, 100.0, 100.0, 100.0] and sum(row["n"]) == 600
    assert "| m | 0.00 | 0.00 | 0.00 | 100.00 | 100.00 | 100.00 |" in analysis.binned_markdown(rows)
