"""What the numbers and the transformer say beyond accuracy: paired significance of two models scored on
the same test digits (McNemar's exact test), and rectification: how much of each test digit's true
distortion is left after the transformer (the transformer's theta composed with the true pose)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from stnexp import pose
from stnexp.models import transforms
from stnexp.results import tables

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


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (each adjusted p <= ALPHA keeps the chance of
    any false "significant" in the family at ALPHA): the i-th smallest of m is multiplied by m - i, and
    the adjusted values are made monotone and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    out, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        out[i] = running
    return out


def paired_rows(
    right: dict[tuple[str, int, str], torch.Tensor], errors: dict[tuple[str, int, str], float]
) -> list[dict]:
    """McNemar for every pair of models scored on the same (variant, seed) test digits; the pairs of one
    (variant, seed) are one family, their p-values adjusted by Holm's method, and `significant` is read
    from the adjusted p (a config of 8 models makes 28 pairs: unadjusted, chance alone would give about
    1.4 of them p < 0.05)."""
    out = []
    for variant, seed in dict.fromkeys((v, s) for v, s, _ in right):
        names = [m for v, s, m in right if (v, s) == (variant, seed)]
        family = []
        for i, a in enumerate(names):
            for bname in names[i + 1 :]:
                b, c, p = mcnemar(right[(variant, seed, a)], right[(variant, seed, bname)])
                family.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "model_a": a,
                        "model_b": bname,
                        "error_a": errors[(variant, seed, a)],
                        "error_b": errors[(variant, seed, bname)],
                        "only_a_right": b,
                        "only_b_right": c,
                        "p_raw": p,
                    }
                )
        for r, adjusted in zip(family, holm([r["p_raw"] for r in family])):
            p = r.pop("p_raw")
            out.append(
                {
                    **r,
                    "p_value": float(f"{p:.3g}"),
                    "p_holm": float(f"{adjusted:.3g}"),
                    "pairs": len(family),
                    "significant": adjusted < ALPHA,
                }
            )
    return out


def paired_markdown(rows: list[dict]) -> str:
    lines = [
        f"**Paired test digits: McNemar's exact test per pair of models** (best checkpoints; p: raw; p Holm: adjusted "
        f"by Holm's method over the pairs of the same variant and seed; significant: p Holm < {ALPHA}). It "
        "compares two trained networks on one draw of test digits: whether these networks differ, not whether "
        "one recipe beats the other over training seeds (that is the test across seeds)",
        "",
    ]
    head = ["variant", "seed", "model A", "model B", "error A %", "error B %", "only A right", "only B right"]
    head += ["p", "p Holm", ""]
    cells = [
        [r["variant"], str(r["seed"]), r["model_a"], r["model_b"], f"{r['error_a']:.2f}", f"{r['error_b']:.2f}"]
        + [str(r["only_a_right"]), str(r["only_b_right"]), f"{r['p_value']:.3g}", f"{r['p_holm']:.3g}"]
        + ["significant" if r["significant"] else "not significant"]
        for r in rows
    ]
    return "\n".join(lines) + "\n" + tables.markdown(head, cells, {1, 4, 5, 6, 7, 8, 9})


# ---------------------------------------------------------------- recipes across training seeds

MIN_SEEDS = 3


def across_seeds(errors: dict[tuple[str, int, str], float]) -> list[dict]:
    """A paired t-test across training seeds for every pair of models of a variant with at least
    MIN_SEEDS seeds in common: on the per-seed differences of their test errors (seed s of A against
    seed s of B, which saw the same batches), the mean difference A - B with its 95% t-interval, the
    two-sided p (scipy's ttest_rel) and Holm's adjustment over the variant's pairs. Unlike McNemar, which
    holds two trained networks and one test draw fixed, it asks whether recipe A beats recipe B over
    the randomness of training; with 3 seeds it has 2 degrees of freedom and sees only large effects."""
    out = []
    for variant in dict.fromkeys(v for v, _, _ in errors):
        names = list(dict.fromkeys(m for v, _, m in errors if v == variant))
        family = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                seeds = sorted(s for v, s, m in errors if (v, m) == (variant, a) and (variant, s, b) in errors)
                if len(seeds) >= MIN_SEEDS:
                    family.append(
                        _paired_t(
                            variant, a, b, [(errors[(variant, s, a)], errors[(variant, s, b)]) for s in seeds], seeds
                        )
                    )
        defined = [r for r in family if r["p_raw"] is not None]
        adjusted = dict(zip(map(id, defined), holm([r["p_raw"] for r in defined])))
        for r in family:
            p, held = r.pop("p_raw"), adjusted.get(id(r))
            out.append(
                {
                    **r,
                    "p_value": None if p is None else float(f"{p:.3g}"),
                    "p_holm": None if held is None else float(f"{held:.3g}"),
                    "pairs": len(family),
                    "significant": held is not None and held < ALPHA,
                }
            )
    return out


def _paired_t(variant: str, a: str, b: str, pairs: list[tuple[float, float]], seeds: list[int]) -> dict:
    """One pair of models over their common seeds: (error of a, error of b) per seed."""
    from scipy import stats

    first, second = [x for x, _ in pairs], [y for _, y in pairs]
    diffs = [x - y for x, y in pairs]
    mean, half = mean_interval(diffs)
    # identical differences on every seed: no spread, no t statistic (p undefined)
    p = float(stats.ttest_rel(first, second).pvalue) if statistics.stdev(diffs) > 0 else None
    return {
        "variant": variant,
        "model_a": a,
        "model_b": b,
        "seeds": seeds,
        "mean_error_a": round(statistics.mean(first), 4),
        "mean_error_b": round(statistics.mean(second), 4),
        "difference": round(mean, 4),
        "interval": [round(mean - half, 4), round(mean + half, 4)],
        "p_raw": p,
    }


def across_seeds_markdown(rows: list[dict]) -> str:
    lines = [
        f"**Across training seeds: a paired t-test per pair of models** (best checkpoints; on the per-seed "
        f"differences of test error, seed against seed; the 95% t-interval of the mean difference A - B; p Holm: "
        f"adjusted over the pairs of the variant; significant: p Holm < {ALPHA}). It asks whether one recipe beats "
        "the other over the randomness of training, which McNemar, on one trained pair and one test draw, does "
        "not; with few seeds it sees only large differences, and a difference it calls not significant may "
        "still be real.",
        "",
    ]
    head = ["variant", "model A", "model B", "seeds", "error A %", "error B %", "A - B", "95% interval", "p"]
    head += ["p Holm", ""]

    def p(v):
        return "n/a" if v is None else f"{v:.3g}"

    cells = [
        [r["variant"], r["model_a"], r["model_b"], str(len(r["seeds"])), f"{r['mean_error_a']:.2f}"]
        + [f"{r['mean_error_b']:.2f}", f"{r['difference']:+.2f}"]
        + [f"[{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}]", p(r["p_value"]), p(r["p_holm"])]
        + ["significant" if r["significant"] else "not significant"]
        for r in rows
    ]
    return "\n".join(lines) + "\n" + tables.markdown(head, cells, {3, 4, 5, 6, 8, 9})


# ---------------------------------------------------------------- error by the true distortion

BINS = 6  # at most this many bins a part
NICE_STEPS = (1.0, 2.0, 2.5, 5.0)  # bin widths: these times a power of ten
ANGLE_STEPS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 90.0)  # degrees: edges read -45, -30, ..., 45
FEW_DIGITS = 100  # a bin with fewer test digits than this is marked in the plot: its error is a rough one


def round_edges(lo: float, hi: float, steps: tuple[float, ...] | None = None) -> list[float]:
    """Bin edges at multiples of a round width, the narrowest that covers [lo, hi] with at most BINS bins:
    one of `steps`, or 1, 2, 2.5 or 5 times a power of ten."""
    rough = (hi - lo) / BINS
    if steps is None:
        power = math.floor(math.log10(rough))
        steps = tuple(nice * 10.0**p for p in (power, power + 1) for nice in NICE_STEPS)
    for step in (*sorted(steps), 10.0 ** math.ceil(math.log10(hi - lo))):
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if last - first <= BINS:
            return [round(k * step, 10) for k in range(first, last + 1)]
    raise AssertionError("a power of ten at least the range always fits")


def error_interval(wrong: int, n: int) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 95% interval of an error rate of `wrong` in `n` digits, in %."""
    # the beta quantiles of scipy.stats.binomtest(...).proportion_ci(method="exact"), from scipy.special:
    # scipy.stats takes 1.7 s to import, a tenth of a short run, and every run bins its errors
    from scipy.special import betaincinv

    low = 0.0 if wrong == 0 else float(betaincinv(wrong, n - wrong + 1, 0.025))
    high = 1.0 if wrong == n else float(betaincinv(wrong + 1, n - wrong, 0.975))
    return round(100.0 * low, 2), round(100.0 * high, 2)


def binned(right: dict[tuple[str, int, str], torch.Tensor], params: dict[tuple[str, int], dict]) -> list[dict]:
    """Test error of every model by the true angle, scale and shift (distance of the digit's centre from
    the canvas's centre, px) of the test digits, in bins of a round width over the range they span, each
    with its digits and the 95% interval of its error; a parameter that does not vary is left out."""
    out = []
    for (variant, seed), p in params.items():
        if not set(pose.NAMES) <= set(p):
            continue
        measures = {part.name: part.measure(p[part.name].cpu().double()) for part in pose.PARTS}
        for key, v in measures.items():
            lo, hi = float(v.min()), float(v.max())
            if hi - lo < 1e-6:
                continue
            edges = round_edges(lo, hi, ANGLE_STEPS if key == pose.ANGLE.name else None)
            # right-open bins, the last one closed: a digit at the top edge counts in the last bin
            which = (torch.bucketize(v, torch.tensor(edges[1:-1], dtype=v.dtype), right=True)).clamp(0, len(edges) - 2)
            counts = [int((which == b).sum()) for b in range(len(edges) - 1)]
            for (v2, s2, model), ok in right.items():
                if (v2, s2) != (variant, seed):
                    continue
                wrong = [int((~ok.cpu()[which == b]).sum()) for b in range(len(counts))]
                out.append(
                    {
                        "variant": variant,
                        "seed": seed,
                        "model": model,
                        "by": key,
                        "edges": edges,
                        "error": [round(100.0 * w / n, 2) if n else None for w, n in zip(wrong, counts)],
                        "interval": [list(error_interval(w, n)) if n else None for w, n in zip(wrong, counts)],
                        "n": counts,
                    }
                )
    return out


def binned_markdown(rows: list[dict]) -> str:
    units = {part.name: "" if part is pose.SCALE else part.unit for part in pose.PARTS}
    parts = [
        "**Test error % by the true distortion of the digits** (best checkpoints; bins of a round width over the "
        "range the test digits span; each error with its exact 95% interval in brackets)",
        "",
    ]
    for variant, seed, by in dict.fromkeys((r["variant"], r["seed"], r["by"]) for r in rows):
        mine = [r for r in rows if (r["variant"], r["seed"], r["by"]) == (variant, seed, by)]
        e = mine[0]["edges"]
        heads = [f"{e[i]:g} to {e[i + 1]:g} ({mine[0]['n'][i]:,})" for i in range(len(e) - 1)]
        parts.append(
            f"{variant}, seed {seed}, by {by}{' (' + units[by] + ')' if units[by] else ''}; digits per bin in brackets:"
        )
        parts.append("")
        cells = [
            [r["model"], *(_with_interval(x, r.get("interval"), i) for i, x in enumerate(r["error"]))] for r in mine
        ]
        parts.append(tables.markdown(["model", *heads], cells, set(range(1, len(heads) + 1))))
    return "\n".join(parts)


def _with_interval(error: float | None, intervals: list | None, i: int) -> str:
    if error is None:
        return "-"
    return f"{error:.2f}" + (f" [{intervals[i][0]:.2f}, {intervals[i][1]:.2f}]" if intervals and intervals[i] else "")


# ---------------------------------------------------------------- rectification


def _centred(v: torch.Tensor, circular: bool = False) -> torch.Tensor:
    """v minus its mean (angles in degrees: minus their circular mean, wrapped into [-180, 180))."""
    v = v.double()
    if not circular:
        return v - v.mean()
    mean = torch.atan2(torch.sin(torch.deg2rad(v)).mean(), torch.cos(torch.deg2rad(v)).mean())
    return torch.remainder(v - torch.rad2deg(mean) + 180.0, 360.0) - 180.0


def _spread(v: torch.Tensor, circular: bool = False) -> tuple[float, float]:
    """(std, width of the central 90%) of one residual; angles are first centred on their circular mean."""
    v = _centred(v, circular)
    lo, hi = torch.quantile(v, torch.tensor([0.05, 0.95], dtype=v.dtype, device=v.device))
    return float(v.std()), float(hi - lo)


SCALAR = (pose.ANGLE, pose.SCALE)  # the parts whose residual is one number per digit (a shift's is two)


@dataclass
class Rectified:
    """One transformer's rectification: `row` the spreads for the table (and analysis.json), `true` and
    `undone` per pose part (angle, log_scale, shift: its x values, then its y values) the true distortion
    of each test digit and how much of it the transformer took away (true minus residual), each about its
    mean over the digits, for the scatter."""

    row: dict
    true: dict[str, torch.Tensor]
    undone: dict[str, torch.Tensor]


def unmeasured(model, params: dict) -> str | None:
    """Why rectification is not measured for `model` on a test set whose digits drew `params` (None: it
    is): it reads each digit's true pose and the transformer's affine theta, so it needs both."""
    stn = getattr(model, "stn", None)
    if stn is None:
        return "no transformer"
    if transforms.FAMILIES[stn.transform].theta is None:
        return f"the {stn.transform} family has no affine theta to compare with the pose"
    if model.at == "conv1" and getattr(model, "conv1_kernel", None) is None:
        return "its backbone declares no conv1 frame (conv1_kernel) to read a conv1 theta in"
    other = sorted(set(params) - set(pose.NAMES))
    if other:
        return f"the variant warps more than the pose ({', '.join(other)}), so a digit's distortion is no pose"
    missing = sorted(set(pose.NAMES) - set(params))
    return f"the test set keeps no true {', '.join(missing)} of its digits" if missing else None


def unmeasured_markdown(rows: list[dict]) -> str:
    lines = [f"- {r['model']} on {r['variant']}, seed {r['seed']}: {r['why']}" for r in rows]
    return "**Rectification not measured**:\n\n" + "\n".join(lines) + "\n"


def rectification(model, images: torch.Tensor, params: dict, canvas: int, batch: int = 1000) -> Rectified | None:
    """The spread of each residual before (the true distortion) and after the model's transformer, for a
    transformer of an affine family on a variant whose only warp is the pose; else None. At conv1 theta
    warps the feature maps: it is read in the image's coordinates (see `_in_image`)."""
    if unmeasured(model, params) is not None:
        return None
    stn = model.stn
    family = transforms.FAMILIES[stn.transform]
    was = model.training
    model.eval()
    with torch.inference_mode():
        theta = torch.cat(
            [
                transforms.theta(stn.transform, model.transform_params(images[i : i + batch]))
                for i in range(0, len(images), batch)
            ]
        )
    model.train(was)
    if model.at == "conv1":
        theta = _in_image(theta, canvas, model.conv1_kernel)
    p = {k: v.to(theta.device) for k, v in params.items()}
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=theta.device).expand_as(theta)
    before, after = (pose.residual(t, p, canvas) for t in (eye, theta))
    row: dict = {}
    for part in SCALAR:
        key = part.residual
        row[f"{key}_std_before"], row[f"{key}_range_before"] = _spread(before[key], part.circular)
        row[f"{key}_std_after"], row[f"{key}_range_after"] = _spread(after[key], part.circular)
    # a shift's spread: the root of the summed variances of x and y
    for when, r in (("before", before), ("after", after)):
        row[f"{pose.SHIFT.residual}_std_{when}"] = math.sqrt(
            sum(_spread(r[pose.SHIFT.residual][:, i])[0] ** 2 for i in range(2))
        )
    row = {k: round(v, 4) for k, v in row.items()}
    row["at"] = model.at
    row["cannot"] = [part for part in pose.NAMES if part not in family.moves]
    # both about their means: a transformer that maps every digit to one pose, whichever, lies on y = x
    true = {p.residual: _centred(before[p.residual], p.circular) for p in SCALAR}
    undone = {p.residual: _centred(before[p.residual] - after[p.residual], p.circular) for p in SCALAR}
    # the shift's x and y, each about its own mean, one after the other: two values a digit
    s = pose.SHIFT.residual
    true[s] = torch.cat([_centred(before[s][:, i]) for i in range(2)])
    undone[s] = torch.cat([_centred(before[s][:, i] - after[s][:, i]) for i in range(2)])
    return Rectified(row, {k: v.cpu() for k, v in true.items()}, {k: v.cpu() for k, v in undone.items()})


def _in_image(theta: torch.Tensor, canvas: int, kernel: int) -> torch.Tensor:
    """A conv1 transformer's theta in the image's normalised coordinates. Feature map pixel j (after the
    valid KxK convolution and the 2x2 pool) is centred on image pixel 2j + 0.5 + (K - 1) / 2, so the
    maps span (canvas - K + 1) / canvas of the image around the same centre: the linear part is the same
    in both frames, the shift shrinks by that ratio."""
    ratio = (canvas - kernel + 1) / canvas
    return torch.cat([theta[:, :, :2], theta[:, :, 2:] * ratio], 2)


def rectification_markdown(rows: list[dict]) -> str:
    lines = [
        "**Rectification**: the spread of each test digit's pose before the transformer (its true distortion) "
        "and after it (what the classifier sees). An invariant transformer maps every digit to one pose: "
        "spreads near 0. Angle in degrees, scale as log, shift in pixels of the 28 px digit; std and the "
        "width of the central 90%. A transformer after conv1 warps feature maps; its theta is read in the "
        "image's coordinates.",
        "",
    ]
    # a column per spread: std and central 90% of each part read as one number, the std of the shift
    columns = [
        (p, f"{p.residual}_{what}", f"{p.residual.replace('_', '-')} {label}")
        for p in SCALAR
        for what, label in (("std", "std"), ("range", "90%"))
    ] + [(pose.SHIFT, "shift_std", "shift std")]
    cells = []
    for r in rows:
        cannot = r.get("cannot", [])

        def pair(key, part):
            after = f"({part.cannot})" if part.name in cannot else f"{r[key + '_after']:.3g}"
            return f"{r[key + '_before']:.3g} -> {after}"

        model = r["model"] + (" (at conv1)" if r.get("at") == "conv1" else "")
        cells.append([r["variant"], str(r["seed"]), model, *(pair(key, part) for part, key, _ in columns)])
    head = ["variant", "seed", "model", *(label for *_, label in columns)]
    return "\n".join(lines) + "\n" + tables.markdown(head, cells, {1, *range(3, len(head))})


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """Mean and the half-width of its 95% t-interval over seeds (None for fewer than 2 values): Student's
    t quantile with n - 1 degrees of freedom, exact for any n (scipy)."""
    if len(values) < 2:
        return None
    from scipy.stats import t  # here, not at import: scipy takes a moment to load and most commands need none of it

    n = len(values)
    return statistics.mean(values), float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
