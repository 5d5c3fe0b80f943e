"""Optional TensorBoard logging (`train.tensorboard: true`): after each epoch, per model, its training
loss and accuracy, validation accuracy and learning rate, and for a spatial transformer a picture of
validation digits beside what it made of them. Each model writes into tb/<variant>/s<seed>/<model>/ of
the run directory, so `tensorboard --logdir RUN/tb` lays the models of a group over each other. The x
axis is the optimizer step, as in metrics.csv."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from stnexp.errors import UserError
from stnexp.results import pictures
from stnexp.store import artifacts

INSTALL = "pip install 'stnexp[tensorboard]'"
PICTURE_DIGITS = 8  # pairs per picture: one row, small enough to watch epoch by epoch


def check(wanted: bool) -> None:
    """Refuse `train.tensorboard: true` up front, before a run directory is made, where the writer
    cannot be imported."""
    import importlib.util

    if wanted and importlib.util.find_spec("tensorboard") is None:
        raise UserError(f"train.tensorboard: true needs the tensorboard package, which is not installed: {INSTALL}")


class Board:
    """The open event writers of a run, one per (variant, seed, model), made on first use."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / artifacts.TB.folder
        self.writers: dict[tuple[str, int, str], object] = {}

    def _writer(self, variant: str, seed: int, model: str):
        from torch.utils.tensorboard import SummaryWriter

        key = (variant, seed, model)
        if key not in self.writers:
            self.writers[key] = SummaryWriter(log_dir=str(self.dir / variant / f"s{seed}" / model))
        return self.writers[key]

    def epoch(self, row: dict, model: torch.nn.Module, digits: torch.Tensor | None) -> None:
        """One metrics.csv row of a model; with `digits` and a transformer, its picture of them."""
        w = self._writer(row["variant"], row["seed"], row["model"])
        step = row["step"]
        w.add_scalar("loss/train", row["train_loss"], step)
        w.add_scalar("accuracy/train", row["train_acc"], step)
        if row["val_acc"] is not None:
            w.add_scalar("accuracy/val", row["val_acc"], step)
        w.add_scalar("lr", row["lr"], step)
        if digits is not None and getattr(model, "stn", None) is not None:
            w.add_image("transformer", pair_strip(model, digits[:PICTURE_DIGITS]), step)
        w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


@torch.no_grad()
def pair_strip(model: torch.nn.Module, digits: torch.Tensor) -> torch.Tensor:
    """1 x H x W in [0, 1]: on top the digits, below what the transformer made of them (padded or resized
    to the digits' size, as in the PNGs), a 2 px gap between columns."""
    was = model.training
    model.eval()
    made = model.transformed_images(digits).float()
    model.train(was)
    made = pictures.to_canvas(made, digits.shape[-1])
    column = torch.cat([digits.float(), made], 2).clamp(0, 1)  # N x 1 x 2size x size
    column = F.pad(column, (0, 2))  # the gap on each column's right
    return torch.cat(list(column), 2).cpu()  # 1 x 2size x N(size + 2)
