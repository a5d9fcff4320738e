"""The lattice is a sample of the marrow: its size changes the noise, never the answer.

The human parameter set, host marrow only, is run to steady state at 64^2,
128^2 and 256^2 sites. Whole-body read-outs (daily myeloid output, the
fraction of niches that hold an HSC, lattice occupancy) must agree across
sizes within their seed-to-seed spread. ``scripts/convergence.py`` is the
full resolution study (every read-out, transplants, 2D and 3D, up to 1024^2);
this is its fast guard.

Statistic: for each read-out and each smaller size, Welch's t of the seed
means against 256^2, two-sided, alpha = 1e-3 Bonferroni-corrected over the
comparisons. The spread of a whole-lattice mean falls as 1/sqrt(sites) (the
marrow is a sum of independent local patches, and the seed-to-seed spread
measured at 64^2, 128^2 and 256^2 follows it), so the variance at 128^2 and
256^2 is the one estimated at 64^2 (many cheap seeds) scaled by the site
ratio; the t statistic then has the 64^2 sample's degrees of freedom.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from engraft import load_config
from engraft.simulation import Simulation
from tests.conftest import CONFIGS

ALPHA = 1e-3
SIZES = (64, 128, 256)
SEEDS = {64: 10, 128: 3, 256: 2}
BURN_IN_DAYS = 300
WINDOW_DAYS = 100
READOUTS = ("myeloid output per day", "niches holding an HSC", "occupancy")


def steady_state(size: int, seed: int, overrides=()) -> np.ndarray:
    exp = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml",
                      ["conditioning=null", "infusions=[]", f"lattice.size={size}",
                       f"time.burn_in_days={BURN_IN_DAYS}", *overrides])
    sim = Simulation(exp, seed=seed, kernel="sequential")
    sim.burn_in()
    exits = sim.advance(int(round(WINDOW_DAYS / exp.time.dt_days)))
    myeloid = sim.tally_tables.inflow(exits, exp.time.dt_days).mean(axis=0)[exp.lineage_names.index("myeloid"), 0]
    hsc = exp.type_names.index(exp.hsc_type)
    filled = np.count_nonzero(sim.state.ctype[sim.niche_sites] == hsc) / len(sim.niche_sites)
    return np.array([myeloid, filled, np.mean(sim.state.ctype >= 0)])


def size_trend(geometry) -> list[str]:
    """The read-outs and sizes whose seed mean differs from 256^2's beyond chance."""
    values = {size: np.array([steady_state(size, 1000 * size + s, geometry(size)) for s in range(SEEDS[size])])
              for size in SIZES}
    small = SIZES[0]
    var_small = values[small].var(axis=0, ddof=1)
    n_tests = (len(SIZES) - 1) * len(READOUTS)
    t_crit = stats.t.isf(ALPHA / n_tests / 2, SEEDS[small] - 1)
    largest = SIZES[-1]

    def var(size):
        return var_small * (small / size) ** 2

    failures = []
    for size in SIZES[:-1]:
        diff = values[size].mean(axis=0) - values[largest].mean(axis=0)
        se = np.sqrt(var(size) / SEEDS[size] + var(largest) / SEEDS[largest])
        for name, d, s in zip(READOUTS, diff, se, strict=True):
            if abs(d) > t_crit * s:
                failures.append(f"{name}: {size}^2 - {largest}^2 = {d:.4g} (SE {s:.3g}, t {d / s:.1f}, "
                                f"limit {t_crit:.2f})")
    return failures


def test_whole_body_steady_state_does_not_depend_on_the_lattice_size():
    assert size_trend(lambda size: ()) == []


def test_the_check_detects_clusters_that_grow_with_the_lattice():
    """The same check on the geometry the niche map used to have (about sqrt(niche sites)/2
    vessel centres, so clusters grow as L^(1/2)) finds the size trend."""

    def growing(size):
        k = round(0.08 * size * size)
        return ["lattice.niche_cluster_size=null", f"lattice.niche_cluster_count={round(math.sqrt(k) / 2)}"]

    failures = size_trend(growing)
    assert any(f.startswith("myeloid output") for f in failures), failures
