"""The statistics of the verification cases: tests with a level, a verdict and a power.

Every comparison a case makes is one :class:`Comparison`. Statistical ones
carry a p-value; :func:`finalize` sets their level to ``ALPHA / m``, with m
the number of statistical comparisons of the case (Bonferroni), decides PASS
or FAIL, and states the power of each: the smallest deviation it detects
with 90 % probability at that level. Deterministic ones (the plasma
kinetics) compare a number with its exact value within a stated relative
tolerance; their power is that tolerance.

The tests (two-sided throughout):

- ``mean``: a sample mean against its expected value, z = (mean - expected) / SE
  with SE = sd / sqrt(n); detectable deviation (z_crit + z_0.9) SE.
- ``difference``: two sample means, SE = sqrt(se_a^2 + se_b^2); same power.
- ``ks``: two-sample (or one-sample) Kolmogorov-Smirnov; detectable: the
  sup-distance between the distribution functions at which the asymptotic
  test rejects, sqrt(-ln(level / 2) / 2) sqrt((n + m) / (n m)) (about 50 %
  power; 90 % needs about 1.3 times that).
- ``binomial``: an observed count of successes against a probability
  (exact binomial test); detectable (z_crit + z_0.9) sqrt(p (1 - p) / n).
- ``proportions``: two observed proportions (pooled z test).
- ``chi2``: counts in categories against probabilities; detectable: Cohen's
  effect size w = sqrt(sum (p_obs - p)^2 / p) at 90 % power (non-central
  chi-square).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize, stats

#: the family-wise level of every case (its comparisons share it, Bonferroni)
ALPHA = 1e-3
#: power stated for each comparison
POWER = 0.9
Z_POWER = float(stats.norm.isf(1 - POWER))


@dataclass
class Comparison:
    """One comparison of a case: what, the observed and expected numbers, the verdict."""

    name: str
    kind: str
    observed: float
    expected: float
    se: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    n: int | None = None
    m: int | None = None  # second sample size
    tolerance: float | None = None  # relative, for exact comparisons
    level: float | None = None
    detectable: float | None = None
    passed: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def statistical(self) -> bool:
        return self.kind != "exact"

    def as_dict(self) -> dict:
        return {k: _plain(v) for k, v in asdict(self).items()}


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def z_critical(level: float) -> float:
    return float(stats.norm.isf(level / 2))


def _z_p(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def mean(name: str, values, expected: float, note: str = "") -> Comparison:
    """Sample mean of ``values`` against ``expected``."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.inf
    if se == 0.0:
        z = 0.0 if m == expected else math.inf
    else:
        z = (m - expected) / se
    return Comparison(name, "mean", m, float(expected), se=se, statistic=z, p_value=_z_p(z), n=int(x.size),
                      note=note)


def difference(name: str, a, b, note: str = "") -> Comparison:
    """Mean of sample ``a`` against mean of sample ``b``."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    d = float(x.mean() - y.mean())
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    z = (0.0 if d == 0 else math.inf) if se == 0.0 else d / se
    return Comparison(name, "difference", float(x.mean()), float(y.mean()), se=se, statistic=z,
                      p_value=_z_p(z), n=int(x.size), m=int(y.size), note=note)


def ks(name: str, a, b, note: str = "") -> Comparison:
    """Two-sample Kolmogorov-Smirnov test (equal constant samples agree)."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        same = x[0] == y[0]
        return Comparison(name, "ks", float(np.median(x)), float(np.median(y)), statistic=0.0 if same else 1.0,
                          p_value=1.0 if same else 0.0, n=int(x.size), m=int(y.size), note=note)
    res = stats.ks_2samp(x, y)
    return Comparison(name, "ks", float(np.median(x)), float(np.median(y)), statistic=float(res.statistic),
                      p_value=float(res.pvalue), n=int(x.size), m=int(y.size), note=note)


def ks_one(name: str, values, cdf, note: str = "") -> Comparison:
    """One-sample Kolmogorov-Smirnov test against a distribution function."""
    x = np.asarray(values, dtype=float)
    res = stats.kstest(x, cdf)
    return Comparison(name, "ks", float(np.median(x)), float("nan"), statistic=float(res.statistic),
                      p_value=float(res.pvalue), n=int(x.size), note=note)


def binomial(name: str, successes: int, trials: int, p: float, note: str = "") -> Comparison:
    """Exact binomial test of ``successes`` in ``trials`` against probability ``p``."""
    res = stats.binomtest(int(successes), int(trials), p)
    se = math.sqrt(p * (1 - p) / trials)
    obs = successes / trials
    return Comparison(name, "binomial", obs, p, se=se, statistic=(obs - p) / se if se else 0.0,
                      p_value=float(res.pvalue), n=int(trials), note=note)


def proportions(name: str, k1: int, n1: int, k2: int, n2: int, note: str = "") -> Comparison:
    """Two proportions, pooled z test."""
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (0.0 if p1 == p2 else math.inf) if se == 0 else (p1 - p2) / se
    return Comparison(name, "proportions", p1, p2, se=se, statistic=z, p_value=_z_p(z), n=int(n1), m=int(n2),
                      note=note)


def chi2(name: str, observed, probabilities, note: str = "", min_expected: float = 5.0) -> Comparison:
    """Chi-square goodness of fit; categories with expected counts below ``min_expected`` are pooled
    into the last kept one (the tail)."""
    obs = np.asarray(observed, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    p = p / p.sum()
    n = obs.sum()
    exp = p * n
    small = np.flatnonzero(exp < min_expected)
    keep = max(2, int(small[0]) if small.size else len(exp))
    obs_k = np.concatenate([obs[: keep - 1], [obs[keep - 1:].sum()]])
    exp_k = np.concatenate([exp[: keep - 1], [exp[keep - 1:].sum()]])
    res = stats.chisquare(obs_k, exp_k)
    return Comparison(name, "chi2", float(res.statistic), float(keep - 1), statistic=float(res.statistic),
                      p_value=float(res.pvalue), n=int(n), note=note, extra={"categories": int(keep)})


def exact(name: str, observed: float, expected: float, tolerance: float, note: str = "") -> Comparison:
    """A deterministic number against its exact value, within ``tolerance`` (relative)."""
    rel = abs(observed - expected) / abs(expected) if expected else abs(observed)
    return Comparison(name, "exact", float(observed), float(expected), statistic=rel, tolerance=tolerance,
                      passed=bool(rel <= tolerance), detectable=tolerance, note=note)


def _chi2_w(df: int, n: int, level: float) -> float:
    crit = stats.chi2.isf(level, df)
    lam = optimize.brentq(lambda nc: stats.ncx2.sf(crit, df, nc) - POWER, 1e-6, 1e4)
    return math.sqrt(lam / n)


def finalize(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Set the Bonferroni level of each statistical comparison, its verdict and its power."""
    m = sum(c.statistical for c in comparisons)
    level = alpha / max(m, 1)
    zc = z_critical(level)
    for c in comparisons:
        if not c.statistical:
            continue
        c.level = level
        c.passed = bool(c.p_value is not None and c.p_value > level)
        if c.kind in ("mean", "difference", "binomial", "proportions") and c.se is not None:
            c.detectable = (zc + Z_POWER) * c.se if math.isfinite(c.se) else math.inf
        elif c.kind == "ks":
            size = c.n if c.m is None else c.n * c.m / (c.n + c.m)
            c.detectable = math.sqrt(-math.log(level / 2) / 2) / math.sqrt(size)
        elif c.kind == "chi2":
            c.detectable = _chi2_w(int(c.extra.get("categories", 2)) - 1, int(c.n), level)
    return comparisons
