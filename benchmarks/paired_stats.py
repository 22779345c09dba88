"""The paired rule of the transfer study (issue 19), fixed before any of its results: a two-sided
paired t-test on the per-seed differences, its minimum detectable effect (MDE) and the wording
of the verdicts.

Why a paired t-test (and not Wilcoxon's signed-rank test): every arm of a seed shares that
seed's split and initialisation, so the per-seed difference removes the seed-to-seed spread the
old unpaired 2-s rule carried; each per-seed figure is an average over thousands of pixels of
150 validation frames, so the differences are close to normal; and the t-test has a power
function, so the MDE of each comparison can be stated next to the paper's effect. With 8 seeds
Wilcoxon's test cannot go below p = 2/256 and its power depends on the unknown shape of the
differences, so it cannot give an MDE to pre-register.

Definitions (n seeds, differences d_i = a_i - b_i, sign-adjusted so that positive favours A):
t = mean(d) / (sd(d) / sqrt(n)), df = n - 1, two-sided p. The MDE is the true mean difference
the test detects with probability ``power`` at level ``alpha`` given the observed sd(d): the
smallest delta with P(|T'| > t_crit) >= power, T' noncentral t with df = n - 1 and
noncentrality delta * sqrt(n) / sd(d) (computed by integrating over the chi-square variable;
the test suite checks it by simulation).

No third-party statistics package is needed (the project has none): the t distribution comes
from the regularised incomplete beta function (continued fraction), checked in the test suite
against mpmath and tabulated critical values.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ALPHA", "POWER", "PairedResult", "paired_test", "t_cdf", "t_quantile",
           "power_at", "mde", "verdict", "RULE"]

#: fixed in advance (benchmarks/preregistration/transfer_study.yaml repeats them)
ALPHA = 0.05
POWER = 0.80

RULE = ("two-sided paired t-test on the per-seed differences (same seed = same split and "
        f"initialisation), alpha {ALPHA}; MDE at power {POWER} from the observed sd of the "
        "differences; a claim of an effect is 'reproduced' when the test rejects in the claimed "
        "direction, 'contradicted' when it rejects in the other, else 'no effect detected "
        "(MDE x)', marked underpowered when x exceeds the pre-registered minimum effect that "
        "matters; a significant difference below that minimum is said to be so; a claim of no "
        "effect is never 'reproduced'.")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile of {p}: p must be in (0, 1)")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def power_at(ncp: float, df: int, alpha: float = ALPHA, points: int = 4000) -> float:
    """Power of the two-sided t-test at noncentrality ``ncp``: P(|Z + ncp| > t_c sqrt(V/df)),
    V ~ chi-square(df), integrated over V (trapezoid on a grid covering its mass)."""
    tc = t_quantile(1.0 - alpha / 2.0, df)
    k = df / 2.0
    log_norm = -(k * math.log(2.0) + math.lgamma(k))
    upper = df + 40.0 * math.sqrt(2.0 * df) + 40.0
    step = upper / points
    total = 0.0
    for i in range(1, points + 1):
        v = i * step
        dens = math.exp(log_norm + (k - 1.0) * math.log(v) - v / 2.0)
        s = tc * math.sqrt(v / df)
        reject = _phi(-s - ncp) + _phi(-s + ncp)
        total += dens * reject * (0.5 if i == points else 1.0)
    return total * step


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean difference for ``n`` pairs with sd of differences ``sd``."""
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd == 0.0:
        return 0.0
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if power_at(mid, n - 1, alpha) < power:
            lo = mid
        else:
            hi = mid
    return hi * sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_diff: float       # mean of a_i - b_i, sign-adjusted (positive favours A)
    sd_diff: float
    t: float
    p: float
    mde: float
    outcome: str           # "A better" | "B better" | "no effect detected"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_test(a: list[float], b: list[float], higher_is_better: bool = True,
                alpha: float = ALPHA, power: float = POWER) -> PairedResult:
    """The paired t-test of per-seed values ``a`` vs ``b`` (same seeds, same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired test: {len(a)} values of A but {len(b)} of B")
    sign = 1.0 if higher_is_better else -1.0
    d = [sign * (x - y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = statistics.fmean(d) if d else float("nan")
    sd = statistics.stdev(d) if n > 1 else float("nan")
    if n < 2:
        t, p = float("nan"), float("nan")
    elif sd == 0.0:
        t = math.copysign(math.inf, mean) if mean else 0.0
        p = 0.0 if mean else 1.0
    else:
        t = mean / (sd / math.sqrt(n))
        p = 2.0 * (1.0 - t_cdf(abs(t), n - 1))
    if math.isfinite(p) and p < alpha:
        outcome = "A better" if mean > 0 else "B better"
    else:
        outcome = "no effect detected"
    return PairedResult(n, mean, sd, t, p, mde(sd, n, alpha, power), outcome)


def verdict(claim: str, result: PairedResult, min_effect: float | None = None) -> str:
    """The wording of a paper's claim ("A better", "B better" or "no effect") against the test.

    ``min_effect`` (the pre-registered smallest difference that matters) qualifies it: a null
    result whose MDE exceeds it is marked underpowered, and a significant difference smaller
    than it is said to be below what matters (a claim of no effect is then not contradicted in
    any way that matters)."""
    if result.outcome == "no effect detected":
        text = f"no effect detected (MDE {result.mde:.3g})"
        if min_effect is not None and result.mde > min_effect:
            text = f"no effect detected (MDE {result.mde:.3g} > {min_effect:.3g}: underpowered)"
        return text
    small = min_effect is not None and abs(result.mean_diff) < min_effect
    if claim == "no effect":
        return (f"effect detected, below the minimum that matters ({min_effect:.3g})" if small
                else "contradicted")
    if result.outcome != claim:
        return "contradicted"
    return (f"reproduced, below the minimum that matters ({min_effect:.3g})" if small
            else "reproduced")
