"""The transfer study's paired rule (benchmarks/paired_stats.py) against independent
recomputations: tabulated t critical values, mpmath's incomplete beta function, the t statistic
recomputed with NumPy, and the MDE's power checked by simulating the study."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "_bench_paired_stats", REPO / "benchmarks" / "paired_stats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ps = _module()


@pytest.mark.parametrize("df,p,table", [(1, 0.975, 12.706), (7, 0.975, 2.365), (9, 0.975, 2.262),
                                        (7, 0.80, 0.896), (30, 0.95, 1.697)])
def test_t_quantiles_match_the_printed_tables(df, p, table):
    assert ps.t_quantile(p, df) == pytest.approx(table, abs=1e-3)


def test_t_cdf_matches_mpmath():
    mpmath = pytest.importorskip("mpmath")
    for t in (-3.1, -0.4, 0.0, 0.7, 2.5, 6.0):
        for df in (1, 3, 7, 20):
            x = df / (df + t * t)
            tail = 0.5 * float(mpmath.betainc(df / 2, 0.5, 0, x, regularized=True))
            expected = 1 - tail if t >= 0 else tail
            assert ps.t_cdf(t, df) == pytest.approx(expected, abs=1e-12)


def test_paired_test_matches_a_numpy_recomputation():
    a = [12.1, 10.4, 13.0, 11.7, 12.9, 10.8, 11.5, 12.6]
    b = [10.9, 10.1, 11.8, 11.9, 11.2, 10.0, 11.1, 11.0]
    res = ps.paired_test(a, b)
    d = np.asarray(a) - np.asarray(b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert res.n == 8 and res.mean_diff == pytest.approx(d.mean())
    assert res.sd_diff == pytest.approx(d.std(ddof=1)) and res.t == pytest.approx(t)
    mpmath = pytest.importorskip("mpmath")
    p = float(mpmath.betainc(3.5, 0.5, 0, 7 / (7 + t * t), regularized=True))  # two-sided
    assert res.p == pytest.approx(p, rel=1e-9)
    assert res.outcome == "A better" and ps.verdict("A better", res) == "reproduced"
    assert ps.verdict("B better", res) == "contradicted"
    # lower-is-better figures flip the sign: the same numbers as RMSE favour B
    assert ps.paired_test(a, b, higher_is_better=False).outcome == "B better"


def test_mde_has_the_stated_power_in_a_simulated_study():
    """Simulate 20,000 studies of 8 seeds whose true mean difference is the MDE: the test
    rejects in about 80 % of them (and in about 5 % when there is no difference)."""
    n, sd = 8, 1.7
    mde = ps.mde(sd, n)
    # the usual normal-theory approximation (t quantiles added) is close to the exact value
    approx = (ps.t_quantile(0.975, n - 1) + ps.t_quantile(0.8, n - 1)) * sd / math.sqrt(n)
    assert mde == pytest.approx(approx, rel=0.02)
    rng = np.random.default_rng(0)
    crit = ps.t_quantile(0.975, n - 1)
    for true_mean, expected in ((mde, 0.80), (0.0, 0.05)):
        d = rng.normal(true_mean, sd, size=(20000, n))
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
        assert np.mean(np.abs(t) > crit) == pytest.approx(expected, abs=0.015)


def test_no_effect_is_never_reproduced():
    a = [1.0, 1.2, 0.9, 1.1, 1.0, 0.95, 1.05, 1.1]
    b = [1.05, 1.0, 1.0, 1.15, 0.9, 1.0, 1.1, 1.0]
    res = ps.paired_test(a, b)
    assert res.outcome == "no effect detected"
    for claim in ("A better", "no effect"):
        assert ps.verdict(claim, res) == f"no effect detected (MDE {res.mde:.3g})"
    assert ps.verdict("A better", res, min_effect=res.mde / 2).endswith(": underpowered)")
    assert ps.verdict("A better", res, min_effect=res.mde * 2) == \
        f"no effect detected (MDE {res.mde:.3g})"
    strong = ps.paired_test([x + 1 for x in a], a)
    assert ps.verdict("no effect", strong) == "contradicted"
    # a significant difference smaller than what matters is not an effect that matters
    assert ps.verdict("no effect", strong, min_effect=2.0).startswith("effect detected, below")
    assert ps.verdict("A better", strong, min_effect=2.0).startswith("reproduced, below")
    with pytest.raises(ValueError, match="values"):
        ps.paired_test([1.0, 2.0], [1.0])
