"""Print the config reference (every key, its default and meaning) as Markdown, from the pydantic models.

docs/config.md's reference table is this script's output; tests/test_readme.py keeps them in step.
usage: python scripts/config_reference.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from stnexp import config  # noqa: E402
from stnexp.models.backbones import BACKBONES  # noqa: E402

SECTIONS = [
    ("", config.Config, "top level"),
    ("data.", config.DataConfig, "data"),
    ("data.variants.NAME.", config.VariantConfig, "a variant"),
    *(("models.NAME.", b.schema, f"a model, `arch: {arch}`") for arch, b in BACKBONES.items()),
    ("models.NAME.stn.", config.TransformerConfig, "a model's spatial transformer, `stn:`"),
    (
        "models.NAME.",
        config.STNCNNConfig,
        "a model, `arch: stn-cnn`: the flat form of version 0.1, read as `arch: cnn` with an `stn` block (also takes "
        "channels, norm, dropout)",
    ),
    ("train.", config.TrainConfig, "training"),
]
SKIP_IN_STN = {"channels", "norm", "dropout"}


def default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, dict):
            return "see below" if not value else ", ".join(value)
        return "see below" if isinstance(value, BaseModel) else json.dumps(value)
    if field.default is PydanticUndefined:
        return "(required)"
    value = field.default
    if value is None:
        return "empty"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def reference() -> str:
    lines = []
    for prefix, model, title in SECTIONS:
        lines += [f"*{title}*", "", "| key | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            if model is config.STNCNNConfig and name in SKIP_IN_STN:
                continue
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name}` | {default(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")
