"""The STN paper's Table 1 (test error %, stn-paper.md) and how a run's models and variants map onto it:
a model's row comes from its architecture and transform, a variant's column from its preset."""

from __future__ import annotations

from typing import Optional

from stnexp.config import Config

COLUMNS = {"rotated": "R", "rts": "RTS", "projective": "P", "elastic": "E", "cluttered": "TC"}
ROWS = ["FCN", "CNN", "ST-FCN Aff", "ST-FCN Proj", "ST-FCN TPS", "ST-CNN Aff", "ST-CNN Proj", "ST-CNN TPS"]
_TRANSFORMS = {"affine": "Aff", "projective": "Proj", "tps": "TPS"}

# R, RTS, P, E from Table 1; TC from the text, where ST-FCN and ST-CNN are affine
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


def row(cfg: Config, model: str) -> Optional[str]:
    """The paper's row for one of the run's models (None for a model the paper has no row for)."""
    m = cfg.models[model]
    base = m.arch.upper()
    if m.stn is None:
        return base
    if m.stn.at != "input" or m.stn.transform not in _TRANSFORMS:
        return None
    return f"ST-{base} {_TRANSFORMS[m.stn.transform]}"


def column(cfg: Config, variant: str) -> Optional[str]:
    """The paper's column for one of the run's variants: a preset used as it is (None otherwise)."""
    spec = cfg.variant(variant)
    if spec.preset not in COLUMNS:
        return None
    from stnexp.config import VariantConfig

    return COLUMNS[spec.preset] if spec == VariantConfig(preset=spec.preset) else None
