"""Scoring: accuracy of a model on a test set (large batches, inference mode), and re-scoring the
checkpoints of a run on its own or other variants, or on an external IDX test set."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

BATCH = 1000


@torch.inference_mode()
def correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None, batch: int = BATCH) -> int:
    """Number of correctly classified images; one host sync at the end."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.long, device=images.device)
    ctx = torch.autocast(images.device.type, dtype=dtype) if dtype is not None else nullcontext()
    with ctx:
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            if x.dtype == torch.uint8:  # external sets arrive as uint8 levels
                x = x.float().div_(255.0)
            total += (model(x).argmax(1) == labels[i : i + batch]).sum()
    model.train(was_training)
    return int(total)


def score_run(source: Path, variants: list[str], images: Path | None, labels: Path | None, which: list[str], device: str | None, log) -> list[dict]:
    """Re-score the checkpoints of a run directory (or one checkpoint) and return long-form rows.
    Without `device`, scoring runs where the run trained (its config's device), so it reproduces the
    run's own numbers exactly; where that device is missing, on the best one here."""
    from stnexp import checkpoints, config, models, runs, variants as V
    from stnexp.device import autocast_dtype, keep_freed_memory, resolve
    from stnexp.errors import UserError

    found = runs.find_checkpoints(source, which)
    if not found:
        raise UserError(f"{source}: no checkpoints found")
    if device is None:
        try:
            device = resolve(checkpoints.load(found[0])["config"]["device"])
        except UserError:
            device = resolve("auto")
    else:
        device = resolve(device)
    keep_freed_memory()
    external = None
    if images is not None or labels is not None:
        if images is None or labels is None:
            raise UserError("--images and --labels go together")
        external = read_external(images, labels, device)
    digits_cache: dict = {}
    sets: dict = {}
    rows = []
    for path in found:
        ck = checkpoints.load(path)
        cfg = config.validate(ck["config"])
        model = runs.model_from_checkpoint(ck, path, device)
        dtype = autocast_dtype(cfg.train.amp, device)
        base = dict(variant=ck["variant"], model=ck["model_name"], seed=ck["seed"], checkpoint=ck["kind"], params=models.n_params(model))
        if external is not None:
            if external[0].shape[-1] != ck["in_size"]:
                raise UserError(f"{images}: images are {external[0].shape[-1]}x{external[0].shape[-1]} but {path.name} takes {ck['in_size']}x{ck['in_size']}")
            n_ok = correct(model, external[0], external[1], dtype)
            rows.append(_row(base, str(images), n_ok, len(external[1])))
            continue
        for test_name in variants or [ck["variant"]]:
            if test_name in cfg.data.variants:
                spec = cfg.variant(test_name)
            elif test_name in config.PRESETS:
                spec = config.VariantConfig(preset=test_name)
            else:
                raise UserError(f"--variant {test_name}: not a variant of the run ({', '.join(cfg.data.variants)}) nor a preset ({', '.join(config.PRESETS)})")
            if spec.canvas != ck["in_size"]:
                raise UserError(f"--variant {test_name}: canvas is {spec.canvas}x{spec.canvas} but {path.name} takes {ck['in_size']}x{ck['in_size']}")
            key = (str(cfg.data.root), test_name, ck["seed"], spec)
            if key not in sets:
                dkey = str(cfg.data.root)
                if dkey not in digits_cache:
                    digits_cache[dkey] = V.split(cfg.data, device)
                d = digits_cache[dkey]
                sets[key] = V.fixed(d.test_x, d.test_y, spec, ck["seed"], test_name, "test")
            test = sets[key]
            n_ok = correct(model, test.images, test.labels, dtype)
            rows.append(_row(base, test_name, n_ok, len(test.labels)))
        log.info(f"scored {path}")
    return rows


def read_external(images: Path, labels: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An external test set: uint8 images N x H x W (square) and N labels, as IDX files."""
    from stnexp import idx
    from stnexp.errors import UserError

    x, y = idx.read(images), idx.read(labels)
    if x.ndim != 3 or x.dtype.name != "uint8":
        raise UserError(f"{images}: expected uint8 images N x H x W, got {x.dtype} {'x'.join(map(str, x.shape))}")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{labels}: {len(y)} labels for {len(x)} images in {images}")
    if x.shape[1] != x.shape[2]:
        raise UserError(f"{images}: images are {x.shape[1]}x{x.shape[2]}; stnexp models take square images")
    return torch.from_numpy(x.copy()).unsqueeze(1).to(device), torch.from_numpy(y.astype("int64")).to(device)


def _row(base: dict, tested_on: str, n_ok: int, n: int) -> dict:
    acc = n_ok / n
    return {**base, "tested_on": tested_on, "accuracy": acc, "error": 100.0 * (1 - acc), "n_test": n}
