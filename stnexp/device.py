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
    (scripts/bench.py --precision; docs/performance.md): on CUDA, and on CPUs whose cores compute in bf16
    (`avx512_bf16` or AMX); elsewhere fp32, since bf16 emulated in fp32 units is slower."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return torch.bfloat16
    return None


def precision(dtype: torch.dtype | None) -> str:
    """How a checkpoint, env.json and an eval table name the precision a model ran at."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def running_at(name: str, device: torch.device):
    """A context in which a model runs at precision `name` (bf16 | fp32), as it trained."""
    from contextlib import nullcontext

    dtype = dtype_of(name)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def dtype_of(name: str) -> torch.dtype | None:
    """The autocast dtype of a precision named by precision()."""
    return torch.bfloat16 if name == "bf16" else None


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bf16 dot products in the vector units, or AMX's tiles


def cpu_flags() -> set[str]:
    try:
        return {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def cpu_has_bf16() -> bool:
    return any(f in cpu_flags() for f in BF16_FLAGS)


def cpu_has_amx() -> bool:
    return "amx_bf16" in cpu_flags()


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
    (every batch has the same shape, so the fastest kernels are picked once); and host memory reuse.
    TF32 is off on CUDA: cuDNN's convolutions default to it, and a run recorded as fp32 must be fp32
    (under bf16 autocast it does not touch the bf16 convolutions, and theta, grid and sampling stay fp32)."""
    keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def keep_freed_memory() -> None:
    """glibc hands large freed blocks back to the OS and maps them afresh, zeroed, on the next allocation;
    a CPU training step frees and reallocates its ~20 MB activations every step. Raising the mmap and trim
    thresholds keeps them in the heap (faster CPU training and evaluation: docs/performance.md). A no-op
    where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        if not libc.mallopt(m_mmap_threshold, 1 << 30):
            libc.mallopt(m_mmap_threshold, 1 << 25)  # older glibc caps it at 32 MB
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass
