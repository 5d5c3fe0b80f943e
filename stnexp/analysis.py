"""What the numbers and the transformer say beyond accuracy: paired significance of two models scored on
the same test digits (McNemar's exact test), and rectification: how much of each test digit's true
distortion is left after the transformer (the transformer's theta composed with the true pose)."""

from __future__ import annotations

import math
import statistics

import torch

from stnexp import geometry, transforms

ALPHA = 0.05


def mcnemar(right_a: torch.Tensor, right_b: torch.Tensor) -> tuple[int, int, float]:
    """McNemar's exact test on two models' per-digit correctness (bool vectors over the same digits):
    (b, c, p) with b the digits only A gets right, c those only B gets right, p the two-sided p-value
    of b and c differing by chance (a binomial test of min(b, c) in b + c draws at 1/2)."""
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return b, c, 1.0
    # exact in integers: sum of C(n, i) for i <= k, over 2^n
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return b, c, min(1.0, 2 * tail / 2**n)


def paired_rows(right: dict[tuple[str, int, str], torch.Tensor], errors: dict[tuple[str, int, str], float]) -> list[dict]:
    """McNemar for every pair of models scored on the same (variant, seed) test digits."""
    out = []
    for variant, seed in dict.fromkeys((v, s) for v, s, _ in right):
        names = [m for v, s, m in right if (v, s) == (variant, seed)]
        for i, a in enumerate(names):
            for bname in names[i + 1 :]:
                b, c, p = mcnemar(right[(variant, seed, a)], right[(variant, seed, bname)])
                out.append({"variant": variant, "seed": seed, "model_a": a, "model_b": bname,
                            "error_a": errors[(variant, seed, a)], "error_b": errors[(variant, seed, bname)],
                            "only_a_right": b, "only_b_right": c, "p_value": float(f"{p:.3g}"), "significant": p < ALPHA})
    return out


def paired_markdown(rows: list[dict]) -> str:
    lines = [f"**Paired test digits: McNemar's exact test per pair of models** (best checkpoints; significant: p < {ALPHA})", ""]
    lines.append("| variant | seed | model A | model B | error A % | error B % | only A right | only B right | p | |")
    lines.append("|---|---:|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        verdict = "significant" if r["significant"] else "not significant"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['model_a']} | {r['model_b']} | {r['error_a']:.2f} | {r['error_b']:.2f} | "
                     f"{r['only_a_right']} | {r['only_b_right']} | {r['p_value']:.3g} | {verdict} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- error by the true distortion

BINS = 6


def binned(right: dict[tuple[str, int, str], torch.Tensor], params: dict[tuple[str, int], dict]) -> list[dict]:
    """Test error of every model by the true angle, scale and shift (distance of the digit's centre from
    the canvas's centre, px) of the test digits, in BINS equal bins over the range they span; a
    parameter that does not vary is left out."""
    out = []
    for (variant, seed), p in params.items():
        if not {"angle", "scale", "shift"} <= set(p):
            continue
        measures = {"angle": p["angle"].cpu().double(), "scale": p["scale"].cpu().double(), "shift": p["shift"].cpu().double().norm(dim=1)}
        for key, v in measures.items():
            lo, hi = float(v.min()), float(v.max())
            if hi - lo < 1e-6:
                continue
            which = ((v - lo) / (hi - lo) * BINS).long().clamp(0, BINS - 1)
            edges = [lo + (hi - lo) * i / BINS for i in range(BINS + 1)]
            for (v2, s2, model), ok in right.items():
                if (v2, s2) != (variant, seed):
                    continue
                errors = [round(100.0 * float((~ok[which == b]).float().mean()), 2) if bool((which == b).any()) else None for b in range(BINS)]
                counts = [int((which == b).sum()) for b in range(BINS)]
                out.append({"variant": variant, "seed": seed, "model": model, "by": key, "edges": [round(e, 3) for e in edges], "error": errors, "n": counts})
    return out


def binned_markdown(rows: list[dict]) -> str:
    units = {"angle": "degrees", "scale": "", "shift": "px from the centre"}
    parts = ["**Test error % by the true distortion of the digits** (best checkpoints; equal bins over the range the test digits span)", ""]
    for variant, seed, by in dict.fromkeys((r["variant"], r["seed"], r["by"]) for r in rows):
        mine = [r for r in rows if (r["variant"], r["seed"], r["by"]) == (variant, seed, by)]
        e = mine[0]["edges"]
        heads = [f"{e[i]:.3g} to {e[i + 1]:.3g} ({mine[0]['n'][i]})" for i in range(len(e) - 1)]
        parts.append(f"{variant}, seed {seed}, by {by}{' (' + units[by] + ')' if units[by] else ''}; digits per bin in brackets:")
        parts.append("")
        parts.append("| model | " + " | ".join(heads) + " |")
        parts.append("|---|" + "---:|" * len(heads))
        for r in mine:
            parts.append(f"| {r['model']} | " + " | ".join("-" if x is None else f"{x:.2f}" for x in r["error"]) + " |")
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------- rectification


def residual(theta_model: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, canvas: int) -> dict[str, torch.Tensor]:
    """Where each digit ends up after the transformer: the transformer's theta (its output -> the canvas)
    composed with the true pose (the canvas -> the undistorted digit) is one affine map from what the
    classifier sees to the digit. Its rotation (degrees), log scale and shift (pixels of the 28 px digit)
    are the residual pose. With no transformer (theta = identity) they are the distortion itself."""
    d = geometry.distortion_theta(angle, scale, shift, 28, canvas).double()
    t = theta_model.double()
    lin = d[:, :, :2] @ t[:, :, :2]
    trans = (d[:, :, :2] @ t[:, :, 2:])[..., 0] + d[:, :, 2]
    rot = torch.rad2deg(torch.atan2(lin[:, 1, 0] - lin[:, 0, 1], lin[:, 0, 0] + lin[:, 1, 1]))
    log_scale = 0.5 * torch.log(torch.linalg.det(lin).abs())
    return {"angle": rot, "log_scale": log_scale, "shift": trans * 14.0}  # 14 px: half the digit's side


def _spread(v: torch.Tensor, circular: bool = False) -> tuple[float, float]:
    """(std, width of the central 90%) of one residual; angles are first centred on their circular mean."""
    v = v.double()
    if circular:
        mean = torch.atan2(torch.sin(torch.deg2rad(v)).mean(), torch.cos(torch.deg2rad(v)).mean())
        v = torch.remainder(v - torch.rad2deg(mean) + 180.0, 360.0) - 180.0
    lo, hi = torch.quantile(v, torch.tensor([0.05, 0.95], dtype=v.dtype))
    return float(v.std()), float(hi - lo)


def rectification(model, images: torch.Tensor, params: dict, canvas: int, batch: int = 1000) -> dict | None:
    """The spread of each residual before (the true distortion) and after the model's transformer, for a
    transformer of an affine family at the input on a variant whose only warp is the pose; else None."""
    stn = getattr(model, "stn", None)
    if stn is None or model.at != "input" or transforms.FAMILIES[stn.transform].theta is None or set(params) != {"angle", "scale", "shift"}:
        return None
    was = model.training
    model.eval()
    with torch.inference_mode():
        theta = torch.cat([transforms.theta(stn.transform, model.transform_params(images[i : i + batch])) for i in range(0, len(images), batch)])
    model.train(was)
    p = {k: v.to(theta.device) for k, v in params.items()}
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=theta.device).expand_as(theta)
    before, after = (residual(t, p["angle"], p["scale"], p["shift"], canvas) for t in (eye, theta))
    out = {}
    for key in ("angle", "log_scale"):
        out[f"{key}_std_before"], out[f"{key}_range_before"] = _spread(before[key], key == "angle")
        out[f"{key}_std_after"], out[f"{key}_range_after"] = _spread(after[key], key == "angle")
    # a shift's spread: the root of the summed variances of x and y
    for when, r in (("before", before), ("after", after)):
        out[f"shift_std_{when}"] = math.sqrt(sum(_spread(r["shift"][:, i])[0] ** 2 for i in range(2)))
    return {k: round(v, 4) for k, v in out.items()}


def rectification_markdown(rows: list[dict]) -> str:
    lines = ["**Rectification**: the spread of each test digit's pose before the transformer (its true distortion) "
             "and after it (what the classifier sees). An invariant transformer maps every digit to one pose: "
             "spreads near 0. Angle in degrees, scale as log, shift in pixels of the 28 px digit; std and the "
             "width of the central 90%.", ""]
    lines.append("| variant | seed | model | angle std | angle 90% | log-scale std | log-scale 90% | shift std |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        def pair(key):
            return f"{r[key + '_before']:.3g} -> {r[key + '_after']:.3g}"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['model']} | {pair('angle_std')} | {pair('angle_range')} | "
                     f"{pair('log_scale_std')} | {pair('log_scale_range')} | {pair('shift_std')} |")
    return "\n".join(lines) + "\n"


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """Mean and the half-width of its 95% t-interval over seeds (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    t975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    n = len(values)
    return statistics.mean(values), t975.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n)
