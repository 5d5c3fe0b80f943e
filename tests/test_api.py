"""The Python API: docs/python-api.md's worked example runs as written, and its functions do what the
commands do."""

import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_worked_example_in_the_docs_runs(tmp_path, monkeypatch, capsys):
    page = (ROOT / "docs" / "python-api.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, re.S)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/python-api.md", "exec"), {})
    out = capsys.readouterr().out
    assert "st-cnn on rts seed 0 after epoch 1" in out
    run = tmp_path / "runs" / "api-example"
    rows = json.loads((run / "evals" / "best-on-translated.json").read_text())
    for row in rows:  # what evaluate printed is what it wrote
        assert f"{row['model']} translated {row['error']}" in out


def test_load_rebuilds_a_model_that_scores_as_its_run_did(tiny_run):
    import torch

    import stnexp

    st = stnexp.load(tiny_run / "checkpoints" / "rts" / "st-cnn-s0-best.pt")
    assert (st.name, st.variant, st.seed) == ("st-cnn", "rts", 0) and st.model.stn is not None and not st.model.training
    digits = stnexp.test_set(st)
    # the API alone: the model at the precision the checkpoint names, through Loaded.autocast()
    with torch.no_grad(), st.autocast():
        right = sum(
            int((st.model(digits.images[i : i + 1000]).argmax(1) == digits.labels[i : i + 1000]).sum())
            for i in range(0, len(digits.labels), 1000)
        )
    scored = next(
        r
        for r in json.loads((tiny_run / "results.json").read_text())
        if r["model"] == "st-cnn" and r["checkpoint"] == "best"
    )
    assert right == scored["correct"]


def test_a_0_1_checkpoint_loads():
    import stnexp

    found = sorted((ROOT / "tests" / "data" / "v01-run" / "checkpoints").glob("*/*.pt"))
    loaded = stnexp.load(found[0])
    assert loaded.model(stnexp.test_set(loaded).images[:2]).shape == (2, 10)


def test_bad_input_raises_the_commands_one_line_error(tmp_path):
    import stnexp
    from stnexp.errors import UserError

    with pytest.raises(UserError, match="checkpoint not found"):
        stnexp.load(tmp_path / "none.pt")
    with pytest.raises(UserError, match="^checkpoint: expected best or last"):  # the argument, not the flag
        stnexp.evaluate(tmp_path, checkpoint="worst")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.evaluate("runs", sweep=5), r"stnexp.evaluate(sweep=5): expected a string or None"),
        (lambda s: s.evaluate("runs", variants=[1]), r"stnexp.evaluate(variants=[1]): expected a string or a list of"),
        (lambda s: s.evaluate("runs", canvass=5), r"stnexp.evaluate: no argument 'canvass' (it takes variants, "),
        (lambda s: s.evaluate("runs", canvas=-5), r"canvas=-5: expected model or a side in px from 8 to 512"),
        (lambda s: s.evaluate("runs", force=1), r"stnexp.evaluate(force=1): expected True or False"),
        (lambda s: s.train("configs/smoke.yaml", shard=5), r"stnexp.train(shard=5): expected a string or None"),
        (lambda s: s.train("configs/smoke.yaml", out=3), r"stnexp.train(out=3): expected a path or None"),
        (
            lambda s: s.train("configs/smoke.yaml", resume=True, force=True),
            r"resume=True and force=True exclude each other",
        ),
        (lambda s: s.load("x.pt", device="gpu"), r"stnexp.load(device='gpu'): expected auto | cpu | cuda | cuda:N"),
        (lambda s: s.load(None), r"stnexp.load(None): expected the path of a checkpoint"),
    ],
)
def test_an_argument_of_the_wrong_name_or_type_is_one_line_naming_it(tmp_path, call, message):
    """Before anything runs, in the API's own terms: the argument, not the command's flag."""
    import stnexp
    from stnexp.errors import UserError

    with pytest.raises(UserError) as e:
        call(stnexp)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_importing_stnexp_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, stnexp; assert 'torch' not in sys.modules; stnexp.load; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_repeatable_option_given_as_one_string_is_one_value(tiny_run, tmp_path):
    import stnexp

    result = stnexp.evaluate(tiny_run, variants="translated", out=tmp_path, device="cpu")
    assert {row["tested_on"] for row in result.rows} == {"translated"}
    assert result.files == tmp_path / "best-on-translated"


def test_test_set_draws_another_variant_on_the_models_canvas(tiny_run):
    import stnexp
    from stnexp.errors import UserError

    st = stnexp.load(tiny_run / "checkpoints" / "rts" / "st-cnn-s0-best.pt")
    rotated = stnexp.test_set(st, "rotated", canvas="model")  # rotated digits are 28x28; the model takes 42x42
    assert rotated.images.shape[1:] == (1, 42, 42) and st.model(rotated.images[:4]).shape == (4, 10)
    assert stnexp.test_set(st, "rotated").images.shape[1:] == (1, 28, 28)
    assert stnexp.test_set(st, "rotated", canvas=36).images.shape[1:] == (1, 36, 36)
    with pytest.raises(UserError, match=r"^canvas=4: "):
        stnexp.test_set(st, "rotated", canvas=4)
    with pytest.raises(UserError, match=r"stnexp.test_set\(canvas='big'\): expected a side in px"):
        stnexp.test_set(st, "rotated", canvas="big")


def test_a_model_names_its_canvas_for_digits_of_another_size_and_on_canvas_places_them(tiny_run):
    import torch

    import stnexp
    from stnexp import geometry, pose

    st = stnexp.load(tiny_run / "checkpoints" / "rts" / "st-cnn-s0-best.pt")
    digits = torch.rand(2, 1, 28, 28)
    with pytest.raises(
        ValueError, match=r"^this model takes 42 x 42 images .* not 28 x 28: stnexp.on_canvas\(images, 42\)"
    ):
        st.model(digits)
    placed = stnexp.on_canvas(digits, st.model.in_size)
    assert placed.shape == (2, 1, 42, 42) and torch.equal(placed[:, :, 7:35, 7:35], digits)
    assert torch.isclose(placed.sum(), digits.sum())  # zeros around them (the sums add in another order)
    assert st.model(placed).shape == (2, 10)
    # where a test set places a digit of no rotation, scale 1 and no shift: the same pixels
    theta = pose.distortion_theta(torch.zeros(2), torch.ones(2), torch.zeros(2, 2), 28, 42)
    grid = torch.nn.functional.affine_grid(theta, (2, 1, 42, 42), align_corners=geometry.ALIGN_CORNERS)
    assert torch.allclose(geometry.sample(digits, grid), placed, atol=1e-5)
    with pytest.raises(ValueError, match="do not fit on a 28 x 28 canvas"):
        stnexp.on_canvas(torch.rand(1, 1, 42, 42), 28)
