import pytest

from stnexp import config
from stnexp.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path, text, sets=()):
    with pytest.raises(UserError) as e:
        config.load(write(tmp_path, text), list(sets))
    return str(e.value).splitlines()


def test_defaults_fill_a_minimal_config(tmp_path):
    cfg = config.load(write(tmp_path, "seeds: [1]\n"))
    assert cfg.name == "c" and cfg.data.train_size == 50000 and cfg.train.batch_size == 256
    assert cfg.variant("rts").canvas == 42 and set(cfg.models) == {"cnn", "st-cnn"}


def test_a_variant_named_like_a_preset_uses_it_and_can_override_ranges(tmp_path):
    cfg = config.load(write(tmp_path, "data: {variants: {rotated: null, mine: {preset: rts, scale: [0.5, 1.0]}}}\n"))
    assert cfg.variant("rotated").rotation == (-90.0, 90.0)
    mine = cfg.variant("mine")
    assert mine.scale == (0.5, 1.0) and mine.rotation == (-45.0, 45.0) and mine.translation == "fit"


def test_config_is_frozen(tmp_path):
    cfg = config.load(write(tmp_path, "seeds: [1]\n"))
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.seeds = [2]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.train.lr = 1.0  # nested sections too
    assert cfg.seeds == [1] and cfg.train.lr == 0.01


def test_unknown_key_names_the_key_and_suggests(tmp_path):
    assert problems(tmp_path, "data: {trian_size: 5}\n") == [
        "data.trian_size: unknown key (did you mean 'train_size'?)"
    ]


def test_inverted_range_names_the_key_path(tmp_path):
    text = "data: {variants: {rts: {scale: [1.2, 0.7]}}}\n"
    assert problems(tmp_path, text) == [
        "data.variants.rts.scale: expected [min, max] of finite numbers with 0 < min <= max, got [1.2, 0.7]"
    ]


def test_wrong_type_and_out_of_range_name_their_keys(tmp_path):
    lines = problems(tmp_path, "train: {lr: fast, batch_size: 0}\n")
    assert any(line.startswith("train.lr: ") for line in lines)
    assert any(line.startswith("train.batch_size: input should be greater than or equal to 1") for line in lines)


def test_unknown_preset_arch_transform_optimizer_schedule(tmp_path):
    assert problems(tmp_path, "data: {variants: {a: {preset: rtz}}}")[0].startswith(
        "data.variants.a.preset: unknown preset 'rtz' (did you mean 'rts'?)"
    )
    assert problems(tmp_path, "models: {m: {arch: resnet}}")[0].startswith("models.m.arch: unknown arch 'resnet'")
    assert problems(tmp_path, "models: {m: {arch: stn-cnn, transform: polar}}")[0].startswith(
        "models.m.transform: expected 'affine'"
    )
    assert problems(tmp_path, "models: {m: {arch: cnn, stn: {transform: polar}}}")[0].startswith(
        "models.m.stn.transform: expected 'affine'"
    )
    assert problems(tmp_path, "train: {optimizer: lbfgs}")[0].startswith("train.optimizer: expected 'sgd'")
    assert problems(tmp_path, "train: {schedule: poly}")[0].startswith("train.schedule: expected 'constant'")


def test_empty_models_and_variants_are_refused(tmp_path):
    assert problems(tmp_path, "models: {}")[0] == "models: at least one model is needed"
    assert problems(tmp_path, "data: {variants: {}}")[0] == "data.variants: at least one variant is needed"


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    (line,) = problems(tmp_path, "name: x\ndata: {train_size: 5\n")
    assert "YAML syntax error at line 3, column 1" in line


def test_empty_file_non_mapping_and_missing_file(tmp_path):
    assert problems(tmp_path, "") == [f"{tmp_path / 'c.yaml'}: the config is empty"]
    assert "must be a mapping" in problems(tmp_path, "- a\n- b\n")[0]
    with pytest.raises(UserError, match="config file not found"):
        config.load(tmp_path / "none.yaml")


def test_every_problem_gets_its_own_line(tmp_path):
    assert len(problems(tmp_path, "nam: x\ntrain: {lr: -1}\n")) == 2


def test_set_overrides_any_key_with_a_yaml_value(tmp_path):
    p = write(tmp_path, "seeds: [1]\n")
    cfg = config.load(
        p, ["train.lr=0.5", "seeds=[3, 4]", "data.variants.rts.rotation=[-10, 10]", "models.c={arch: cnn}"]
    )
    assert cfg.train.lr == 0.5 and cfg.seeds == [3, 4] and cfg.variant("rts").rotation == (-10.0, 10.0)
    assert set(cfg.models) == {"c"}  # the models mapping is replaced, not merged with the defaults


def test_set_without_equals_or_with_unknown_path_is_refused(tmp_path):
    p = write(tmp_path, "seeds: [1]\n")
    with pytest.raises(UserError, match=r"--set train.lr: expected key.path=value"):
        config.load(p, ["train.lr"])
    with pytest.raises(UserError, match=r"train.lrr: unknown key \(did you mean 'lr'\?\)"):
        config.load(p, ["train.lrr=1"])


def test_epochs_and_iterations_exclude_each_other(tmp_path):
    assert problems(tmp_path, "train: {epochs: 1, iterations: 5}") == ["train: set `epochs` or `iterations`, not both"]


def test_schema_documents_every_key():
    s = config.schema()
    assert "TrainConfig" in s["$defs"]
    models = (config.CNNConfig, config.TransformerConfig, config.STNCNNConfig)
    for model in (config.Config, config.DataConfig, config.TrainConfig, config.VariantConfig, *models):
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"


def test_amp_off_survives_yaml_reading_off_as_false(tmp_path):
    assert config.load(write(tmp_path, "train: {amp: off}\n")).train.amp == "off"
    assert config.load(write(tmp_path, "seeds: [1]\n"), ["train.amp=off"]).train.amp == "off"


def test_the_flat_stn_cnn_form_of_0_1_means_a_cnn_with_an_stn_block(tmp_path):
    old = config.load(
        write(
            tmp_path,
            "models: {s: {arch: stn-cnn, transform: attention, at: conv1, out_size: 12, loc_lr_scale: 0.1, channels: "
            "[8, 16]}}\n",
        )
    )
    new = config.load(
        write(
            tmp_path,
            "models: {s: {arch: cnn, channels: [8, 16], stn: {transform: attention, at: conv1, out_size: 12, "
            "loc_lr_scale: 0.1}}}\n",
        )
    )
    assert old.models == new.models and old.digest() == new.digest()
    assert config.load(write(tmp_path, "models: {c: {arch: cnn}}\n")).models["c"].stn is None


def test_a_canvas_too_small_for_a_model_names_variant_model_and_smallest_size(tmp_path):
    text = (
        "data: {variants: {tiny: {canvas: 9}, rts: null}}\n"
        "models: {cnn: {arch: cnn}, st: {arch: cnn, stn: {at: conv1}}}\n"
    )
    assert problems(tmp_path, text) == [
        "data.variants.tiny: canvas 9 is too small for model cnn (it needs at least 24)",
        "data.variants.tiny: canvas 9 is too small for model st (it needs at least 24)",
    ]
    # a transformer at the input with a fixed out_size only needs room for its localisation net
    config.load(
        write(tmp_path, "data: {variants: {tiny: {canvas: 9}}}\nmodels: {st: {arch: cnn, stn: {out_size: 28}}}\n")
    )


def test_an_out_size_too_small_for_the_layers_behind_names_the_smallest(tmp_path):
    assert problems(tmp_path, "models: {st: {arch: stn-cnn, out_size: 20}}\n") == [
        "models.st: out_size 20 is too small for the layers behind the transformer (at least 24)"
    ]
    assert problems(tmp_path, "models: {st: {arch: cnn, stn: {at: conv1, out_size: 6}}}\n") == [
        "models.st: out_size 6 is too small for the layers behind the transformer (at least 8)"
    ]


@pytest.mark.parametrize(
    "text, line",
    [
        (
            "data: {variants: {rts: {rotation: [-.inf, .inf]}}}",
            "data.variants.rts.rotation: expected [min, max] of finite numbers with min <= max, got [-inf, inf]",
        ),
        (
            "data: {variants: {rts: {scale: [1, .inf]}}}",
            "data.variants.rts.scale: expected [min, max] of finite numbers with 0 < min <= max, got [1, inf]",
        ),
        (
            "data: {variants: {rts: {translation: .inf}}}",
            "data.variants.rts.translation: expected a finite shift >= 0 in px or 'fit', got inf",
        ),
        ("train: {lr: .inf}", "train.lr: input should be a finite number, got inf"),
        ("train: {lr: .nan}", "train.lr: input should be a finite number, got nan"),
    ],
)
def test_infinite_and_nan_numbers_are_refused(tmp_path, text, line):
    assert problems(tmp_path, text) == [line]


def test_numbers_in_exponent_form_are_numbers_in_files_and_in_set(tmp_path):
    cfg = config.load(
        write(tmp_path, "train: {lr: 1e-2, weight_decay: 5.0e-4}\ndata: {variants: {r: {rotation: [-1.0e1, 2e1]}}}\n")
    )
    assert cfg.train.lr == 0.01 and cfg.train.weight_decay == 0.0005 and cfg.variant("r").rotation == (-10.0, 20.0)
    cfg = config.load(
        write(tmp_path, "seeds: [1]\n"), ["train.lr=1.0e-3", "data.variants.rts.rotation=[-1.0e1, 1.0e1]"]
    )
    assert cfg.train.lr == 0.001 and cfg.variant("rts").rotation == (-10.0, 10.0)


def test_a_key_given_twice_names_the_key_and_its_line(tmp_path):
    assert problems(tmp_path, "name: x\ntrain: {epochs: 1}\ntrain: {lr: 0.5}\n") == [
        f"{tmp_path / 'c.yaml'}: line 3: key 'train' given twice in one mapping"
    ]
    with pytest.raises(UserError, match=r"--set models.c=\{arch: cnn, arch: cnn\}: line 1: key 'arch' given twice"):
        config.load(write(tmp_path, "seeds: [1]\n"), ["models.c={arch: cnn, arch: cnn}"])


def test_a_seed_given_twice_is_refused(tmp_path):
    assert problems(tmp_path, "seeds: [0, 1, 0]\n") == ["seeds: each seed once: 0 given more than once"]
    # 20,000 seeds, two of them twice: found in one pass (a count per seed took a minute at 40,000)
    many = list(range(20000)) + [7, 19999]
    assert problems(tmp_path, f"seeds: {many}\n") == [
        f"seeds: list should have at most {config.MAX_SEEDS} items after validation, not 20002, got [0, 1, 2, 3, 4, "
        "5, 6, 7, ...]"
    ]


def test_seeds_are_capped_and_checked_for_repeats_in_one_pass():
    assert config.Config.model_validate({"seeds": list(range(config.MAX_SEEDS))}).seeds[-1] == config.MAX_SEEDS - 1
    with pytest.raises(config.ValidationError, match="each seed once: 3, 999 given more than once"):
        config.Config.model_validate({"seeds": list(range(997)) + [999, 999, 3]})


def test_channel_counts_must_be_positive(tmp_path):
    assert problems(tmp_path, "models: {c: {arch: cnn, channels: [-1, 5]}}\n") == [
        "models.c.channels.0: input should be greater than or equal to 1, got -1"
    ]


def test_a_deeply_nested_config_is_refused_in_one_line(tmp_path):
    (line,) = problems(tmp_path, "seeds: " + "[" * 4000 + "]" * 4000 + "\n")
    assert line.endswith("nested too deeply to be a config")


def test_errors_repeat_at_most_a_few_hundred_characters_of_a_huge_value(tmp_path):
    laughs = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        laughs.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines = problems(tmp_path, "\n".join(laughs) + "\nseeds: *i\n")
    # nine seeds that are not numbers, nine anchors that are not keys: a line each, none of them long
    assert len(lines) == 18 and all(len(line) < 300 for line in lines)


def test_a_config_file_over_a_megabyte_is_refused_before_parsing(tmp_path):
    (line,) = problems(tmp_path, "# " + "x" * (1 << 20) + "\n")
    assert "a config may hold at most 1,048,576" in line


def test_a_binary_config_is_one_line(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"name: x\n\x00\x01\x02binary\n")
    with pytest.raises(UserError) as e:
        config.load(p)
    assert len(str(e.value).splitlines()) == 1 and "not readable as YAML" in str(e.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "data: {variants: {tc: {preset: cluttered, patch_size: 70, canvas: 60}}}\n",
            "data.variants.tc.patch_size: input should be less than or equal to 28, got 70",
        ),
        (
            "data: {variants: {tc: {preset: cluttered, patch_size: 20, canvas: 16}}}\n",
            "data.variants.tc.patch_size: 20 is larger than the canvas (16)",
        ),
        (
            "data: {variants: {e: {preset: elastic, elastic_grid: 1}}}\n",
            "data.variants.e.elastic_grid: input should be greater than or equal to 2, got 1",
        ),
        (
            "data: {variants: {p: {preset: projective, corner_jitter: -1}}}\n",
            "data.variants.p.corner_jitter: input should be greater than or equal to 0, got -1",
        ),
        (
            "data: {variants: {p: {preset: projectiv}}}\n",
            "data.variants.p.preset: unknown preset 'projectiv' (did you mean 'projective'?) (choose from plain, "
            "rotated, rts, translated, scaled, projective, elastic, cluttered)",
        ),
        (
            "models: {f: {arch: fcn, stn: {at: conv1}}}\n",
            "models.f.stn.at: an fcn has no conv1, so its transformer can only be at `input`, got 'conv1'",
        ),
        (
            "models: {f: {arch: fcn, hidden: [0, 10]}}\n",
            "models.f.hidden.0: input should be greater than or equal to 1, got 0",
        ),
        (
            "models: {c: {arch: cnn, stn: {transform: spline}}}\n",
            "models.c.stn.transform: expected 'affine', 'attention', 'similarity', 'translation', 'rotation', "
            "'projective' or 'tps', got 'spline'",
        ),
    ],
)
def test_bad_variant_kinds_and_models_name_the_key(tmp_path, text, expected):
    assert problems(tmp_path, text) == [expected]


def test_pooling_after_the_transformer_is_checked_against_the_layers_behind(tmp_path):
    # 42 px pooled by 2 leaves 21, too small for the CNN's valid convs (24 at least); out_size 48 gives them 24
    lines = problems(tmp_path, "data: {variants: {rts: null}}\nmodels: {s: {arch: cnn, stn: {pool: 2}}}\n")
    assert lines == ["data.variants.rts: canvas 42 is too small for model s (it needs at least 48)"]
    cfg = config.load(
        write(tmp_path, "data: {variants: {rts: null}}\nmodels: {s: {arch: cnn, stn: {pool: 2, out_size: 48}}}\n")
    )
    assert cfg.models["s"].stn.pool == 2


def test_yaml_merge_keys_merge_and_a_key_beside_them_overrides_the_merged_one(tmp_path):
    text = (
        "models:\n  cnn: &c {arch: cnn, channels: [16, 32]}\n  st-cnn:\n    <<: *c\n    stn: {transform: affine}\n"
        "  wide:\n    <<: *c\n    channels: [64, 128]\n"
    )
    cfg = config.load(write(tmp_path, text))
    assert cfg.models["st-cnn"].channels == (16, 32) and cfg.models["st-cnn"].stn.transform == "affine"
    assert cfg.models["wide"].channels == (64, 128) and cfg.models["wide"].stn is None
    # a key given twice beside a merge is still an error
    twice = "models:\n  cnn: &c {arch: cnn}\n  b:\n    <<: *c\n    norm: batch\n    norm: none\n"
    assert problems(tmp_path, twice) == [f"{tmp_path / 'c.yaml'}: line 6: key 'norm' given twice in one mapping"]


@pytest.mark.parametrize("where", ["models.{n}={{arch: cnn}}", "data.variants.{n}={{preset: rts}}", "name={n}"])
def test_a_name_longer_than_64_characters_is_refused_before_anything_runs_and_shown_cut(tmp_path, where):
    config.load(write(tmp_path, "seeds: [1]\n"), [where.format(n="a" * 64)])  # 64 is fine
    with pytest.raises(UserError) as e:
        config.load(write(tmp_path, "seeds: [1]\n"), [where.format(n="a" * 500)])
    assert config.NAME_RULE in str(e.value) and "a" * 201 not in str(e.value) and len(str(e.value)) < 400


def test_an_error_of_a_huge_input_stays_a_few_lines_and_says_how_many_more(tmp_path):
    from typer.testing import CliRunner

    from stnexp.cli import MAX_ERROR_LINES, app

    path = write(tmp_path, "train:\n" + "".join(f"  bad{i}: {'x' * 3000}\n" for i in range(300)))
    r = CliRunner().invoke(app, ["config", "show", str(path)])
    lines = r.output.splitlines()
    assert r.exit_code == 2 and len(lines) == MAX_ERROR_LINES + 1 and lines[-1] == "error: ... and 280 more"
    assert all(len(line) <= 510 for line in lines)
