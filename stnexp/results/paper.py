"""The STN paper's Table 1 (test error %, docs/paper-protocol.md), its models and protocol as stnexp builds them,
and how a run's models and variants map onto it: a variant's column from its preset used as it is, a
model's row only when the model is the paper's (`model`) in that column; everything else keeps its name.
This module is the one definition of "the paper's model" and of the ways a run departs from the paper."""

from __future__ import annotations

from typing import Optional

from stnexp.config import Config, TrainConfig, TransformerConfig, VariantConfig
from stnexp.models.backbones import BACKBONES, BackboneConfig

COLUMNS = {"rotated": "R", "rts": "RTS", "projective": "P", "elastic": "E", "cluttered": "TC"}
ROWS = ["FCN", "CNN", "ST-FCN Aff", "ST-FCN Proj", "ST-FCN TPS", "ST-CNN Aff", "ST-CNN Proj", "ST-CNN TPS"]
_TRANSFORMS = {"affine": "Aff", "projective": "Proj", "tps": "TPS"}

# R, RTS, P, E from Table 1; TC from the text, which reports one ST-FCN and one ST-CNN without naming
# their transform (they are shown in the Aff rows here; docs/paper-protocol.md)
TABLE1: dict[str, dict[str, float]] = {
    "FCN": {"R": 2.1, "RTS": 5.2, "P": 3.1, "E": 3.2, "TC": 13.2},
    "CNN": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 1.4, "TC": 3.5},
    "ST-FCN Aff": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 2.7, "TC": 2.0},
    "ST-FCN Proj": {"R": 1.3, "RTS": 0.9, "P": 1.4, "E": 2.6},
    "ST-FCN TPS": {"R": 1.1, "RTS": 0.8, "P": 1.4, "E": 2.4},
    "ST-CNN Aff": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.2, "TC": 1.7},
    "ST-CNN Proj": {"R": 0.8, "RTS": 0.6, "P": 0.8, "E": 1.3},
    "ST-CNN TPS": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.1},
}

# The paper average-pools the transformer's output by 2 on RTS and TC (to 21x21 and 30x30). Our CNN's
# unpadded 9x9 and 7x7 convs cannot take 21x21, so on these columns the paper's model here samples at
# twice the canvas and pools by 2 back to it: the classifier sees the canvas, as the plain CNN does.
POOLED = ("RTS", "TC")

# The paper's protocol (docs/paper-protocol.md, Training): what `deviations` compares a run's recipe against.
PROTOCOL = TrainConfig(
    iterations=150000, batch_size=256, optimizer="sgd", lr=0.01, momentum=0.9, schedule="step", every=50000, gamma=0.1
)
SEEDS = 3
TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 50000, 10000, 10000
_RECIPE = (
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "every",
    "gamma",
    "warmup",
    "label_smoothing",
)

# Departures that stnexp's paper models make whatever the run: listed under `report --paper`.
WIDTHS_NOTE = (
    "Filter counts and hidden widths are those of reproductions (CNN conv 32/64, FCN 256/200; the paper's are "
    "not confirmed), so the models do not have about the same number of parameters, as the paper says its "
    "models have: the params column has ours."
)
POOL_NOTE = (
    "On RTS and TC the paper pools the transformer's output by 2 (to 21x21 and 30x30); here the transformer "
    "samples at twice the canvas and pools by 2 back to the canvas, because our CNN's unpadded convs cannot "
    "take 21x21."
)


def model(name: str, column: str, side: int) -> BackboneConfig:
    """The paper's model of row `name` in `column` on a canvas of `side` px, as stnexp builds it."""
    st, _, family = name.partition(" ")
    arch = next(a for a, b in BACKBONES.items() if b.paper == st.removeprefix("ST-"))
    stn = None
    if family:
        transform = {short: long for long, short in _TRANSFORMS.items()}[family]
        pool = 2 if column in POOLED else 1
        stn = TransformerConfig(
            transform=transform, at="input", out_size=side * pool, loc=BACKBONES[arch].loc, pool=pool
        )
    return BACKBONES[arch].schema(arch=arch, stn=stn)


def _as_built(m: BackboneConfig, side: int) -> dict:
    """A model's config with its defaults spelled out, less what is training rather than model (the
    localisation net's lr multiplier, a deviation of its own)."""
    d = m.model_dump(mode="json")
    if d.get("stn"):
        d["stn"]["loc"] = d["stn"]["loc"] or BACKBONES[m.arch].loc
        d["stn"]["out_size"] = d["stn"]["out_size"] or side
        d["stn"].pop("loc_lr_scale")
    return d


def candidate(cfg: Config, name: str) -> Optional[str]:
    """The paper's row that a model's arch and transform point to, whether or not it is the paper's model."""
    m = cfg.models[name]
    base = BACKBONES[m.arch].paper
    if base is None:
        return None
    if m.stn is None:
        return base
    return f"ST-{base} {_TRANSFORMS[m.stn.transform]}" if m.stn.transform in _TRANSFORMS else None


def row(cfg: Config, name: str, variant: str) -> Optional[str]:
    """The paper's row for model `name` of the run in `variant`'s column: only for the paper's model there
    (None for any other model, and in a variant that is not one of the paper's columns)."""
    col, want = column(cfg, variant), candidate(cfg, name)
    if col is None or want is None:
        return None
    side = cfg.variant(variant).canvas
    return want if _as_built(cfg.models[name], side) == _as_built(model(want, col, side), side) else None


def column(cfg: Config, variant: str) -> Optional[str]:
    """The paper's column for one of the run's variants: a preset used as it is, on the bundled MNIST
    (None otherwise: Fashion-MNIST or KMNIST under `data.root` get no paper number beside them)."""
    if cfg.data.root is not None:
        return None
    spec = cfg.variant(variant)
    if spec.preset not in COLUMNS:
        return None
    return COLUMNS[spec.preset] if spec == VariantConfig(preset=spec.preset) else None


def _recipe(t, per_epoch: int) -> list[str]:
    """The train.* keys of the recipe that differ from the paper's (`every` compared in iterations)."""
    out = []
    for key in _RECIPE:
        ours, theirs = getattr(t, key), getattr(PROTOCOL, key)
        if key == "momentum" and t.optimizer != "sgd":
            continue
        if key in ("every", "gamma") and t.schedule != "step" and PROTOCOL.schedule == "step":
            continue
        if key == "every" and t.iterations is None and ours is not None:
            ours = ours * per_epoch  # epochs, in iterations
        if ours != theirs:
            out.append(f"train.{key} {ours} (the paper: {theirs})")
    return out


def deviations(cfg: Config, trained: int | None = None, precision: str | None = None) -> list[str]:
    """How a run's recipe departs from the paper's protocol (the models' own differences show in their
    names: a model that is not the paper's gets no paper row). `trained`: the steps the run completed;
    `precision`: what the run resolved `train.amp` to (unknown before it runs: only `bf16` is listed)."""
    t, out = cfg.train, []
    per_epoch, steps = cfg.steps()
    if cfg.data.root is not None:
        out.append(f"data.root {cfg.data.root}: digits other than the bundled MNIST (no paper numbers beside them)")
    if steps != PROTOCOL.iterations:
        out.append(f"{steps:,} iterations (the paper: {PROTOCOL.iterations:,})")
    if trained is not None and trained < steps:
        out.append(f"interrupted after {trained:,} iterations")
    epochs = -(-steps // per_epoch)
    if epochs > 1 and t.eval_every >= epochs:
        out.append(
            f"train.eval_every {t.eval_every}: validated only after the last of {epochs} epochs, so the best "
            "checkpoint is the last (the paper's validation picks the best)"
        )
    if not cfg.data.resample_train:
        out.append(
            "data.resample_train false: each training digit keeps one distortion (the paper does not say; stnexp "
            "assumes fresh ones each epoch, docs/paper-protocol.md)"
        )
    out += _recipe(t, per_epoch)
    if (cfg.data.train_size, cfg.data.val_size) != (TRAIN_SIZE, VAL_SIZE):
        out.append(
            f"{cfg.data.train_size:,} training and {cfg.data.val_size:,} validation digits (the paper: {TRAIN_SIZE:,} "
            f"and {VAL_SIZE:,})"
        )
    if cfg.data.test_size < TEST_SIZE:
        out.append(f"tested on {cfg.data.test_size:,} digits (the paper: all {TEST_SIZE:,})")
    if len(cfg.seeds) < SEEDS:
        out.append(f"{len(cfg.seeds)} seed{'s' if len(cfg.seeds) > 1 else ''} (the paper: the mean of {SEEDS})")
    for name, m in cfg.models.items():
        if m.stn is not None and m.stn.loc_lr_scale != 1.0:
            out.append(
                f"{name}: localisation net at {m.stn.loc_lr_scale:g} x the lr (the paper reports no multiplier for "
                "MNIST)"
            )
    if (precision or t.amp) not in ("fp32", "off", "auto", "?"):
        out.append(f"trained in {precision or t.amp} mixed precision (the paper: fp32)")
    return out
