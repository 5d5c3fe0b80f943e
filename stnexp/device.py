"""Which device and which precision a run uses, decided once and checked up front."""

from __future__ import annotations

import torch

from stnexp.errors import UserError


def resolve(name: str) -> torch.device:
    """`auto | cpu | cuda | cuda:N | mps` -> a torch.device that exists on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device: {name} requested but CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device: {name} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return dev
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device: mps requested but MPS is not available on this machine")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp`, or None for fp32. `auto` takes bf16 where it was measured faster
    (scripts/bench.py): on CUDA, and on CPUs with AMX (2.4x the CNN's and 3.7x the ST-CNN's fp32 training
    throughput on a 2-core Xeon); elsewhere fp32, since bf16 emulated without AMX is slower."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_amx()):
        return torch.bfloat16
    return None


def cpu_has_amx() -> bool:
    try:
        return any("amx_bf16" in line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except OSError:
        return False


def channels_last(device: torch.device) -> bool:
    """channels_last is faster for these convs on CUDA and on CPU (oneDNN) alike (scripts/bench.py)."""
    return device.type in ("cuda", "cpu")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_name()
    return device.type


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def configure(device: torch.device, deterministic: bool) -> None:
    """Process-wide settings for a run: deterministic algorithms on request, else cuDNN autotuning
    (every batch has the same shape, so the fastest kernels are picked once); and host memory reuse."""
    keep_freed_memory()
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def keep_freed_memory() -> None:
    """glibc hands large freed blocks back to the OS and maps them afresh, zeroed, on the next allocation;
    a CPU training step frees and reallocates its ~20 MB activations every step. Raising the mmap and trim
    thresholds keeps them in the heap: 1.27x the CPU training and 1.8x the evaluation throughput on a
    2-core Xeon (scripts/bench.py). A no-op where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        if not libc.mallopt(m_mmap_threshold, 1 << 30):
            libc.mallopt(m_mmap_threshold, 1 << 25)  # older glibc caps it at 32 MB
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass
