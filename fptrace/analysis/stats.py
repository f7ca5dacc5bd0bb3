"""Small, dependency-free statistics for benchmark results (pyperf/benchstat style).

Medians with bootstrap 95 % intervals, relative spread for instability warnings, a
Mann-Whitney U test for "is this different" (exact for the small sample sizes benchmarks
have, normal approximation beyond), and a least-squares slope with a bootstrap interval.
Deterministic: every resampling uses a fixed seed.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

UNSTABLE_RSD = 0.10  # pyperf warns when the standard deviation is >10 % of the mean
ALPHA = 0.05


def bootstrap(
    statistic: Callable[[random.Random], float | None], n: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """The bootstrap 95 % interval of ``statistic``, which draws its own resamples from the
    generator it is given (so that one or two samples, or pairs, are resampled alike): the
    one bootstrap of fptrace, seeded, so that a report is the same every time.  ``None``
    values (a statistic undefined on a resample) are left out; None if all were."""
    rng = random.Random(seed)
    values = sorted(v for v in (statistic(rng) for _ in range(n)) if v is not None)
    if not values:
        return None
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def resample(rng: random.Random, xs: Sequence[Any]) -> list[Any]:
    """A bootstrap resample of ``xs`` (as many draws, with replacement)."""
    return rng.choices(xs, k=len(xs))


def median_ci(xs: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median and a bootstrap 95 % interval of it."""
    if not xs:
        raise ValueError("no samples")
    med = statistics.median(xs)
    if len(xs) == 1:
        return med, med, med
    ci = bootstrap(lambda rng: statistics.median(resample(rng, xs)), n, seed)
    assert ci is not None  # a median is always defined
    return med, *ci


def rsd(xs: Sequence[float]) -> float:
    """Relative standard deviation (0 for fewer than two samples)."""
    if len(xs) < 2:
        return 0.0
    mean = statistics.fmean(xs)
    return statistics.stdev(xs) / mean if mean else 0.0


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (exact when the enumeration is small)."""
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return 1.0
    pooled = sorted((v, i) for i, v in enumerate([*a, *b]))
    ranks = [0.0] * (na + nb)
    i = 0
    while i < len(pooled):  # average ranks over ties
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[pooled[k][1]] = (i + j) / 2 + 1
        i = j + 1
    r_a = sum(ranks[:na])
    u = r_a - na * (na + 1) / 2
    mean_u = na * nb / 2
    if math.comb(na + nb, na) <= 50_000:
        observed = abs(u - mean_u)
        extreme = total = 0
        for combo in itertools.combinations(range(na + nb), na):
            u_c = sum(ranks[k] for k in combo) - na * (na + 1) / 2
            total += 1
            if abs(u_c - mean_u) >= observed - 1e-9:
                extreme += 1
        return extreme / total
    sd = math.sqrt(na * nb * (na + nb + 1) / 12)
    if sd == 0:
        return 1.0
    z = (abs(u - mean_u) - 0.5) / sd
    return math.erfc(z / math.sqrt(2))


def slope_ci(
    x: Sequence[float], y: Sequence[float], n: int = 2000, seed: int = 0
) -> tuple[float, float, float] | None:
    """Least-squares slope of y on x with a bootstrap 95 % interval; None if x is constant."""
    pts = list(zip(x, y, strict=True))

    def fit(sample: list[tuple[float, float]]) -> float | None:
        mx = statistics.fmean(p[0] for p in sample)
        my = statistics.fmean(p[1] for p in sample)
        sxx = sum((p[0] - mx) ** 2 for p in sample)
        if sxx == 0:
            return None
        return sum((p[0] - mx) * (p[1] - my) for p in sample) / sxx

    slope = fit(pts)
    if slope is None:
        return None
    ci = bootstrap(lambda rng: fit(resample(rng, pts)), n, seed)
    return (slope, slope, slope) if ci is None else (slope, *ci)


def intercept(x: Sequence[float], y: Sequence[float], slope: float) -> float:
    return statistics.fmean(y) - slope * statistics.fmean(x)
