"""Scoring: the accuracy of a model on a test set (large batches, inference mode), the test sets as `train`
made them, and the one path that loads checkpoints back from disk and scores them, used by `train` (its
results tables) and `eval` (own variants, other variants, external IDX sets) alike."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from torch import nn

from stnexp import config as C
from stnexp import data, models, pose
from stnexp.device import channels_last, cpu_has_amx, dtype_of
from stnexp.errors import UserError
from stnexp.models.backbones import Model
from stnexp.store import artifacts, checkpoints, files

BATCH = 1000


@torch.inference_mode()
def right(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None, batch: int = BATCH
) -> torch.Tensor:
    """Per image, whether the model classifies it correctly (bool, on the CPU); one host sync at the end."""
    was_training = model.training
    model.eval()
    ok = torch.empty(len(images), dtype=torch.bool, device=images.device)
    ctx = torch.autocast(images.device.type, dtype=dtype) if dtype is not None else nullcontext()
    with ctx:
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            if x.dtype == torch.uint8:  # external sets arrive as uint8 levels
                x = x.float().div_(255.0)
            ok[i : i + batch] = model(x).argmax(1) == labels[i : i + batch]
    model.train(was_training)
    return ok.cpu()


def correct(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None, batch: int = BATCH
) -> int:
    """Number of correctly classified images."""
    return int(right(model, images, labels, dtype, batch).sum())


class TestSet(NamedTuple):
    """A named set to score on: images N x 1 x H x W (float in [0, 1] or uint8 levels) and labels; a
    variant's test set, or an external one (then `name` is its images file)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    external: bool = False
    params: dict | None = None  # a variant's true distortion of each digit


class TestSets:
    """Test sets made once per process: the test digits of a data config (`data.test_size`), distorted by a variant
    (the run's own or a preset) from the seed's test stream, exactly as `train` made them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.digits: dict[str, data.Split] = {}  # by data.root
        self.sets: dict = {}

    def know(self, data_cfg: C.DataConfig, split: data.Split) -> None:
        """Reuse digits already on the device (a training run's) instead of loading them again."""
        self.digits[str(data_cfg.root)] = split

    def get(
        self, cfg: C.Config, variant: str, seed: int, canvas: int | None = None, extra: dict | None = None
    ) -> TestSet:
        """The test set of `variant` (ad-hoc from `extra`, the run's, or a preset) for `seed`, rendered on a
        canvas of side `canvas` when given (the digit placed as the variant says, on that canvas)."""
        spec = _spec(cfg, variant, canvas, extra or {})
        key = (str(cfg.data.root), variant, seed, spec)
        if key not in self.sets:
            root = str(cfg.data.root)
            if root not in self.digits:
                self.digits[root] = data.split(cfg.data, self.device)
            s = data.fixed(self.digits[root].test, spec, seed, variant, "test")
            self.sets[key] = TestSet(variant, s.images, s.labels, params=s.params)
        return self.sets[key]

    def swept(
        self, cfg: C.Config, variant: str, seed: int, key: str, value: float, canvas: int | None = None
    ) -> TestSet:
        """The test set of `variant` for `seed` with one part of the pose fixed for every digit, by its
        sweep key (pose.py: `rotation` in degrees, `scale`, or `shift`: the digit's centre moved this many
        px to the right of the canvas's centre); everything else each digit drew stays as in the test set."""
        # not cached: a sweep of many values holds one rendered set at a time (10k digits on 42x42 are 70 MB)
        base = self.get(cfg, variant, seed, canvas)
        spec = _spec(cfg, variant, canvas, {})
        params = dict(base.params)
        part = pose.BY_SWEEP[key]
        params[part.name] = part.fix(value, params[part.name])
        images = data.render_all(self.digits[str(cfg.data.root)].test, params, spec)
        return TestSet(f"{key}={value:g}", images, base.labels, params=params)


def variant_canvas(cfg: C.Config, variant: str, extra: dict | None = None) -> int:
    """The side of the canvas a variant (ad-hoc, the run's, or a preset) draws its digits on."""
    return _spec(cfg, variant, None, extra or {}).canvas


def _spec(cfg: C.Config, variant: str, canvas: int | None, extra: dict) -> C.VariantConfig:
    """A variant by name (ad-hoc from `extra`, the run's, or a preset), on `canvas` when given."""
    if variant in extra:
        spec = extra[variant]
    elif variant in cfg.data.variants:
        spec = cfg.variant(variant)
    elif variant in C.PRESETS:
        spec = C.VariantConfig(preset=variant)
    else:
        known = ", ".join(list(extra) + list(cfg.data.variants))
        raise UserError(
            f"--variant {variant}: not a variant of the run or --set ({known}) nor a preset ({', '.join(C.PRESETS)})"
        )
    if canvas is not None and canvas != spec.canvas:
        try:
            spec = C.VariantConfig.model_validate({**spec.model_dump(), "canvas": canvas})
        except C.ValidationError as e:
            raise UserError(
                f"--canvas {canvas}: variant {variant}: " + "; ".join(C.describe(err) for err in e.errors())
            ) from None
    return spec


def load_model(path: Path, device: torch.device) -> tuple[dict, C.Config, Model]:
    """A checkpoint, its config and the model it describes with its weights; a mismatch says what differs."""
    ck = checkpoints.load(path)
    cfg = C.validate(ck["config"])  # checked already by checkpoints.load
    model = models.build(cfg.models[ck["model_name"]], ck["in_size"])
    problem = models.mismatch(model, ck["model"])
    if problem:
        raise UserError(f"{path}: weights do not fit the model its config describes ({problem})")
    model.load_state_dict(ck["model"])
    if channels_last(device):  # the same memory layout as in training, so scores match it exactly
        model = model.to(memory_format=torch.channels_last)
    return ck, cfg, model.to(device)


class Scored(NamedTuple):
    """One checkpoint scored: a row, the digits it got right and the set, for each test set it was scored on."""

    path: Path
    checkpoint: dict
    model: Model
    rows: list[dict]
    right: list[torch.Tensor]  # per row: which test digits the model got right
    tests: list[TestSet | None]  # per row: the set it was scored on, where it is the checkpoint's own variant


Key = tuple[str, int, str]  # (variant, seed, model): one trained model


@dataclass(frozen=True)
class Scores:
    """What one pass over a run's checkpoints (or an evaluation's) found, from which every output is made:
    the rows of every checkpoint and set, and for the best checkpoint of each model on its own variant's
    test set the digits it got right, its error, that set (its digits and their true pose) and, for a
    model with a transformer, the model and the precision it was scored at."""

    rows: list[dict]
    right: dict[Key, torch.Tensor]
    errors: dict[Key, float]
    tests: dict[tuple[str, int], TestSet]  # by (variant, seed)
    transformers: dict[Key, tuple[Model, str]]

    @property
    def poses(self) -> dict[tuple[str, int], dict]:
        """Each own test set's true distortion of each digit, by (variant, seed)."""
        return {key: test.params for key, test in self.tests.items()}


def record(scored: Iterable[Scored]) -> Scores:
    """The record of checkpoints as score() yields them."""
    rows, right, errors, tests, transformers = [], {}, {}, {}, {}
    for s in scored:
        rows += s.rows
        ck = s.checkpoint
        for row, got, test in zip(s.rows, s.right, s.tests):
            if ck["kind"] != "best" or test is None or test.params is None:
                continue
            key = (ck["variant"], ck["seed"], ck["model_name"])
            right[key], errors[key], tests[key[:2]] = got, row["error"], test
            if s.model.stn is not None:
                transformers[key] = (s.model, row["precision"])
    return Scores(rows, right, errors, tests, transformers)


def score(
    paths: list[Path], sets_for: Callable[[dict, C.Config], list[TestSet]], device: torch.device
) -> Iterator[Scored]:
    """Load each checkpoint and score it on the sets `sets_for(checkpoint, config)` names: one row per set
    (variant, model, seed, checkpoint, tested_on, accuracy, error, n_test, params, train_seconds, status).
    Scoring runs at the precision the model trained at, so a run's own numbers come back exactly."""
    counted: dict[tuple, torch.Tensor] = {}  # digits right, by (model's run, variant, name, seed, step, test set)
    for path in paths:
        ck, cfg, model = load_model(path, device)
        precision = trained_precision(ck, cfg, path, device)
        rows, rights, sets = [], [], []
        for test in sets_for(ck, cfg):
            size = test.images.shape[-1]
            if size != ck["in_size"]:
                what = f"{test.name}: images are" if test.external else f"--variant {test.name}: canvas is"
                hint = "" if test.external else " (render it on the model's canvas with --canvas model)"
                raise UserError(f"{what} {size}x{size} but {path.name} takes {ck['in_size']}x{ck['in_size']}{hint}")
            # a best checkpoint of the last epoch holds the weights of the last one: count its digits once
            key = (
                str(path.parent),
                ck["variant"],
                ck["model_name"],
                ck["seed"],
                ck["step"],
                test.name,
                test.images.shape,
            )
            if key not in counted:
                counted[key] = right(model, test.images, test.labels, dtype_of(precision))
            rights.append(counted[key])
            # only the checkpoint's own test set is kept, for the record: a sweep's are let go once scored
            sets.append(test if test.name == ck["variant"] and not test.external else None)
            rows.append(_row(ck, path, model, test, int(counted[key].sum()), precision))
        yield Scored(path, ck, model, rows, rights, sets)


def _row(ck: dict, path: Path, model: Model, test: TestSet, n_ok: int, precision: str) -> dict:
    n = len(test.labels)
    return {
        "variant": ck["variant"],
        "model": ck["model_name"],
        "seed": ck["seed"],
        "checkpoint": ck["kind"],
        "tested_on": test.name,
        "correct": n_ok,
        "accuracy": n_ok / n,
        # the count is exact; the error in % is rounded to what the count can tell (0.01 for 10k digits)
        "error": round(100.0 * (n - n_ok) / n, 4),
        "n_test": n,
        "params": models.n_params(model),
        "train_seconds": round(ck["train_seconds"], 2),
        "status": _status(ck, path),
        "precision": precision,
    }


def trained_precision(ck: dict, cfg: C.Config, path: Path, device: torch.device) -> str:
    """The precision (bf16 | fp32) the checkpoint's model trained at, which scoring uses on any machine
    (the same weights scored at another precision classify some test digits differently). Checkpoints
    since version 0.2 say it. For older ones: the config, where it named a precision; else the run's
    env.json under the rule `auto` then had (bf16 on CUDA and on CPUs with AMX, and no AMD CPU has AMX);
    else, for an Intel CPU whose flags were not recorded, that rule on this machine, as then."""
    if ck.get("precision") in ("bf16", "fp32"):
        return ck["precision"]
    if cfg.train.amp != "auto":
        return "fp32" if cfg.train.amp == "off" else "bf16"
    env = _env_of(path)
    where = str(env.get("device", ""))
    if where.startswith("cuda"):
        return "bf16"
    if where == "cpu" and "AMD" in str(env.get("cpu", "")):
        return "fp32"
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_amx()) else "fp32"


def _env_of(checkpoint: Path) -> dict:
    """The env.json of the run a checkpoint lies in (<run>/checkpoints/<variant>/<file>), or {}."""
    return artifacts.read_env(Path(checkpoint).parent.parent.parent)


def _status(ck: dict, path: Path) -> str:
    """'ok', or 'diverged at epoch N' as the model's last checkpoint says (a best one predates it)."""
    diverged = ck["diverged"]
    last = files.sibling_checkpoint(path, "last")
    if ck["kind"] == "best" and last is not None and last.exists():
        diverged = checkpoints.load(last)["diverged"]
    return f"diverged at epoch {diverged}" if diverged else "ok"


def read_external(images: Path, labels: Path, device: torch.device) -> TestSet:
    """An external test set: uint8 images N x H x W (square) and N labels 0-9, as IDX files."""
    from stnexp.data import idx, mnist

    x, y = idx.read(images), idx.read(labels)
    mnist.check(x, y, images, labels)
    if x.shape[1] != x.shape[2]:
        raise UserError(f"{images}: images are {x.shape[1]}x{x.shape[2]}; stnexp models take square images")
    return TestSet(
        str(images),
        torch.from_numpy(x.copy()).unsqueeze(1).to(device),
        torch.from_numpy(y.astype("int64")).to(device),
        external=True,
    )
