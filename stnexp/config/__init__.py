"""The experiment config: YAML -> typed, validated, frozen pydantic models, loaded once.

schema.py declares every key with its default and a description (the config reference in
docs/config.md and `stnexp config schema` are generated from it); loading.py reads YAML, applies --set
and validates; messages.py cuts the values an error repeats. This package may import the backbone
registry (stnexp.models.backbones and models.config_blocks, for the models' schemas and sizes) and errors;
nothing else of stnexp.
"""

from pydantic import ValidationError

from stnexp.config.loading import (
    MAX_BYTES,
    STN_KEYS,
    apply_sets,
    describe,
    load,
    parse_set,
    read_yaml,
    size_problems,
    validate,
    variants_from_sets,
)
from stnexp.config.messages import SHOWN, cut, first_line, shown
from stnexp.config.schema import (
    ARCHS,
    MAX_SEEDS,
    NAME,
    NAME_RULE,
    PRESETS,
    ClutterKeys,
    CNNConfig,
    Config,
    DataConfig,
    ElasticKeys,
    FCNConfig,
    ModelConfig,
    PoseKeys,
    ProjectiveKeys,
    STNCNNConfig,
    TrainConfig,
    VariantConfig,
    dump,
    schema,
)
from stnexp.models.config_blocks import MAX_SIDE, Channels, Strict, TransformerConfig

__all__ = [
    "ValidationError",
    "MAX_SIDE",
    "Channels",
    "Strict",
    "TransformerConfig",
    "MAX_BYTES",
    "STN_KEYS",
    "describe",
    "apply_sets",
    "load",
    "parse_set",
    "read_yaml",
    "size_problems",
    "validate",
    "variants_from_sets",
    "SHOWN",
    "cut",
    "first_line",
    "shown",
    "ARCHS",
    "MAX_SEEDS",
    "NAME",
    "NAME_RULE",
    "PRESETS",
    "CNNConfig",
    "Config",
    "DataConfig",
    "FCNConfig",
    "ModelConfig",
    "STNCNNConfig",
    "TrainConfig",
    "VariantConfig",
    "PoseKeys",
    "ProjectiveKeys",
    "ElasticKeys",
    "ClutterKeys",
    "dump",
    "schema",
]
