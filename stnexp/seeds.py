"""Named random streams: every seed the run uses is derived from (config seed, purpose, ...), so a stream
never depends on what else the run draws (which models share the run, how many variants there are)."""

from __future__ import annotations

import hashlib

import torch


def derive(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and machines (no Python hash randomisation)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def generator(device: torch.device | str, *parts: object) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive(*parts))
    return gen
