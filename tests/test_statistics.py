"""Stochastic behaviour against analytic expectations, over many seeds.

Each test states its statistic and threshold: two-sided tests at
alpha = 1e-3 (|z| < 3.29), Bonferroni-corrected where one test makes several
comparisons. Seeds are fixed, so a pass or fail is reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from engraft import load_config
from engraft.lattice import EMPTY, GRAFT
from engraft.simulation import Simulation, expected_infused_lattice_cells
from tests.conftest import CONFIGS

ALPHA = 1e-3
Z = stats.norm.isf(ALPHA / 2)  # 3.29


def mean_within_se(values, expected=0.0, z=Z) -> tuple[bool, float, float]:
    values = np.asarray(values, dtype=float)
    mean = values.mean()
    se = values.std(ddof=1) / math.sqrt(values.size)
    return abs(mean - expected) < z * se, mean, se


def test_conditioning_kills_the_configured_fraction():
    kill = {"HSC": 0.7, "MPP": 0.5, "GMP": 0.9, "MkP": 0.9, "EP": 0.2, "CLP": 0.0}
    exp = load_config(CONFIGS / "tiny.yaml", ["infusions=[]", "lattice.size=96", "time.burn_in_days=100",
                                               f"conditioning.myeloablation={kill}"])
    sim = Simulation(exp, seed=3)
    sim.burn_in()
    before = np.bincount(sim.state.ctype[sim.state.ctype != EMPTY], minlength=6)
    sim.condition()
    after = np.bincount(sim.state.ctype[sim.state.ctype != EMPTY], minlength=6)
    pvalues = []
    for t, name in enumerate(exp.type_names):
        if before[t] == 0:
            continue
        if kill[name] == 0.0:
            assert after[t] == before[t]
            continue
        pvalues.append(stats.binomtest(int(before[t] - after[t]), int(before[t]), kill[name]).pvalue)
    assert min(pvalues) > ALPHA / len(pvalues), pvalues


def test_conditioning_spares_graft_cells():
    exp = load_config(CONFIGS / "tiny.yaml", ["infusions=[]", "time.burn_in_days=20",
                                               "conditioning.myeloablation={HSC: 1.0, MPP: 1.0, GMP: 1.0, "
                                               "MkP: 1.0, EP: 1.0, CLP: 1.0}"])
    sim = Simulation(exp, seed=1)
    sim.burn_in()
    occupied = np.flatnonzero(sim.state.ctype != EMPTY)
    sim.state.flags[occupied[::2]] |= GRAFT
    sim.condition()
    left = np.flatnonzero(sim.state.ctype != EMPTY)
    np.testing.assert_array_equal(left, occupied[::2])


def infused_product(distribution_override: str, n_target=20000, seed=5):
    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning=null", "infusions[0].dose_per_kg=4e10",
                                               "infusions[0].composition={HSC: 0.0, GMP: 1.0}",
                                               distribution_override])
    sim = Simulation(exp, seed=seed)
    sim.infuse(0)
    p = sim.pool
    return exp, p.vcn[: p.size].copy()


def test_transduced_fraction_and_zero_truncated_poisson_vcn():
    exp, vcn = infused_product("infusions[0].vcn={distribution: zero_truncated_poisson, mean: 1.5}")
    n = vcn.size
    transduced = vcn[vcn > 0]
    assert stats.binomtest(transduced.size, n, exp.infusions[0].transduction).pvalue > ALPHA
    lam = 1.5
    k = np.arange(1, 9)
    pmf = stats.poisson.pmf(k, lam) / (1 - math.exp(-lam))
    pmf = np.append(pmf, 1 - pmf.sum())  # >= 9 pooled
    observed = np.bincount(np.minimum(transduced, 9), minlength=10)[1:]
    expected = pmf * transduced.size
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp_ = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(obs, exp_).pvalue > ALPHA
    assert transduced.mean() == pytest.approx(lam / (1 - math.exp(-lam)), abs=Z * transduced.std() /
                                              math.sqrt(transduced.size))


def test_categorical_vcn():
    _, vcn = infused_product("infusions[0].vcn={distribution: categorical, "
                             "probabilities: {1: 0.5, 2: 0.3, 4: 0.2}}")
    transduced = vcn[vcn > 0]
    assert set(np.unique(transduced)) <= {1, 2, 4}
    observed = [np.sum(transduced == c) for c in (1, 2, 4)]
    assert stats.chisquare(observed, np.array([0.5, 0.3, 0.2]) * transduced.size).pvalue > ALPHA


def test_infusion_rounding_is_unbiased():
    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning=null"])
    means = expected_infused_lattice_cells(exp, exp.infusions[0])
    hsc_mean = means["HSC"]
    counts = []
    for seed in range(300):
        sim = Simulation(exp, seed=seed)
        counts.append(sim.infuse(0)["HSC"])
    counts = np.array(counts)
    assert set(np.unique(counts)) <= {math.floor(hsc_mean), math.floor(hsc_mean) + 1}
    frac = hsc_mean - math.floor(hsc_mean)
    assert stats.binomtest(int((counts > math.floor(hsc_mean)).sum()), counts.size, frac).pvalue > ALPHA


def neutral_share_change(placement: str, seeds: range, days: float = 150.0) -> np.ndarray:
    """Label a random 30 % of HSCs 'graft' (identical rates) and follow their share."""
    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning=null", "infusions=[]", "time.burn_in_days=100",
                                               f"circulation.placement={placement}", "lattice.size=40"])
    changes = []
    for seed in seeds:
        sim = Simulation(exp, seed=seed)
        sim.burn_in()
        hsc = np.flatnonzero(sim.state.ctype == 0)
        rng = np.random.default_rng(seed)
        labelled = rng.choice(hsc, size=int(0.3 * hsc.size), replace=False)
        sim.state.flags[labelled] |= GRAFT
        share0 = labelled.size / hsc.size
        sim.advance(int(days / exp.time.dt_days))
        now = sim.state.ctype == 0
        share = ((sim.state.flags[now] & GRAFT) != 0).mean()
        changes.append(share - share0)
    return np.array(changes)


@pytest.mark.parametrize("placement", ["neighbour", "pool"])
def test_neutral_competition_keeps_expected_graft_share(placement):
    """Neutral drift: E[share(t)] equals the share at t = 0 (exchangeable lineages)."""
    changes = neutral_share_change(placement, range(40))
    ok, mean, se = mean_within_se(changes, z=stats.norm.isf(ALPHA / 4))  # 2 placements
    assert ok, f"mean change {mean:.4f} +- {se:.4f}"
    assert changes.std() > 0.005  # the shares really drifted: the test had something to detect


def test_neutral_competition_detects_a_fitness_advantage():
    """Power check: the same statistic flags a 20 % division advantage (and halved apoptosis) of one group."""
    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning=null", "infusions=[]", "time.burn_in_days=100",
                                               "lattice.size=40", "transgene.fitness.division_factor=1.2",
                                               "transgene.fitness.apoptosis_factor=0.5"])
    changes = []
    for seed in range(40):
        sim = Simulation(exp, seed=seed)
        sim.burn_in()
        hsc = np.flatnonzero(sim.state.ctype == 0)
        labelled = np.random.default_rng(seed).choice(hsc, size=int(0.3 * hsc.size), replace=False)
        sim.state.vcn[labelled] = 1  # the fitness effect follows the vector
        share0 = labelled.size / hsc.size
        sim.advance(int(150 / exp.time.dt_days))
        now = sim.state.ctype == 0
        changes.append((sim.state.vcn[now] > 0).mean() - share0)
    ok, mean, se = mean_within_se(changes)
    assert not ok and mean > 0, f"advantage not detected: {mean:.4f} +- {se:.4f}"


def test_no_transplant_keeps_the_host_at_steady_state():
    exp = load_config(CONFIGS / "tiny.yaml", ["conditioning=null", "infusions=[]", "time.burn_in_days=300",
                                               "lattice.size=40", "time.duration_days=200",
                                               "time.record_interval_days=200"])
    hsc_change, prog_change, myeloid = [], [], []
    for seed in range(30):
        ts = Simulation(exp, seed=seed).run().timeseries
        first, last = ts.iloc[0], ts.iloc[-1]
        hsc_change.append(last["HSC_host"] - first["HSC_host"])
        prog = [f"{t}_host" for t in ("MPP", "GMP", "MkP", "EP", "CLP")]
        prog_change.append(last[prog].sum() - first[prog].sum())
        myeloid.append(last["myeloid_relative"])
    z = stats.norm.isf(ALPHA / 6)  # three comparisons
    for name, values, expected in (("HSC", hsc_change, 0.0), ("progenitors", prog_change, 0.0),
                                   ("myeloid relative", myeloid, 1.0)):
        ok, mean, se = mean_within_se(values, expected, z)
        assert ok, f"{name}: {mean:.3f} +- {se:.3f}, expected {expected}"
