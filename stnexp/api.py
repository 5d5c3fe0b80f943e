"""The Python API, for notebooks and scripts: what `stnexp train` and `stnexp eval` do, and a trained model
rebuilt from its checkpoint with the test digits it was scored on. docs/python-api.md has a worked
example. `import stnexp` stays light: these load torch when first called."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch

from stnexp.config import Config
from stnexp.results.scoring import TestSet


class Loaded(NamedTuple):
    """A trained model rebuilt from its checkpoint: the module (in eval mode, on `device`), the config of
    the run that trained it, its name, variant and seed, and the checkpoint's whole payload (epoch, step,
    history, precision, kind). `autocast()` runs it at the precision it trained at."""

    model: torch.nn.Module
    config: Config
    name: str
    variant: str
    seed: int
    checkpoint: dict

    def autocast(self):
        """A context to run the model in at the precision it trained at (`checkpoint["precision"]`, bf16 or
        fp32): outside it the model runs in fp32 whatever it trained in, and some digits classify
        differently. `with st.autocast(): logits = st.model(images)`."""
        from stnexp.device import running_at

        return running_at(self.checkpoint["precision"], next(self.model.parameters()).device)


def on_canvas(images: torch.Tensor, size: int) -> torch.Tensor:
    """Digits (N x 1 x h x w, h and w at most `size`) in the middle of a size x size canvas of zeros, as an
    undistorted test digit is placed: what a model trained on a larger canvas (RTS: 42, TC: 60) takes.
    `st.model(stnexp.on_canvas(digits, st.model.in_size))`."""
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"images of {h} x {w} do not fit on a {size} x {size} canvas")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(images, (left, size - w - left, top, size - h - top))


class Evaluation(NamedTuple):
    """An evaluation as `stnexp eval` writes it: its Markdown table, its rows (as in NAME.json) and the
    stem of its files (NAME.md, .csv, .json beside it)."""

    markdown: str
    rows: list[dict]
    files: Path


def load(checkpoint: str | Path, device: str = "cpu") -> Loaded:
    """The model a checkpoint holds, with its weights, and the config that made it. Any checkpoint stnexp
    wrote since version 0.1 loads: they are plain `weights_only` dicts."""
    from stnexp.device import resolve
    from stnexp.errors import UserError
    from stnexp.results.scoring import load_model, trained_precision

    try:
        Config._device(device if isinstance(device, str) else "")  # the config key's own rule
    except ValueError:
        raise UserError(f"stnexp.load(device={device!r}): expected auto | cpu | cuda | cuda:N | mps") from None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise UserError(f"stnexp.load({checkpoint!r}): expected the path of a checkpoint")
    where = resolve(device)
    ck, cfg, model = load_model(Path(checkpoint), where)
    model.eval()
    # a checkpoint older than 0.2 names no precision: the one scoring infers for it
    ck = {**ck, "precision": trained_precision(ck, cfg, Path(checkpoint), where)}
    return Loaded(model, cfg, ck["model_name"], ck["variant"], ck["seed"], ck)


def test_set(loaded: Loaded, variant: str | None = None, canvas: int | str | None = None) -> TestSet:
    """The test digits (`data.test_size` of them) of the model's variant (or of `variant`: the run's, or a
    preset) for its seed, distorted exactly as `train` scored it: images N x 1 x H x W in [0, 1], labels, and
    each digit's true pose (`params`). `canvas`: a side in px, or "model" for the model's own (as `eval
    --canvas`), to draw the variant's digits on another canvas than its own."""
    from stnexp.errors import UserError
    from stnexp.results.scoring import TestSets

    if canvas == "model":
        canvas = loaded.model.in_size
    if canvas is not None and (isinstance(canvas, bool) or not isinstance(canvas, int)):
        raise UserError(f'stnexp.test_set(canvas={canvas!r}): expected a side in px, "model" or None')
    device = next(loaded.model.parameters()).device
    try:
        return TestSets(device).get(loaded.config, variant or loaded.variant, loaded.seed, canvas)
    except UserError as e:
        raise _in_api_terms(e) from None


# what each type in a request's field annotation accepts from a caller, and how a message says it
_ACCEPTS = {
    "Path": ((str, os.PathLike), "a path"),
    "str": ((str,), "a string"),
    "int": ((int,), "an integer"),
    "bool": ((bool,), "True or False"),
    "None": ((type(None),), "None"),
}


def _checked(fn: str, request: type, first: str, options: dict) -> dict:
    """`options` of stnexp.train / stnexp.evaluate as the fields of their request, each of the type its
    flag takes: a wrong name or type is a UserError naming the argument, not an error from deep inside.
    A repeatable flag's values may be one string (one value, as one --set is) or a list of strings."""
    from stnexp.errors import UserError

    fields = {f.name: str(f.type) for f in dataclasses.fields(request) if f.name not in (first, "command")}
    out = {}
    for key, value in options.items():
        if key not in fields:
            raise UserError(f"stnexp.{fn}: no argument {key!r} (it takes {', '.join(fields)})")
        kind = fields[key]
        if kind.startswith("tuple[str"):
            value = (value,) if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise UserError(f"stnexp.{fn}({key}={value!r}): expected a string or a list of strings")
            out[key] = tuple(value)
            continue
        accepted = [_ACCEPTS[t.strip()] for t in kind.split("|")]
        if not any(isinstance(value, types) for types, _ in accepted) or (isinstance(value, bool) and kind != "bool"):
            said = " or ".join(what for _, what in accepted)
            raise UserError(f"stnexp.{fn}({key}={value!r}): expected {said}")
        out[key] = Path(value) if isinstance(value, os.PathLike) else value
    return out


def _in_api_terms(e: Exception) -> Exception:
    """A command's one-line error as the API's caller knows the arguments: `--canvas -5: ...` reads
    `canvas=-5: ...`, and any other flag is named as its argument."""
    from stnexp.errors import UserError

    names = {"set": "sets", "variant": "variants", "force": "force=True", "resume": "resume=True"}
    flag_value = r"^--([a-z]+) (?!(?:and|or|with|without|needs|is|must) )"  # `--canvas -5: ...`, not `--x and --y`
    text = re.sub(flag_value, lambda m: f"{names.get(m[1], m[1]).split('=')[0]}=", str(e))
    return UserError(re.sub(r"--([a-z]+)\b", lambda m: names.get(m[1], m[1]), text))


def train(config: str | Path, **options) -> Path:
    """`stnexp train CONFIG`: `options` are the fields of requests.TrainRequest, each the flag of its name
    (docs/commands.md). Returns the run directory (with `sweep`, the sweep's folder); raises
    training.loop.Interrupted after Ctrl-C and errors.UserError on bad input."""
    from stnexp.errors import UserError
    from stnexp.requests import TrainRequest
    from stnexp.training import command as train_command

    options = _checked("train", TrainRequest, "config", options)
    try:
        return train_command.start(TrainRequest(Path(config), **options, command=f"stnexp.train({str(config)!r})"))
    except UserError as e:
        raise _in_api_terms(e) from None


def evaluate(source: str | Path, **options) -> Evaluation:
    """`stnexp eval SOURCE`: `options` are the fields of requests.EvalRequest, each the flag of its name
    (docs/commands.md)."""
    from stnexp.errors import UserError
    from stnexp.requests import EvalRequest
    from stnexp.results import evaluation
    from stnexp.store import logs

    options = _checked("evaluate", EvalRequest, "source", options)
    try:
        markdown, stem = evaluation.evaluate(EvalRequest(Path(source), **options), logs.logger())
    except UserError as e:
        raise _in_api_terms(e) from None
    return Evaluation(markdown, json.loads(stem.with_name(stem.name + ".json").read_text()), stem)
