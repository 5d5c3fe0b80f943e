"""`stnexp preview`: one picture per variant, test digits beside their distorted versions."""

from __future__ import annotations

from pathlib import Path

from stnexp.config import Config


def write_previews(cfg: Config, out: Path | None, n: int) -> list[Path]:
    from stnexp import data, device
    from stnexp.errors import UserError
    from stnexp.results import pictures

    dev = device.resolve(cfg.device)
    split = data.split(cfg.data, dev)
    folder = Path(out) if out else Path(cfg.out) / cfg.name / "preview"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {folder}: not writable ({e.strerror or e})") from None
    paths = []
    seed = cfg.seeds[0]
    for name in cfg.data.variants:
        # the same distortions as the test set of the first seed (the first n digits of it)
        test = data.fixed(split.test, cfg.variant(name), seed, name, "test")
        originals = split.test.images[:n].unsqueeze(1).float() / 255.0
        title = f"each pair: a test digit | the same digit in variant {name} (seed {seed})"
        paths.append(pictures.pairs(originals, test.images[:n], folder / f"{name}.png", title))
    return paths
