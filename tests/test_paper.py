"""Which of a run's models stand in the STN paper's rows (only the paper's model, as stnexp builds it, in
that column), and how a run's recipe departs from the paper's protocol."""

import pytest

from stnexp import config, models
from stnexp.results import paper

COLUMNS = {
    "R": ("rotated", 28),
    "RTS": ("rts", 42),
    "P": ("projective", 28),
    "E": ("elastic", 28),
    "TC": ("cluttered", 60),
}


def _cfg(model: dict, preset: str = "rts", **over) -> config.Config:
    return config.validate({"data": {"variants": {preset: {"preset": preset}}}, "models": {"m": model}, **over})


@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("name", paper.ROWS)
def test_the_papers_model_of_each_row_and_column_gets_that_row(name, column):
    preset, side = COLUMNS[column]
    m = paper.model(name, column, side).model_dump(mode="json", exclude_none=True)
    assert paper.row(_cfg(m, preset), "m", preset) == name


def test_the_papers_model_written_with_defaults_left_out_is_still_the_papers():
    assert paper.row(_cfg({"arch": "cnn", "stn": {"transform": "tps"}}, "rotated"), "m", "rotated") == "ST-CNN TPS"
    assert (
        paper.row(_cfg({"arch": "fcn", "stn": {"transform": "affine", "out_size": 84, "pool": 2}}), "m", "rts")
        == "ST-FCN Aff"
    )
    # the flat form of version 0.1
    assert paper.row(_cfg({"arch": "stn-cnn", "transform": "projective"}, "elastic"), "m", "elastic") == "ST-CNN Proj"


@pytest.mark.parametrize(
    "model, preset",
    [
        ({"arch": "cnn", "norm": "batch"}, "rts"),
        ({"arch": "cnn", "channels": [64, 128]}, "rts"),
        ({"arch": "cnn", "dropout": 0.5}, "rts"),
        ({"arch": "fcn", "hidden": [512, 512]}, "rotated"),
        ({"arch": "cnn", "norm": "batch", "stn": {"transform": "affine", "out_size": 84, "pool": 2}}, "rts"),
        ({"arch": "fcn", "stn": {"transform": "affine", "loc": "conv", "out_size": 84, "pool": 2}}, "rts"),
        ({"arch": "cnn", "stn": {"transform": "affine", "loc": "fc"}}, "rotated"),
        ({"arch": "cnn", "stn": {"transform": "affine"}}, "rts"),  # RTS: the paper pooled the transformer's output
        ({"arch": "cnn", "stn": {"transform": "affine", "out_size": 120}}, "cluttered"),  # sampled at twice, not pooled
        (
            {"arch": "cnn", "stn": {"transform": "affine", "pool": 2, "out_size": 56}},
            "rotated",
        ),  # R: the paper did not pool
        ({"arch": "cnn", "stn": {"transform": "affine", "at": "conv1"}}, "rotated"),
        ({"arch": "cnn", "stn": {"transform": "attention"}}, "rotated"),
    ],
)
def test_a_model_that_is_not_the_papers_gets_no_paper_row(model, preset):
    assert paper.row(_cfg(model, preset), "m", preset) is None


def test_a_variant_that_is_not_a_preset_as_it_is_has_no_column_and_its_models_no_row():
    cfg = config.validate(
        {"data": {"variants": {"rts": {"preset": "rts", "rotation": [-10, 10]}}}, "models": {"cnn": {"arch": "cnn"}}}
    )
    assert paper.column(cfg, "rts") is None and paper.row(cfg, "cnn", "rts") is None


@pytest.mark.parametrize("column", ["rts", "cluttered"])
def test_on_rts_and_tc_the_papers_transformer_pools_and_its_classifier_is_the_cnns(column):
    cfg = config.load(f"configs/paper/{column}.yaml")
    side = cfg.variant(column).canvas
    st = next(m for m in cfg.models.values() if m.arch == "cnn" and m.stn)
    assert (st.stn.pool, st.stn.out_size) == (2, 2 * side)
    built, plain = models.build(st, side), models.build(cfg.models["cnn"], side)
    assert models.n_params(built) - models.n_params(built.stn) == models.n_params(plain)


@pytest.mark.parametrize("column", ["rotated", "rts", "projective", "elastic", "cluttered"])
def test_a_shipped_paper_config_departs_from_the_protocol_in_nothing_but_the_shared_notes(column):
    assert paper.deviations(config.load(f"configs/paper/{column}.yaml")) == []


def test_deviations_name_each_departure_from_the_papers_protocol():
    cfg = config.load("configs/fast/rts.yaml")
    got = paper.deviations(cfg, trained=1000)
    steps = 30 * (50000 // 256)
    assert f"{steps:,} iterations (the paper: 150,000)" in got
    assert "interrupted after 1,000 iterations" in got
    assert "train.lr 0.1 (the paper: 0.01)" in got and "train.schedule onecycle (the paper: step)" in got
    assert "train.label_smoothing 0.1 (the paper: 0.0)" in got
    assert "st-cnn: localisation net at 0.3 x the lr (the paper reports no multiplier for MNIST)" in got
    short = config.load("configs/paper/rts.yaml", sets=["train.iterations=15000", "train.every=5000", "seeds=[0]"])
    assert paper.deviations(short) == [
        "15,000 iterations (the paper: 150,000)",
        "train.every 5000 (the paper: 50000)",
        "1 seed (the paper: the mean of 3)",
    ]


def test_deviations_name_another_dataset_fixed_distortions_no_validation_and_bf16(tmp_path):
    base = "configs/paper/rotated.yaml"
    other = config.load(base, sets=[f"data.root={tmp_path}"])
    assert paper.deviations(other)[0].startswith(f"data.root {tmp_path}: digits other than the bundled MNIST")
    # a run on another dataset gets no paper column, so no paper number beside it
    assert paper.column(other, "rotated") is None and paper.column(config.load(base), "rotated") == "R"
    assert any(
        d.startswith("data.resample_train false")
        for d in paper.deviations(config.load(base, sets=["data.resample_train=false"]))
    )
    late = config.load(base, sets=["train.iterations=", "train.epochs=4", "train.eval_every=4"])
    assert any(
        d.startswith("train.eval_every 4: validated only after the last of 4 epochs") for d in paper.deviations(late)
    )
    assert not any("eval_every" in d for d in paper.deviations(config.load(base, sets=["train.eval_every=3"])))
    # the precision the run resolved: bf16 is a departure, fp32 is not; before a run only `amp: bf16` is known
    assert "trained in bf16 mixed precision (the paper: fp32)" in paper.deviations(config.load(base), precision="bf16")
    assert paper.deviations(config.load(base), precision="fp32") == []
    assert "trained in bf16 mixed precision (the paper: fp32)" in paper.deviations(
        config.load(base, sets=["train.amp=bf16"])
    )


def test_the_protocol_is_cited_from_a_page_in_the_repository():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    citing = [root / "stnexp/results/paper.py", root / "stnexp/results/report.py", *root.glob("configs/paper/*.yaml")]
    for path in citing:
        text = path.read_text()
        assert "stn-paper.md" not in text and "docs/paper-protocol.md" in text, path
    page = (root / "docs/paper-protocol.md").read_text()
    # each item says whose it is; the two assumptions the report rests on are written down
    assert "[paper" in page and "[secondary" in page and "[stnexp assumes]" in page
    assert "21x21" in page and "anti-aliasing" in page and "Aff rows" in page


@pytest.mark.parametrize(
    "name, column, written",
    [
        ("CNN", "R", {"arch": "cnn"}),
        ("FCN", "TC", {"arch": "fcn"}),
        # the paper's localisation nets: conv for the CNN, fc for the FCN; pooled by 2 on RTS and TC only
        (
            "ST-CNN Aff",
            "RTS",
            {"arch": "cnn", "stn": {"transform": "affine", "loc": "conv", "out_size": 84, "pool": 2}},
        ),
        ("ST-CNN TPS", "E", {"arch": "cnn", "stn": {"transform": "tps", "loc": "conv", "out_size": 28, "pool": 1}}),
        ("ST-FCN Proj", "P", {"arch": "fcn", "stn": {"transform": "projective", "loc": "fc"}}),
        ("ST-FCN Aff", "TC", {"arch": "fcn", "stn": {"transform": "affine", "loc": "fc", "out_size": 120, "pool": 2}}),
    ],
)
def test_the_papers_model_is_the_one_written_out_from_the_protocol(name, column, written):
    # written by hand from docs/paper-protocol.md, not through paper.model(): a change to what
    # paper.model builds, or to what row() accepts, fails here
    preset, side = COLUMNS[column]
    assert paper.row(_cfg(written, preset), "m", preset) == name
    off = (
        {**written, "stn": {**written["stn"], "transform": "similarity"}}
        if "stn" in written
        else {**written, "norm": "batch"}
    )
    if off.get("arch") == "fcn" and "stn" not in written:
        off = {"arch": "fcn", "hidden": [128, 128]}
    assert paper.row(_cfg(off, preset), "m", preset) is None
