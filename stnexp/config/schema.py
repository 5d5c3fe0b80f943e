"""The config's schema: every key, declared here with its default and a description; the config reference
(docs/config.md) and `stnexp config schema` are generated from these declarations, so this is the one
place to document a key."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field, create_model, field_validator, model_validator

from stnexp.config.messages import cut

# re-exported: a variant's schema, by kind of distortion
from stnexp.config.variants import (  # noqa: F401
    PRESETS,
    ClutterKeys,
    ElasticKeys,
    PoseKeys,
    ProjectiveKeys,
    VariantConfig,
)
from stnexp.models import backbones

# re-exported: every block's schema by its config name (config.FCNConfig)
from stnexp.models.backbones import CNNConfig, FCNConfig  # noqa: F401
from stnexp.models.config_blocks import MAX_SIDE, Channels, Strict, TransformerConfig  # noqa: F401

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # at most 64: names become file and folder names
MAX_SEEDS = 1000  # a bound on what one config can ask for (each seed trains every model once)
NAME_RULE = "must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit)"


class DataConfig(Strict):
    root: Optional[Path] = Field(
        None,
        description="folder holding the four MNIST-format IDX files (gzip or raw); empty = the MNIST copy bundled in "
        "the package",
    )
    download: bool = Field(
        False, description="fetch MNIST into `root` through torchvision when the files are missing (needs the network)"
    )
    train_size: int = Field(50000, ge=1, description="training digits: the first `train_size` of the 60,000")
    val_size: int = Field(
        10000,
        ge=0,
        description="validation digits: the last `val_size` of the 60,000, distorted once; they pick the best "
        "checkpoint",
    )
    test_size: int = Field(
        10000,
        ge=1,
        description="test digits: the first `test_size` of the test files' (MNIST: 10,000, the paper's); fewer "
        "for a quick check, at a coarser error",
    )
    resample_train: bool = Field(
        True, description="draw new distortions of the training digits every epoch (false: once)"
    )
    variants: dict[str, Optional[VariantConfig]] = Field(
        default_factory=lambda: {"rts": VariantConfig(preset="rts")},
        description="distorted variants by name: `NAME: {preset, canvas, rotation, scale, translation, corner_jitter, "
        "elastic_jitter, elastic_grid, patches, patch_size}`",
    )

    @field_validator("variants", mode="before")
    @classmethod
    def _variants(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        if not v:
            raise ValueError("at least one variant is needed")
        out = {}
        for name, spec in v.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise ValueError(f"variant name {cut(repr(name))} {NAME_RULE}")
            spec = {} if spec is None else spec
            if isinstance(spec, dict) and "preset" not in spec and name in PRESETS:
                spec = {**spec, "preset": name}
            out[name] = spec
        return out

    @model_validator(mode="after")
    def _sizes(self) -> "DataConfig":
        if self.train_size + self.val_size > 60000 and self.root is None:
            raise ValueError(
                f"train_size + val_size must be at most 60000 (MNIST's training set), got {self.train_size} + "
                f"{self.val_size}"
            )
        return self


class _FlatCNN(Strict):
    def canonical(self) -> CNNConfig:
        """The same model as `arch: cnn` with an `stn` block."""
        stn = TransformerConfig(**{key: getattr(self, key) for key in FLAT_STN_KEYS})
        return CNNConfig(arch="cnn", channels=self.channels, norm=self.norm, dropout=self.dropout, stn=stn)


FLAT_STN_KEYS = ("transform", "out_size", "at", "loc_lr_scale")  # the `stn` keys 0.1 wrote beside `arch`
# The flat form of version 0.1, `arch: stn-cnn`: read as `arch: cnn` with an `stn` block. Its keys are the cnn's
# layer keys and those transformer keys, declared where they are (CNNConfig, TransformerConfig), not again.
STNCNNConfig = create_model(
    "STNCNNConfig",
    __base__=_FlatCNN,
    __doc__="The flat form of version 0.1, `arch: stn-cnn`: read as `arch: cnn` with an `stn` block.",
    arch=(
        Literal["stn-cnn"],
        Field(description="`stn-cnn`: the same as `arch: cnn` with `stn: {transform, at, out_size, loc_lr_scale}`"),
    ),
    **{
        key: (CNNConfig.model_fields[key].annotation, CNNConfig.model_fields[key])
        for key in ("channels", "norm", "dropout")
    },
    **{
        key: (TransformerConfig.model_fields[key].annotation, TransformerConfig.model_fields[key])
        for key in FLAT_STN_KEYS
    },
)


ARCHS = (*backbones.BACKBONES, "stn-cnn")  # `arch`: a backbone of the registry, or 0.1's flat form
ModelConfig = Annotated[
    Union[tuple(b.schema for b in backbones.BACKBONES.values()) + (STNCNNConfig,)], Field(discriminator="arch")
]


class TrainConfig(Strict):
    epochs: Optional[int] = Field(
        None, ge=1, description="passes over the training digits (default 10 when `iterations` is not set)"
    )
    iterations: Optional[int] = Field(None, ge=1, description="optimizer steps instead of `epochs` (the paper: 150000)")
    batch_size: int = Field(256, ge=1, description="images per step, the same batch for every model")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="sgd | adam | adamw")
    lr: float = Field(0.01, gt=0.0, description="base learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (ignored by adam/adamw)")
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        description="weight decay of conv and linear weights; biases, norms and the transformer's regressor do not "
        "decay (it would pull theta toward zero, a zoom into one point)",
    )
    schedule: Literal["constant", "step", "cosine", "onecycle"] = Field(
        "constant",
        description="learning-rate schedule: constant | step | cosine | onecycle (a rise from lr/25 over the "
        "first 30% of the steps, then cosine down to ~0; with `warmup`, the warm-up is the rise)",
    )
    every: Optional[int] = Field(
        None,
        ge=1,
        description="`step` schedule: multiply the lr by `gamma` every this many epochs (iterations when `iterations` "
        "is set)",
    )
    gamma: float = Field(0.1, gt=0.0, description="`step` schedule: the factor")
    warmup: int = Field(0, ge=0, description="linear warm-up length, in epochs (iterations when `iterations` is set)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the cross-entropy loss")
    amp: Literal["auto", "off", "bf16"] = Field(
        "auto",
        description="mixed precision: auto (bf16 on CUDA and on CPUs with bf16 instructions, `avx512_bf16` or AMX, "
        "else fp32) | off | bf16; theta, grid and sampling always run in fp32",
    )
    compile: bool = Field(
        False, description="compile the models with torch.compile (in place, checkpoint keys unchanged)"
    )
    cuda_graphs: bool = Field(
        True,
        description="on CUDA, capture each model's whole training step as a CUDA graph and replay it (models without "
        "dropout); the tiny nets are launch-bound",
    )
    fuse: Literal["auto", "off", "on"] = Field(
        "auto",
        description="on: each variant's seeds train in lockstep and every step of all their models is taken at once, "
        "on CUDA with graphs as one graph with a stream per model (the same numbers as off); auto: on where measured "
        "faster, on CUDA with graphs outside data-parallel mode (docs/performance.md) | off",
    )
    eval_every: int = Field(1, ge=1, description="validate every this many epochs (and after the last)")
    deterministic: bool = Field(
        False,
        description="ask torch for deterministic kernels (CPU runs are reproducible anyway; CUDA grid_sample backward "
        "is not)",
    )
    parallel: Literal["off", "jobs", "data"] = Field(
        "off",
        description="under torchrun: `jobs` deals the (variant, seed) groups out over the processes, `data` trains "
        "every group data-parallel (DistributedDataParallel, each process a shard of every batch); off: one process "
        "(docs/parallel.md)",
    )
    tensorboard: bool = Field(
        False,
        description="also write TensorBoard event files to `tb/` in the run directory: per model and epoch its loss, "
        "accuracies and lr, and the transformer's picture (needs `pip install 'stnexp[tensorboard]'`)",
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false: take it as the user wrote it
        return "off" if v is False else v

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel(cls, v: Any) -> Any:
        return "off" if v is False else v

    @field_validator("fuse", mode="before")
    @classmethod
    def _fuse(cls, v: Any) -> Any:
        return {False: "off", True: "on"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _length(self) -> "TrainConfig":
        if self.epochs is not None and self.iterations is not None:
            raise ValueError("set `epochs` or `iterations`, not both")
        if self.schedule == "step" and self.every is None:
            raise ValueError("schedule `step` needs `every`")
        return self


def _default_models() -> dict[str, Any]:
    return {"cnn": CNNConfig(arch="cnn"), "st-cnn": CNNConfig(arch="cnn", stn=TransformerConfig())}


class Config(Strict):
    name: str = Field(
        "run",
        description="experiment name (default: the config file's name without .yaml): runs go to "
        "`<out>/<name>/<timestamp>/`",
    )
    seeds: list[int] = Field(
        [0],
        min_length=1,
        max_length=MAX_SEEDS,
        description=f"seeds (at most {MAX_SEEDS:,}); each variant is trained once per seed, tables show mean +- std",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps (auto: cuda when available, else cpu)")
    out: Path = Field(Path("runs"), description="folder under which run directories are made")
    data: DataConfig = Field(default_factory=DataConfig, description="digits and their distortions")
    models: dict[str, ModelConfig] = Field(
        default_factory=_default_models, description="models trained side by side: `NAME: {arch, ..., stn}`"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="training recipe, shared by all models")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        twice = sorted(s for s, n in Counter(v).items() if n > 1)  # linear: every command loads configs
        if twice:
            raise ValueError(f"each seed once: {', '.join(map(str, twice))} given more than once")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{NAME_RULE}, got {cut(repr(v))}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+|mps", v):
            raise ValueError(f"expected auto | cpu | cuda | cuda:N | mps, got {v!r}")
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise ValueError("at least one model is needed")
            for name in v:
                if not isinstance(name, str) or not NAME.match(name):
                    raise ValueError(f"model name {cut(repr(name))} {NAME_RULE}")
        return v

    @field_validator("models", mode="after")
    @classmethod
    def _canonical_models(cls, v: dict) -> dict:
        # one form from here on: version 0.1's `arch: stn-cnn` becomes `arch: cnn` with an `stn` block
        return {name: m.canonical() if isinstance(m, STNCNNConfig) else m for name, m in v.items()}

    def variant(self, name: str) -> VariantConfig:
        return self.data.variants[name] or VariantConfig()

    def results_view(self) -> dict:
        """The part of the config that decides results (not where the run goes or which device runs it)."""
        d = self.model_dump(mode="json", exclude={"device", "out", "name"})
        for how in (
            "compile",
            "cuda_graphs",
            "fuse",
            "tensorboard",
            "parallel",
        ):  # how fast or what else is written, not what is computed
            d["train"].pop(how)
        return d

    def digest(self) -> str:
        """A hash of results_view(): checkpoints carry it, so resuming under another config is caught."""
        return hashlib.sha256(json.dumps(self.results_view(), sort_keys=True).encode()).hexdigest()[:16]

    def steps(self) -> tuple[int, int]:
        """How long training is, the one rule of it: (optimizer steps per epoch: whole batches of the
        training digits, at least one; total steps: train.iterations, or train.epochs epochs, 10 if neither)."""
        per_epoch = max(1, self.data.train_size // self.train.batch_size)
        return per_epoch, self.train.iterations or (self.train.epochs or 10) * per_epoch


# ---------------------------------------------------------------- loading


def schema() -> dict:
    return Config.model_json_schema()


def dump(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
