"""Training throughput of stnexp's pipeline against the conventional one, on the same work.

(a) conventional: a torch DataLoader over the uint8 digits, per-image PIL transforms (pad to the canvas,
    torchvision RandomAffine), fp32, NCHW, the textbook layer order (ReLU before max-pool); each model
    trained on its own pass, as two separate scripts would.
(b) stnexp: digits on the device, whole-batch distortion on the device, both models side by side on the
    same batches, precision and memory layout as `stnexp train` picks them (loop.run_epoch itself),
    each model's step timed alone as with `train.fuse: off` (`--fused` measures stepping them together).
Same work in both: RTS (rotation +-45, scale 0.7-1.2, shift in a 42x42 canvas), N training images, the
paper-sized CNN and ST-CNN, SGD with momentum.

Measured in alternation (a, b, a, b, ... for --pairs pairs), medians with their range, so a machine that
drifts (turbo, a neighbour process) moves both sides alike.

--whole-process: the user's figure instead, whole processes timed from start to exit, imports and the
test set included, again in alternation: `stnexp train` on a generated config against this script's
own conventional run (`--conventional-process`) of the same work: 20k RTS training digits, one epoch of
batch 256, SGD, the paper-sized CNN and ST-CNN, then both models scored on the 10k test digits.

--precision: (b) in fp32 against (b) in bf16 autocast, in alternation: the figure `train.amp: auto`
decides by (bf16 on CPUs with `avx512_bf16` or AMX).

--fused S: S seeds of each model stepped one after another (as a run trains its seeds today) against
one fused step of all S (parameters stacked, vmap) and, on CUDA with graphs, against all their steps
captured into one graph with a stream per model (fused.Together); a last row does the same with both
models of each seed. The same prepared batches for all, in alternation.

usage: python scripts/bench.py [--device auto] [--n 10240] [--batch 256] [--amp auto] [--compile] [--pairs 3]
       python scripts/bench.py --whole-process [--pairs 3] [--n 20000]
       python scripts/bench.py --fused 3 [--device auto] [--n 10240] [--pairs 3]
       python scripts/bench.py --precision [--device auto] [--n 10240] [--batch 256] [--pairs 3]
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

from stnexp import config, data, models
from stnexp import device as dev
from stnexp.models import kernels
from stnexp.results import scoring  # noqa: E402
from stnexp.training import loop

CANVAS = 42


class Conventional(torch.utils.data.Dataset):
    """Per-image PIL work, as a typical DataLoader pipeline does it."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        pad = (CANVAS - 28) // 2
        self.tf = transforms.Compose(
            [
                transforms.Pad(pad),
                transforms.RandomAffine(
                    degrees=45,
                    scale=(0.7, 1.2),
                    translate=(0.2, 0.2),
                    interpolation=transforms.InterpolationMode.BILINEAR,
                ),
                transforms.ToTensor(),
            ]
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.tf(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def conventional(mcfg, digits, n, batch, device, workers) -> float:
    """Images/s of one model trained in fp32 NCHW from a DataLoader (a short warm-up excluded), on
    nn.Conv2d's own kernels."""
    with kernels.switched(False):
        return _conventional(mcfg, digits, n, batch, device, workers)


def _conventional(mcfg, digits, n, batch, device, workers) -> float:
    torch.manual_seed(0)
    model = textbook(models.build(mcfg, CANVAS)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ds = Conventional(digits.train_images[:n], digits.train_labels[:n])
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
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
    """The same network with ReLU before max-pool, as conventional code writes it (same function); it
    runs with stnexp's CPU kernels switched off (kernels.switched(False)), on nn.Conv2d's own."""
    for seq in model.modules():
        if isinstance(seq, torch.nn.Sequential):
            layers = list(seq)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], torch.nn.MaxPool2d) and isinstance(layers[i + 1], torch.nn.ReLU):
                    seq[i], seq[i + 1] = layers[i + 1], layers[i]
    return model


def step_flops(model, batch: int, in_size: int, device) -> float:
    """Floating-point operations of one training step (forward and backward) of `model` on `batch` images,
    as torch's FlopCounterMode counts them: a convolution at its direct count (2 per multiply-add), the
    sampler and the elementwise work not at all. A lower bound on the work of the step."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 1, in_size, in_size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    with kernels.switched(False), FlopCounterMode(display=False) as counter:  # nn.Conv2d's own: countable
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_flops(device, dtype=None, side: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a large matrix product on `device` in `dtype` (None: fp32), the precision the step trains
    at: what this machine's arithmetic can reach, to set beside what a training step reaches."""
    dtype = dtype or torch.float32
    a, b = (torch.rand(side, side, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2.0 * side**3 * reps / (time.perf_counter() - t0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def stnexp_path(cfg, split, device):
    """Both models side by side through loop.run_epoch, as `stnexp train` runs them; returns
    (wall seconds of the timed epoch, per-model seconds, images, members, autocast dtype)."""
    import tempfile

    dtype = dev.autocast_dtype(cfg.train.amp, device)
    with tempfile.TemporaryDirectory() as nowhere:  # no checkpoints to resume from
        run = loop.Run(cfg, Path(nowhere), device, dtype, logging.getLogger("bench"), threading.Event(), split)
        group = loop.make_group(run, "rts", 0)
    # epoch 1 warms up (kernel selection, compilation); epoch 2 is timed
    loop.run_epoch(run, [(group, group.members)], 1)
    sync(device)
    t0 = time.perf_counter()
    (timed,) = loop.run_epoch(run, [(group, group.members)], 2)
    sync(device)
    wall = time.perf_counter() - t0
    per_model = timed.seconds
    return wall, per_model, timed.steps * group.stream.batch_size, group.members, dtype


def fused_case(seeds: int, n: int, batch: int, device, amp: str, graphs: bool, pairs: int) -> None:
    """S models of one architecture (seeds 0..S-1, each on its own batch stream) stepped one after
    another, as a run of S seeds trains them today, against one stacked step of all S and against one
    graph of all their steps (stacked.py), in alternation. The batches are made beforehand, the same for
    all: the step alone is measured."""
    from stnexp.training import fused, members, stacked
    from stnexp.training.step import TrainStep

    cfg = config.validate(
        {
            "device": str(device),
            "seeds": list(range(seeds)),
            "data": {"train_size": n, "val_size": 0, "variants": {"rts": None}},
            "models": {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {"loc_lr_scale": 0.1}}},
            "train": {"batch_size": batch, "amp": amp, "lr": 0.01, "cuda_graphs": graphs},
        }
    )
    dtype = dev.autocast_dtype(cfg.train.amp, device)
    split = data.split(cfg.data, device)
    streams = [data.Stream(split.train, cfg.variant("rts"), s, "rts", batch, True) for s in cfg.seeds]
    batches = [
        (torch.stack([x for x, _ in b]), torch.stack([y for _, y in b])) for b in zip(*(st.epoch(1) for st in streams))
    ]
    length = members.Length(len(batches), 10**9, 1)
    print(
        f"fused vs one after another: {seeds} seeds per model, {len(batches)} steps of batch {batch}, "
        f"precision {'bf16 autocast' if dtype else 'fp32'}, cuda graphs {graphs and device.type == 'cuda'}, device "
        f"{device}"
    )
    print()
    print(
        "| models | one after another, model-images/s | fused (stacked, vmap) | fused / one after another | together "
        "(one graph, a stream per model) | together / one after another |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    rows = {name: [name] for name in cfg.models} | {"cnn + st-cnn": list(cfg.models)}
    for row, names in rows.items():

        def fresh():  # seed-major: member i trains on seed i // len(names)'s batches
            return [
                TrainStep(members.build(cfg, name, "rts", s, length, device), cfg.train, dtype)
                for s in cfg.seeds
                for name in names
            ]

        singles, together = fresh(), fused.Together(fresh())
        stack = None
        if len(names) == 1:
            mcfg = cfg.models[names[0]]
            stack = stacked.Stack(
                [members.build(cfg, names[0], "rts", s, length, device) for s in cfg.seeds],
                cfg.train,
                mcfg,
                dtype,
                length.steps_per_epoch,
                length.total,
            )
        per = len(names)  # each seed's batch goes to every model of the row

        def one_after_another():
            for x, y in batches:
                for i, st in enumerate(singles):
                    st(x[i // per], y[i // per])

        def stacked():
            for x, y in batches:
                stack(x, y)

        # each model's copy of its seed's batch, made before the clock starts as the batches are
        wide = (
            [(x.repeat_interleave(per, 0), y.repeat_interleave(per, 0)) for x, y in batches] if together.graphed else []
        )

        def side_by_side():
            for x, y in wide:
                together(x, y)

        cases = {
            "a": one_after_another,
            "b": stacked if stack else None,
            "c": side_by_side if together.graphed else None,
        }
        cases = {k: fn for k, fn in cases.items() if fn is not None}
        rates: dict[str, list[float]] = {k: [] for k in cases}
        for fn in cases.values():  # warm-up: kernels, capture
            fn()
        for _ in range(pairs):
            for key, fn in cases.items():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                rates[key].append(len(singles) * len(batches) * batch / (time.perf_counter() - t0))

        def column(key):
            if key not in rates:
                return "-", "-"
            return spread(rates[key]), spread([b / a for a, b in zip(rates["a"], rates[key])], ".2f")

        print(f"| {row} | {spread(rates['a'])} | {' | '.join(column('b'))} | {' | '.join(column('c'))} |")
    print()
    print("fused: one stacked model per architecture (not for models of different shapes); together: CUDA graphs only")


def profile_case(batch: int, device, amp: str, steps: int) -> None:
    """Where one model's training step spends its time: torch.profiler over `steps` eager steps, each
    kernel's (on a CPU: each op's) own device time per step, the largest first; then the step's wall time
    eager and, on CUDA, as one replayed graph, at batch B and 3B (whether a bigger step fills the device
    better, which is what running several models at once can gain)."""
    from torch.profiler import ProfilerActivity, profile

    from stnexp.training import members
    from stnexp.training.step import TrainStep

    def cfg(b, graphs):
        return config.validate(
            {
                "device": str(device),
                "data": {"train_size": b, "val_size": 0, "variants": {"rts": None}},
                "models": {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {"loc_lr_scale": 0.1}}},
                "train": {"batch_size": b, "amp": amp, "lr": 0.01, "cuda_graphs": graphs},
            }
        )

    def step_for(name, b, graphs):
        c = cfg(b, graphs)
        split = data.split(c.data, device)
        x, y = next(iter(data.Stream(split.train, c.variant("rts"), 0, "rts", b, True).epoch(1)))
        return (
            TrainStep(
                members.build(c, name, "rts", 0, members.Length(1, 10**9, 1), device),
                c.train,
                dev.autocast_dtype(amp, device),
            ),
            x,
            y,
        )

    def wall(step, x, y, n):
        for _ in range(5):  # warm-up: kernel choice, capture
            step(x, y)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(x, y)
        sync(device)
        return (time.perf_counter() - t0) / n

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for name in ("cnn", "st-cnn"):
        step, x, y = step_for(name, batch, False)
        eager = wall(step, x, y, steps)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step(x, y)
            sync(device)
        # kernels (CUDA) or ops (CPU) by their own time; on a CPU nested ops would count twice otherwise
        rows = [e for e in prof.key_averages() if (e.device_type.name == "CUDA") == cuda]

        def own(e) -> float:  # us per step
            if cuda:
                return (getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)) / steps
            return e.self_cpu_time_total / steps

        rows = sorted((e for e in rows if own(e) > 0), key=own, reverse=True)
        total = sum(own(e) for e in rows)
        print(
            f"{name}, batch {batch}: {'kernel' if cuda else 'op'} time {total / 1000:.3f} ms a step "
            f"(eager wall {eager * 1000:.3f} ms a step), {sum(e.count for e in rows) / steps:.0f} "
            f"{'kernels' if cuda else 'ops'} a step"
        )
        print(f"| {'kernel' if cuda else 'op'} | calls a step | us a step | share |")
        print("|---|---:|---:|---:|")
        for e in rows[:14]:
            print(f"| {e.key[:90]} | {e.count / steps:.0f} | {own(e):.1f} | {own(e) / total:.1%} |")
        print()
        if cuda:
            for b in (batch, 3 * batch):
                graphed, gx, gy = step_for(name, b, True)
                seconds = wall(graphed, gx, gy, steps)
                print(
                    f"{name}: one graph a step, batch {b}: {seconds * 1000:.3f} ms a step, {b / seconds:,.0f} images/s"
                )
            print()


def precision_case(n: int, batch: int, device, pairs: int) -> None:
    """(b) in fp32 against (b) in bf16 autocast, in alternation: what `train.amp: auto` decides by."""
    flags = sorted(dev.cpu_flags() & set(dev.BF16_FLAGS)) if device.type == "cpu" else []
    print(machine(device) + f"; torch {torch.__version__}; bf16 flags: {', '.join(flags) or 'none'}")
    print(
        f"work: RTS 42x42, n={n} images per model, batch {batch}, SGD momentum 0.9, both models side by side, each "
        "step timed alone"
    )
    print(f"train.amp auto here: {dev.precision(dev.autocast_dtype('auto', device))}")
    rates: dict[str, dict[str, list[float]]] = {}
    for _ in range(pairs):
        for amp in ("off", "bf16"):
            cfg = config.validate(
                {
                    "device": str(device),
                    "data": {"train_size": n, "val_size": 0, "variants": {"rts": None}},
                    "models": {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {}}},
                    "train": {"batch_size": batch, "amp": amp, "lr": 0.01},
                }
            )
            wall, per_model, imgs, _, _ = stnexp_path(cfg, data.split(cfg.data, device), device)
            for name, seconds in [*per_model.items(), ("cnn + st-cnn (wall)", wall)]:
                rates.setdefault(name, {}).setdefault(amp, []).append(imgs / seconds)
    print()
    print(f"images/s, median (range) of {pairs} pair(s) in alternation")
    print()
    print("| model | fp32 | bf16 autocast | bf16 / fp32 |")
    print("|---|---:|---:|---:|")
    for name, by in rates.items():
        ratio = [b / a for a, b in zip(by["off"], by["bf16"])]
        print(f"| {name} | {spread(by['off'])} | {spread(by['bf16'])} | **{spread(ratio, '.2f')}** |")


def machine(device) -> str:
    """The line that says where a measurement ran."""
    return f"machine: {dev.cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}" + (
        f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    )


def spread(values: list[float], fmt: str = ",.0f") -> str:
    """The median of the pairs' values and their range."""
    import statistics

    mid = statistics.median(values)
    return f"{mid:{fmt}}" if len(values) == 1 else f"{mid:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def conventional_process(n: int, batch: int, workers: int) -> None:
    """The conventional pipeline as a user's script runs it: train the CNN, then the ST-CNN, one epoch of
    n RTS digits each through a DataLoader with PIL transforms; then score both on the 10k test digits,
    distorted by the same transforms (seeded)."""
    from stnexp.data import mnist

    kernels.set_enabled(False)  # nn.Conv2d's own kernels, as a user's script has them
    torch.manual_seed(0)
    digits = mnist.load()
    device = torch.device("cpu")
    test = torch.utils.data.DataLoader(
        Conventional(digits.test_images, digits.test_labels), batch_size=1000, num_workers=workers
    )
    for mcfg in (config.CNNConfig(arch="cnn"), config.CNNConfig(arch="cnn", stn=config.TransformerConfig())):
        model = textbook(models.build(mcfg, CANVAS)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loader = torch.utils.data.DataLoader(
            Conventional(digits.train_images[:n], digits.train_labels[:n]),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
        )
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        right = 0
        with torch.inference_mode():
            for x, y in test:
                right += int((model(x).argmax(1) == y).sum())
        print(f"{'st-cnn' if mcfg.stn else 'cnn'}: test error {100 - right / 100:.2f}%")


def whole_process(pairs: int, n: int, batch: int) -> None:
    """(a) this script's conventional process against (b) `stnexp train`, in alternation."""
    import subprocess
    import tempfile

    import yaml

    workers = min(8, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "name": "bench",
                    "seeds": [0],
                    "device": "cpu",
                    "data": {"train_size": n, "val_size": 0, "variants": {"rts": None}},
                    "models": {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {}}},
                    "train": {"epochs": 1, "batch_size": batch, "optimizer": "sgd", "lr": 0.01},
                }
            )
        )
        commands = {
            "a": [
                sys.executable,
                __file__,
                "--conventional-process",
                "--n",
                str(n),
                "--batch",
                str(batch),
                "--workers",
                str(workers),
            ],
            "b": [sys.executable, "-m", "stnexp", "train", str(cfg), "--out", str(Path(tmp) / "run"), "--force"],
        }
        print(f"machine: {dev.cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}")
        print(
            f"work: RTS 42x42, {n} training digits, 1 epoch of batch {batch}, SGD, CNN then ST-CNN (a) or side by "
            "side (b), then the 10k test digits"
        )
        times: dict[str, list[float]] = {"a": [], "b": []}
        for i in range(pairs):
            for side in ("a", "b"):
                t0 = time.perf_counter()
                done = subprocess.run(
                    commands[side], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
                )
                seconds = time.perf_counter() - t0
                if done.returncode != 0:
                    sys.exit(f"({side}) failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                times[side].append(seconds)
                print(f"pair {i + 1} ({side}): {seconds:.1f} s", flush=True)
        ratios = [a / b for a, b in zip(times["a"], times["b"])]
        print()
        print("| whole process | seconds, median (range) over pairs |")
        print("|---|---:|")
        print(f"| (a) conventional: DataLoader + PIL, fp32, one model after the other | {spread(times['a'], '.1f')} |")
        print(f"| (b) `stnexp train` | {spread(times['b'], '.1f')} |")
        print(f"| a / b, per pair | **{spread(ratios, '.2f')}** |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=10240, help="training images per model and pipeline")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"])
    ap.add_argument("--compile", action="store_true", help="compile the models in (b), as train.compile: true")
    ap.add_argument(
        "--no-cuda-graphs", action="store_true", help="eager steps in (b) on CUDA (train.cuda_graphs: false)"
    )
    ap.add_argument("--skip-conventional", action="store_true", help="measure (b) only")
    ap.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="measurements in alternation, a then b, this many times (medians and range)",
    )
    ap.add_argument(
        "--whole-process",
        action="store_true",
        help="time whole processes instead: the conventional script against `stnexp train` (default --n 20000)",
    )
    ap.add_argument(
        "--fused",
        type=int,
        metavar="S",
        help="instead: S seeds of each model stepped one after another against one fused, stacked step (stacked.py)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="instead: where one model's step spends its time (torch.profiler), and on CUDA the graphed step at "
        "--batch and 3x --batch",
    )
    ap.add_argument(
        "--precision",
        action="store_true",
        help="instead: (b) in fp32 against (b) in bf16 autocast, in alternation (what train.amp: auto decides by)",
    )
    ap.add_argument("--conventional-process", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.conventional_process:
        return conventional_process(args.n, args.batch, args.workers)
    if args.whole_process:
        return whole_process(args.pairs, args.n if "--n" in sys.argv else 20000, args.batch)

    device = dev.resolve(args.device)
    dev.configure(device, deterministic=False)  # as `stnexp train` does
    if args.fused:
        print(machine(device) + f"; torch {torch.__version__}")
        return fused_case(args.fused, args.n, args.batch, device, args.amp, not args.no_cuda_graphs, args.pairs)
    if args.precision:
        return precision_case(args.n, args.batch, device, args.pairs)
    if args.profile:
        print(machine(device) + f"; torch {torch.__version__}")
        return profile_case(args.batch, device, args.amp, 20)
    cfg = config.validate(
        {
            "device": str(device),
            "data": {"train_size": args.n, "val_size": 0, "variants": {"rts": None}},
            "models": {"cnn": {"arch": "cnn"}, "st-cnn": {"arch": "cnn", "stn": {}}},
            "train": {
                "batch_size": args.batch,
                "amp": args.amp,
                "compile": args.compile,
                "lr": 0.01,
                "cuda_graphs": not args.no_cuda_graphs,
            },
        }
    )
    print(machine(device))
    print(
        f"versions: python {platform.python_version()}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}"
    )
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

    from stnexp.data import mnist

    digits = mnist.load()
    workers = min(8, os.cpu_count() or 1)
    conv: dict[str, list[float]] = {name: [] for name in cfg.models}
    ours: dict[str, list[float]] = {name: [] for name in cfg.models}
    walls = []
    for _ in range(args.pairs):  # a, b, a, b, ...: drift moves both sides alike
        if not args.skip_conventional:
            for name, mcfg in cfg.models.items():
                conv[name].append(conventional(mcfg, digits, args.n, args.batch, device, workers))
        wall, per_model, imgs, members, dtype = stnexp_path(cfg, split, device)
        walls.append(imgs / wall)
        for name in cfg.models:
            ours[name].append(imgs / per_model[name])
    test = data.fixed(split.test, spec, 0, "rts", "test")
    scoring.correct(members[1].model, test.images, test.labels, dtype)
    sync(device)
    t0 = time.perf_counter()
    for m in members:
        scoring.correct(m.model, test.images, test.labels, dtype)
    sync(device)
    eval_rate = len(members) * len(test.labels) / (time.perf_counter() - t0)

    # how far from the machine's arithmetic limit a step runs: its counted FLOPs per image times images/s,
    # against a large matmul on the same device at the step's precision (docs/performance.md, "How close to
    # the limit"): with bf16 autocast, a bf16 one, which on a Zen 5 EPYC ran 3-4x fp32's
    per_image = {m.name: step_flops(m.model, args.batch, spec.canvas, device) / args.batch for m in members}
    peak = matmul_flops(device, dtype)
    graphs = device.type == "cuda" and not args.no_cuda_graphs
    print(
        f"settings (b): precision {'bf16 autocast' if dtype else 'fp32'}, channels_last {dev.channels_last(device)}, "
        f"compile {args.compile}, cuda graphs {graphs}"
    )
    print(f"distortion generator alone: {gen_rate:,.0f} images/s")
    print(f"evaluation (inference mode, batch {scoring.BATCH}): {eval_rate:,.0f} images/s per model")
    print()
    print(f"images/s, median (range) of {args.pairs} measurement(s) in alternation")
    print()
    print("| model | (a) conventional img/s | (b) stnexp img/s | b/a |")
    print("|---|---:|---:|---:|")
    for name in cfg.models:
        if conv[name]:
            ratio = [b / a for a, b in zip(conv[name], ours[name])]
            print(f"| {name} | {spread(conv[name])} | {spread(ours[name])} | {spread(ratio, '.2f')} |")
        else:
            print(f"| {name} | - | {spread(ours[name])} | - |")
    if not args.skip_conventional:
        both_a = [1.0 / sum(1.0 / conv[name][i] for name in cfg.models) for i in range(args.pairs)]
        ratio = [b / a for a, b in zip(both_a, walls)]
        print(
            f"| cnn + st-cnn (wall, data included) | {spread(both_a)} | {spread(walls)} | **{spread(ratio, '.2f')}** |"
        )
    else:
        print(f"| cnn + st-cnn (wall, data included) | - | {spread(walls)} | - |")
    import statistics

    achieved = {name: per_image[name] * statistics.median(ours[name]) for name in cfg.models}
    side_by_side = sum(per_image.values()) * statistics.median(walls)
    print()
    print(
        "arithmetic (FlopCounterMode's direct count of convolutions and matmuls, forward + backward): "
        + ", ".join(
            f"{name} {per_image[name] / 1e6:.1f} MFLOP/image -> {achieved[name] / 1e9:.1f} GFLOP/s"
            for name in cfg.models
        )
        + f"; both side by side {side_by_side / 1e9:.1f} GFLOP/s"
    )
    print(
        f"a 2048x2048 {'bf16' if dtype else 'fp32'} matmul on this device: {peak / 1e9:.1f} GFLOP/s; the "
        "side-by-side step reaches "
        f"{100 * side_by_side / peak:.0f}% of it"
    )
    both_b = statistics.median(walls)
    protocol = 150_000 * 256  # the paper: 150k iterations of batch 256, per model
    print(
        "paper protocol (150k x 256 images per model, cnn + st-cnn side by side, one variant, one seed) at this "
        f"rate: {protocol / both_b / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
