"""Kernel vs Mesa reference: the same read-out distributions on the same config.

The two engines share the config, the rate tables, the tally and the
read-outs, but not the step logic and not their random streams, so they can
agree only in distribution. For each config we run many seeds per engine and
compare, at several recorded days, the distributions of HSC count, donor
chimerism, mean HSC VCN, clones alive, factor level and occupancy (or, with no
transplant, the host counts and mature compartments):

- two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``): p must exceed
  ``ALPHA / m``;
- the means must agree within their standard errors:
  ``|mean_a - mean_b| < z sqrt(se_a^2 + se_b^2)`` with z the two-sided
  normal quantile at ``ALPHA / m``,

where ``ALPHA = 1e-3`` and m is the number of tests made on the config (two
per quantity and day): Bonferroni over everything that config is tested on.
Counts are discrete with ties, for which KS is conservative (it rejects less
often than its level); the mean test does not have that weakness.

The power test feeds a config with a deliberately broken rule (HSC
self-renewal 0.55 instead of 0.5, a 10 % change) to the kernel only and
requires the same comparison to reject it. Its seed counts follow from the
effect: on the myeloablative config the HSC count at day 20 differs by about
10 % (~8 cells) with a standard deviation of ~12 cells, so 100 Mesa and 200
kernel seeds give a z of about 5.6 against a Bonferroni threshold of 4.3.

Mesa is slow, so the seeds run in worker processes; the many-seed tests are
marked ``slow``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from engraft import load_config, simulate

DATA = Path(__file__).resolve().parent / "data" / "configs"
ALPHA = 1e-3

#: seeds per engine; kernel and Mesa use disjoint ranges (their streams differ anyway)
MESA_SEEDS = 50
KERNEL_SEEDS = 200
#: the myeloablative config also serves the power test, which needs more Mesa seeds
POWER_MESA_SEEDS = 100

TRANSPLANT_QUANTITIES = ("hsc_count", "hsc_chimerism", "hsc_vcn", "clones_alive", "factor_iu_dl",
                         "occupancy")
STEADY_QUANTITIES = ("hsc_count", "MPP_host", "GMP_host", "MkP_host", "occupancy", "myeloid_cells",
                     "platelets_cells")
CASES = {
    # config: (quantities, days, Mesa seeds)
    "steady_state": (STEADY_QUANTITIES, (0.0, 20.0, 40.0, 60.0), MESA_SEEDS),
    "myeloablative": (TRANSPLANT_QUANTITIES, (10.0, 20.0, 30.0, 60.0), POWER_MESA_SEEDS),
    "reduced_intensity": (TRANSPLANT_QUANTITIES, (10.0, 20.0, 30.0, 60.0), MESA_SEEDS),
    # 3D, von Neumann, closed boundary, clustered niches, daughters through the blood
    "pool_3d": (TRANSPLANT_QUANTITIES, (10.0, 20.0, 30.0, 60.0), MESA_SEEDS),
}


# ----------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------
def _quantity(timeseries, name: str):
    if name == "hsc_count":
        return timeseries["HSC_host"] + timeseries["HSC_graft"]
    return timeseries[name]


def _run_seeds(config: str, overrides: tuple[str, ...], engine: str, seeds: tuple[int, ...],
               quantities: tuple[str, ...], days: tuple[float, ...]) -> list[list[float]]:
    """One worker's share: per seed, the quantities at the days (flattened)."""
    exp = load_config(DATA / f"equivalence_{config}.yaml", list(overrides))
    out = []
    for seed in seeds:
        ts = simulate(exp, seed=seed, engine=engine).timeseries.set_index("day")
        out.append([float(_quantity(ts, q).loc[d]) for q in quantities for d in days])
    return out


@cache
def readouts(config: str, engine: str, n_seeds: int, overrides: tuple[str, ...] = (),
             first_seed: int | None = None) -> dict[tuple[str, float], np.ndarray]:
    """{(quantity, day): values over seeds} for one config and engine (cached per session)."""
    quantities, days, _ = CASES[config]
    first = first_seed if first_seed is not None else (0 if engine == "mesa" else 100_000)
    seeds = list(range(first, first + n_seeds))
    workers = max(1, min(os.cpu_count() or 1, 4))
    chunks = [tuple(seeds[i::workers]) for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_seeds, config, overrides, engine, chunk, quantities, days)
                   for chunk in chunks]
        parts = [f.result() for f in futures]
    rows = np.array([row for part in parts for row in part])
    keys = [(q, d) for q in quantities for d in days]
    return {key: rows[:, k] for k, key in enumerate(keys)}


# ----------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantityComparison:
    key: tuple[str, float]
    mean_a: float
    mean_b: float
    z: float  # (mean_a - mean_b) / combined standard error
    ks_pvalue: float
    agree: bool


@dataclass(frozen=True)
class EngineComparison:
    rows: tuple[QuantityComparison, ...]
    alpha: float
    n_tests: int
    z_critical: float

    @property
    def agree(self) -> bool:
        return all(r.agree for r in self.rows)

    def report(self) -> str:
        lines = [f"alpha {self.alpha:g} over {self.n_tests} tests: KS p > {self.alpha / self.n_tests:.2g}, "
                 f"|z| < {self.z_critical:.2f}"]
        for r in sorted(self.rows, key=lambda r: r.ks_pvalue):
            lines.append(f"  {r.key[0]:>16} day {r.key[1]:5g}: {r.mean_a:10.4g} vs {r.mean_b:10.4g}  "
                         f"z {r.z:+6.2f}  KS p {r.ks_pvalue:.3g}{'' if r.agree else '  <-- differs'}")
        return "\n".join(lines)


def compare_engines(a: dict, b: dict, alpha: float = ALPHA) -> EngineComparison:
    """Compare two samples of read-outs, quantity by quantity (see the module docstring).

    NaN values (e.g. chimerism with no HSC left) are dropped. A quantity that
    is constant in both samples agrees only if the constants are equal.
    """
    n_tests = 2 * len(a)
    level = alpha / n_tests
    z_critical = float(stats.norm.isf(level / 2))
    rows = []
    for key in a:
        x = a[key][~np.isnan(a[key])]
        y = b[key][~np.isnan(b[key])]
        assert x.size >= 10 and y.size >= 10, f"{key}: too few defined values ({x.size}, {y.size})"
        diff = float(x.mean() - y.mean())
        se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
        if se == 0.0:
            z, p, agree = 0.0 if diff == 0 else math.inf, 1.0 if diff == 0 else 0.0, diff == 0
        else:
            z = diff / se
            p = float(stats.ks_2samp(x, y).pvalue)
            agree = p > level and abs(z) < z_critical
        rows.append(QuantityComparison(key, float(x.mean()), float(y.mean()), z, p, agree))
    return EngineComparison(tuple(rows), alpha, n_tests, z_critical)


# ----------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------
def test_comparison_accepts_one_distribution_and_rejects_a_shift():
    """The comparison itself, on synthetic samples: no false alarm, and power against a shift."""
    rng = np.random.default_rng(7)
    keys = [("q", float(d)) for d in range(6)]
    same_a = {k: rng.poisson(20, 60).astype(float) for k in keys}
    same_b = {k: rng.poisson(20, 200).astype(float) for k in keys}
    assert compare_engines(same_a, same_b).agree
    shifted = {**same_b, keys[2]: rng.poisson(24, 200).astype(float)}
    result = compare_engines(same_a, shifted)
    assert not result.agree
    assert [r.key for r in result.rows if not r.agree] == [keys[2]]


def test_comparison_of_constants():
    a = {("x", 0.0): np.zeros(20)}
    assert compare_engines(a, {("x", 0.0): np.zeros(30)}).agree
    assert not compare_engines(a, {("x", 0.0): np.ones(30)}).agree


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CASES))
def test_engines_agree(config):
    _, _, mesa_seeds = CASES[config]
    mesa = readouts(config, "mesa", mesa_seeds)
    kernel = readouts(config, "kernel", KERNEL_SEEDS)
    result = compare_engines(mesa, kernel)
    print(f"\n{config}: Mesa {mesa_seeds} seeds vs kernel {KERNEL_SEEDS} seeds\n{result.report()}")
    assert result.agree, result.report()


def test_steady_state_has_no_graft_in_either_engine():
    """Without a transplant nothing graft-derived appears and the factor stays at baseline."""
    for engine in ("mesa", "kernel"):
        exp = load_config(DATA / "equivalence_steady_state.yaml")
        ts = simulate(exp, seed=3, engine=engine).timeseries
        assert (ts["HSC_graft"] == 0).all() and (ts["clones_alive"] == 0).all()
        assert (ts["factor_iu_dl"] == exp.pk.baseline_iu_dl).all()


@pytest.mark.slow
def test_comparison_detects_a_broken_self_renewal_rule():
    """Self-renewal 0.55 instead of 0.5 in one engine only must be detected."""
    mesa = readouts("myeloablative", "mesa", POWER_MESA_SEEDS)
    broken = readouts("myeloablative", "kernel", KERNEL_SEEDS, ("cell_types.HSC.self_renewal=0.55",))
    result = compare_engines(mesa, broken)
    print(f"\nmyeloablative, kernel with self_renewal 0.55:\n{result.report()}")
    assert not result.agree
    assert any(r.key[0] == "hsc_count" and not r.agree for r in result.rows)
