"""The pose parts (pose.py), declared once and asked by the families, eval --sweep, the analyses and figures."""

import pytest
import torch

from stnexp import config, pose
from stnexp.models import transforms
from stnexp.results import evaluation, pictures, scoring


def test_every_family_moves_only_declared_parts_and_every_part_has_a_unit_for_each_of_its_names():
    for family in transforms.FAMILIES.values():
        assert set(family.moves) <= set(pose.NAMES)
    for part in pose.PARTS:
        assert {part.name, part.sweep, part.residual} <= set(pictures.UNITS)
        assert part.range_key in config.VariantConfig.model_fields


@pytest.mark.parametrize("part", pose.PARTS, ids=lambda p: p.name)
def test_eval_sweep_fixes_each_part_at_each_value_and_keeps_the_rest(part):
    assert evaluation.parse_sweep(f"{part.sweep}=1:3:1") == (part.sweep, [1.0, 2.0, 3.0])
    cfg = config.validate(
        {"data": {"train_size": 64, "val_size": 64, "variants": {"rts": {"preset": "rts"}}}, "device": "cpu"}
    )
    tests = scoring.TestSets(torch.device("cpu"))
    base = tests.get(cfg, "rts", 0)
    fixed = tests.swept(cfg, "rts", 0, part.sweep, 2.0)
    assert torch.allclose(part.measure(fixed.params[part.name].double()), torch.tensor(2.0, dtype=torch.float64))
    for other in pose.PARTS:
        if other is not part:
            assert torch.equal(fixed.params[other.name], base.params[other.name])
    assert not torch.equal(fixed.images, base.images)


def test_a_part_that_must_be_positive_refuses_a_sweep_through_zero():
    for part in pose.PARTS:
        if part.positive:
            with pytest.raises(evaluation.UserError, match="must be > 0"):
                evaluation.parse_sweep(f"{part.sweep}=0:1:0.5")
