"""Checkpoint files: written atomically (atomic.write), read without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (torch.save), loaded with
torch.load(weights_only=True): a crafted pickle that would run code is refused before anything runs.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from stnexp.errors import UserError
from stnexp.store import atomic

FORMAT = "stnexp-checkpoint-1"


def save(path: Path, payload: dict) -> None:
    atomic.write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch's note on checking a sparse tensor: _malformed refuses it anyway
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only names the global it refused to import: a pickled object, not plain data
        why = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), None)
        if why:
            raise UserError(
                f"{path}: refused: holds Python objects that a checkpoint may not contain, nothing was run "
                f"({why[:160]})"
            ) from None
        raise UserError(f"{path}: truncated, corrupt or not a checkpoint (not a file torch.save wrote)") from None
    except Exception as e:  # zip, pickle and I/O errors of many types all mean the same here
        first = str(e).strip().split(". ")[0].splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: truncated, corrupt or not a checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a stnexp checkpoint")
    problem = _malformed(payload)
    if problem:
        raise UserError(f"{path}: malformed checkpoint: {problem}")
    return payload


_NUMBER = (int, float)
# what every field a checkpoint must hold is, as version 0.1 wrote them
FIELDS = {
    "kind": str,
    "variant": str,
    "model_name": str,
    "seed": int,
    "in_size": int,
    "config": dict,
    "config_digest": str,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "epoch": int,
    "step": int,
    "best_val": _NUMBER,
    "best_epoch": int,
    "diverged": (int, type(None)),
    "train_seconds": _NUMBER,
    "history": list,
    "rng": dict,
}


def _malformed(ck: dict) -> str | None:
    """What is wrong with a checkpoint's fields, before anything is built from them (None: nothing)."""
    from stnexp import config

    for key, kind in FIELDS.items():
        if key not in ck:
            return f"no {key!r}"
        if not isinstance(ck[key], kind) or (isinstance(ck[key], bool) and kind is not bool):
            return f"{key!r} is {type(ck[key]).__name__}, not what stnexp writes there"
    if ck["kind"] not in ("best", "last"):
        return f"'kind' is {ck['kind'][:20]!r}, not best or last"
    if ck.get("precision", "fp32") not in ("bf16", "fp32"):  # absent before version 0.2
        return f"'precision' is {str(ck['precision'])[:20]!r}, not bf16 or fp32"
    if not 1 <= ck["in_size"] <= config.MAX_SIDE:
        return f"'in_size' is {ck['in_size']}, outside 1-{config.MAX_SIDE}"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck["model"].items()):
        return "'model' is not a mapping of names to tensors"
    odd = next((k for k, v in ck["model"].items() if v.layout != torch.strided or v.is_meta), None)
    if odd is not None:  # sparse or meta: loads, then fails deep inside the first forward pass
        return f"'model' holds {odd[:40]!r} as a sparse or meta tensor, not weights"
    try:
        cfg = config.validate(ck["config"])
    except UserError as e:
        return f"its config is not valid ({str(e).splitlines()[0]})"
    if ck["model_name"] not in cfg.models:
        return f"its config has no model {ck['model_name'][:40]!r}"
    if ck["variant"] not in cfg.data.variants or cfg.variant(ck["variant"]).canvas != ck["in_size"]:
        return f"its config has no variant {ck['variant'][:40]!r} of canvas {ck['in_size']}"
    return None
