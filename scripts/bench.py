"""Training throughput of stnexp's pipeline against the conventional one, on the same work.

(a) conventional: a torch DataLoader over the uint8 digits, per-image PIL transforms (pad to the canvas,
    torchvision RandomAffine), fp32, NCHW, the textbook layer order (ReLU before max-pool); each model
    trained on its own pass, as two separate scripts would.
(b) stnexp: digits on the device, whole-batch distortion on the device, both models side by side on the
    same batches, precision and memory layout as `stnexp train` picks them (training.run_epoch itself).
Same work in both: RTS (rotation +-45, scale 0.7-1.2, shift in a 42x42 canvas), N training images, the
paper-sized CNN and ST-CNN, SGD with momentum.

usage: python scripts/bench.py [--device auto] [--n 10240] [--batch 256] [--amp auto] [--compile]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torchvision import transforms  # noqa: E402

from stnexp import config, data, device as dev, evaluation, models, training  # noqa: E402

CANVAS = 42


class Conventional(torch.utils.data.Dataset):
    """Per-image PIL work, as a typical DataLoader pipeline does it."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        pad = (CANVAS - 28) // 2
        self.tf = transforms.Compose([
            transforms.Pad(pad),
            transforms.RandomAffine(degrees=45, scale=(0.7, 1.2), translate=(0.2, 0.2), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.tf(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def conventional(mcfg, digits, n, batch, device, workers) -> float:
    """Images/s of one model trained in fp32 NCHW from a DataLoader (a short warm-up excluded)."""
    torch.manual_seed(0)
    model = textbook(models.build(mcfg, CANVAS)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ds = Conventional(digits.train_images[:n], digits.train_labels[:n])
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True, pin_memory=device.type == "cuda", persistent_workers=False)
    seen, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 2:  # warm-up: worker start and first kernels
            sync(device)
            t0, seen = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - t0)


def textbook(model):
    """The same network with ReLU before max-pool, as conventional code writes it (same function)."""
    for seq in model.modules():
        if isinstance(seq, torch.nn.Sequential):
            layers = list(seq)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], torch.nn.MaxPool2d) and isinstance(layers[i + 1], torch.nn.ReLU):
                    seq[i], seq[i + 1] = layers[i + 1], layers[i]
    return model


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def stnexp_path(cfg, split, device):
    """Both models side by side through training.run_epoch, as `stnexp train` runs them; returns
    (wall seconds of the timed epoch, per-model seconds, images, members, autocast dtype)."""
    import tempfile

    dtype = dev.autocast_dtype(cfg.train.amp, device)
    with tempfile.TemporaryDirectory() as nowhere:  # no checkpoints to resume from
        run = training.Run(cfg, Path(nowhere), device, dtype, logging.getLogger("bench"), threading.Event(), split)
        group = training.make_group(run, "rts", 0)
    # epoch 1 warms up (kernel selection, compilation); epoch 2 is timed
    first = training.run_epoch(run, group, 1, group.members)
    for timer in first.timers.values():
        timer.read()
    sync(device)
    t0 = time.perf_counter()
    timed = training.run_epoch(run, group, 2, group.members)
    sync(device)
    wall = time.perf_counter() - t0
    per_model = {name: timer.read() for name, timer in timed.timers.items()}
    return wall, per_model, timed.steps * group.stream.batch_size, group.members, dtype


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=10240, help="training images per model and pipeline")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    ap.add_argument("--compile", action="store_true", help="compile the models in (b), as train.compile: true")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="eager steps in (b) on CUDA (train.cuda_graphs: false)")
    ap.add_argument("--skip-conventional", action="store_true", help="measure (b) only")
    args = ap.parse_args()

    device = dev.resolve(args.device)
    dev.configure(device, deterministic=False)  # as `stnexp train` does
    cfg = config.validate({
        "device": str(device),
        "data": {"train_size": args.n, "val_size": 0, "variants": {"rts": None}},
        "models": {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {}}},
        "train": {"batch_size": args.batch, "amp": args.amp, "compile": args.compile, "lr": 0.01, "cuda_graphs": not args.no_cuda_graphs},
    })
    print(f"machine: {dev.cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"work: RTS 42x42, n={args.n} images per model, batch {args.batch}, SGD momentum 0.9, device {device}")

    split = data.split(cfg.data, device)
    spec = cfg.variant("rts")

    # the distortion generator alone
    stream = data.Stream(split.train, spec, 0, "rts", args.batch, True)
    for _ in stream.epoch(0):
        pass
    sync(device)
    t0 = time.perf_counter()
    count = 0
    for x, _ in stream.epoch(1):
        count += len(x)
    sync(device)
    gen_rate = count / (time.perf_counter() - t0)

    wall, per_model, imgs, members, dtype = stnexp_path(cfg, split, device)
    test = data.fixed(split.test, spec, 0, "rts", "test")
    evaluation.correct(members[1].model, test.images, test.labels, dtype)
    sync(device)
    t0 = time.perf_counter()
    for m in members:
        evaluation.correct(m.model, test.images, test.labels, dtype)
    sync(device)
    eval_rate = len(members) * len(test.labels) / (time.perf_counter() - t0)

    graphs = device.type == "cuda" and not args.no_cuda_graphs
    print(f"settings (b): precision {'bf16 autocast' if dtype else 'fp32'}, channels_last {dev.channels_last(device)}, compile {args.compile}, cuda graphs {graphs}")
    print(f"distortion generator alone: {gen_rate:,.0f} images/s")
    print(f"evaluation (inference mode, batch {evaluation.BATCH}): {eval_rate:,.0f} images/s per model")
    print()
    print("| model | (a) conventional img/s | (b) stnexp img/s | b/a |")
    print("|---|---:|---:|---:|")
    conv = {}
    if not args.skip_conventional:
        from stnexp import mnist

        digits = mnist.load()
        workers = min(8, os.cpu_count() or 1)
        for name, mcfg in cfg.models.items():
            conv[name] = conventional(mcfg, digits, args.n, args.batch, device, workers)
    for name in cfg.models:
        b = imgs / per_model[name]
        a = conv.get(name)
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |" if a else f"| {name} | - | {b:,.0f} | - |")
    both_b = imgs / wall
    if conv:
        both_a = 1.0 / sum(1.0 / r for r in conv.values())
        print(f"| cnn + st-cnn (wall, data included) | {both_a:,.0f} | {both_b:,.0f} | **{both_b / both_a:.2f}** |")
    else:
        print(f"| cnn + st-cnn (wall, data included) | - | {both_b:,.0f} | - |")
    protocol = 150_000 * 256  # the paper: 150k iterations of batch 256, per model
    print(f"paper protocol (150k x 256 images per model, cnn + st-cnn side by side, one variant, one seed) at this rate: {protocol / both_b / 60:.1f} min")


if __name__ == "__main__":
    main()
