"""Each rule of the kernels on hand-sized lattices, with exact or binomial expectations.

Probabilistic checks use the exact per-step probabilities of engraft.rates
and a two-sided binomial / multinomial test at alpha = 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from engraft.kernel.layout import X_CELLS, X_EXPRESSION, X_GRAFT, X_TRANSDUCED, X_VCN
from engraft.kernel.rules import empty_neighbours
from engraft.lattice import EMPTY, GRAFT, QUIESCENT, SILENCED, neighbour_offsets
from tests import rulesupport
from tests.rulesupport import put, quiet_sim, site

ALPHA = 1e-3


@pytest.fixture(autouse=True, params=["sequential", "parallel"])
def kernel(request, monkeypatch):
    """Every rule test runs on both kernels: they share the rules (engraft.kernel.rules) and differ
    in visit order and random stream only, which the expectations here do not depend on."""
    monkeypatch.setattr(rulesupport, "KERNEL", request.param)
    return request.param


def binomial_ok(k: int, n: int, p: float) -> bool:
    return stats.binomtest(k, n, p).pvalue > ALPHA


@pytest.mark.parametrize(("dims", "hood", "count"), [(2, "moore", 8), (3, "moore", 26),
                                                      (2, "von_neumann", 4), (3, "von_neumann", 6)])
def test_neighbourhood_sizes(dims, hood, count):
    offsets = neighbour_offsets(dims, hood)
    assert offsets.shape == (count, 3)
    assert not (offsets == 0).all(axis=1).any()


@pytest.mark.parametrize(("boundary", "expected"), [("closed", 3), ("periodic", 8)])
def test_corner_neighbours_respect_boundary(boundary, expected):
    sim = quiet_sim(f"lattice.boundary={boundary}", "lattice.niche_fraction=0")
    buf = np.empty(8, dtype=np.int64)
    n = empty_neighbours(0, sim.rules, sim.state.ctype, sim.state.niche, True, buf)
    assert n == expected


def test_nothing_happens_without_rates():
    sim = quiet_sim()
    put(sim, sim.niche_sites, "HSC", quiescent=True)
    put(sim, np.flatnonzero(sim.state.niche == 0)[:300], "GMP", graft=True, vcn=2, clone=5)
    before = sim.state.copy()
    exits = sim.advance(50)
    for name in ("ctype", "flags", "vcn", "divs", "clone"):
        np.testing.assert_array_equal(getattr(sim.state, name), getattr(before, name))
    assert exits.sum() == 0


def test_event_probability_rules():
    """rate_dt gives R dt, split r_i / R; first_event gives 1 - exp(-R dt); anything else is refused."""
    from engraft.rates import event_probabilities

    rates = np.array([[0.5, 0.2, 0.3], [0.0, 0.0, 0.0]])
    p, cum = event_probabilities(rates, 0.25)
    np.testing.assert_allclose(p, [0.25, 0.0], rtol=1e-15)
    np.testing.assert_allclose(cum[0], [0.5, 0.7, 1.0], rtol=1e-15)
    assert (cum[1] == 0).all()
    p_first, _ = event_probabilities(rates, 0.25, "first_event")
    np.testing.assert_allclose(p_first, [-math.expm1(-0.25), 0.0], rtol=1e-15)
    with pytest.raises(ValueError, match="event_probability"):
        event_probabilities(rates, 0.25, "exact")


def test_hsc_activation_probability():
    rate = 0.8
    sim = quiet_sim(f"cell_types.HSC.activation_rate={rate}", "lattice.niche_fraction=1.0")
    put(sim, np.arange(sim.state.n_sites), "HSC", quiescent=True)
    sim.advance(1)
    active = int(((sim.state.flags & QUIESCENT) == 0).sum())
    p = rate * sim.exp.time.dt_days  # time.event_probability: rate_dt (the default)
    assert binomial_ok(active, sim.state.n_sites, p)


def test_competing_risks_split():
    """Quiescent HSCs: activate, die or leave, with probabilities r_i / R x R dt."""
    a, d, e = 0.9, 0.6, 0.9
    sim = quiet_sim("lattice.size=60", "lattice.niche_fraction=1.0", f"cell_types.HSC.activation_rate={a}",
                    f"cell_types.HSC.apoptosis_rate={d}", f"circulation.egress_rate={e}",
                    "circulation.lodging_rate=0", "circulation.blood_lifetime_minutes=1e12",
                    "time.dt_days=0.2")
    n = sim.state.n_sites
    put(sim, np.arange(n), "HSC", quiescent=True)
    sim.advance(1)
    s = sim.state
    egressed = sim.pool.size
    activated = int(((s.ctype == 0) & ((s.flags & QUIESCENT) == 0)).sum())
    died = int((s.ctype == EMPTY).sum()) - egressed
    unchanged = n - activated - died - egressed
    total = a + d + e
    happen = total * 0.2
    expected = np.array([1 - happen, a / total * happen, d / total * happen, e / total * happen]) * n
    chi2 = stats.chisquare([unchanged, activated, died, egressed], expected)
    assert chi2.pvalue > ALPHA


def test_division_waits_when_no_room():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.GMP.division_rate=2.0")
    put(sim, np.arange(sim.state.n_sites), "GMP", divs=3)
    exits = sim.advance(20)
    assert (sim.state.ctype == sim.exp.type_names.index("GMP")).all()
    assert (sim.state.divs == 3).all()
    assert exits.sum() == 0


def test_progenitor_division_places_daughter_next_to_mother():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.GMP.division_rate=2.0")
    centre = site(sim, 16, 16)
    put(sim, centre, "GMP", graft=True, vcn=3, divs=4, clone=9)
    while (sim.state.ctype != EMPTY).sum() == 1:
        sim.advance(1)
    cells = np.flatnonzero(sim.state.ctype != EMPTY)
    assert len(cells) == 2 and centre in cells
    other = cells[cells != centre][0]
    size = sim.exp.lattice.size
    assert max(abs(other % size - 16), abs(other // size - 16)) == 1  # a Moore neighbour
    s = sim.state
    assert (s.divs[cells] == 3).all() and (s.vcn[cells] == 3).all() and (s.clone[cells] == 9).all()
    assert (s.flags[cells] & GRAFT).all()


def test_terminal_progenitor_exits_to_its_lineage():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.GMP.division_rate=2.0")
    put(sim, [5, 6], "GMP", graft=True, vcn=2, divs=0, clone=1)
    put(sim, [100], "GMP", vcn=0, divs=0)
    sim.state.flags[6] |= SILENCED
    exits = sim.advance(40).sum(axis=0)
    gmp = sim.exp.type_names.index("GMP")
    assert (sim.state.ctype == EMPTY).all()
    assert exits[gmp, X_CELLS] == 3 and exits[gmp, X_GRAFT] == 2 and exits[gmp, X_TRANSDUCED] == 2
    assert exits[gmp, X_VCN] == 4
    assert exits[gmp, X_EXPRESSION] == 2  # the silenced cell expresses nothing
    assert exits.sum() == exits[gmp].sum()


def test_exhausted_multipotent_progenitor_differentiates_in_place():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.MPP.division_rate=2.0")
    put(sim, np.arange(200), "MPP", divs=0)
    sim.advance(40)
    names = sim.exp.type_names
    got = np.bincount(sim.state.ctype[:200], minlength=len(names))
    assert got[names.index("MPP")] == 0 and got[names.index("HSC")] == 0
    # in proportion to MPP's differentiation without itself: GMP .16, MkP .08, EP .12, CLP .04 (/0.4)
    expected = np.array([0.4, 0.2, 0.3, 0.1]) * 200
    observed = got[[names.index(t) for t in ("GMP", "MkP", "EP", "CLP")]]
    assert stats.chisquare(observed, expected).pvalue > ALPHA
    assert (sim.state.divs[:200] == [sim.rules.max_divisions[t] for t in sim.state.ctype[:200]]).all()


def test_off_niche_hsc_commits_after_exact_affinity_loss():
    sim = quiet_sim("lattice.niche_fraction=0")
    put(sim, 10, "HSC", affinity=1.0)
    decay, a_min = sim.rules.affinity_decay, sim.rules.affinity_min
    steps = math.ceil(math.log(a_min) / math.log(decay))
    # float32 affinity: the product is rounded each step; allow that one step
    mpp = sim.exp.type_names.index("MPP")
    sim.advance(steps - 1)
    assert sim.state.ctype[10] == 0
    sim.advance(2)
    assert sim.state.ctype[10] == mpp
    assert sim.state.divs[10] == sim.rules.max_divisions[mpp]


def test_self_renewing_hsc_daughter_rests_in_a_niche_and_mother_returns_to_rest():
    sim = quiet_sim("lattice.niche_fraction=1.0", "cell_types.HSC.division_rate=2.0",
                    "cell_types.HSC.self_renewal=1.0")
    centre = site(sim, 10, 10)
    put(sim, centre, "HSC", quiescent=False, vcn=1, graft=True, clone=3)
    while (sim.state.ctype != EMPTY).sum() == 1:
        sim.advance(1)
    s = sim.state
    cells = np.flatnonzero(s.ctype != EMPTY)
    assert len(cells) == 2 and (s.ctype[cells] == 0).all()
    assert (s.flags[cells] & QUIESCENT).all()
    assert (s.clone[cells] == 3).all() and (s.vcn[cells] == 1).all()


def test_progenitor_daughters_never_take_niche_sites():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.GMP.division_rate=2.0")
    sim.state.niche[:] = 1  # every site a niche: a progenitor has nowhere to put a daughter
    centre = site(sim, 10, 10)
    sim.state.niche[centre] = 0
    put(sim, centre, "GMP", divs=4)
    sim.advance(30)
    assert (sim.state.ctype != EMPTY).sum() == 1


def test_non_self_renewing_division_gives_mpp_off_niche():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.HSC.division_rate=2.0",
                    "cell_types.HSC.self_renewal=0.0", "cell_types.HSC.affinity_loss_rate=0")
    put(sim, site(sim, 10, 10), "HSC")
    while (sim.state.ctype != EMPTY).sum() == 1:
        sim.advance(1)
    types = sorted(sim.state.ctype[sim.state.ctype != EMPTY].tolist())
    assert types == [0, sim.exp.type_names.index("MPP")]


def test_blood_outcome_is_exact_over_a_step():
    """A circulating progenitor lodges with probability a f / (a f + mu) (1 - exp(-(a f + mu) dt))."""
    a, lifetime = 1440.0, 60.0 * 24 * 2  # death rate 0.5 / day: both outcomes matter within dt
    sim = quiet_sim("lattice.niche_fraction=0", f"circulation.lodging_rate={a}",
                    f"circulation.blood_lifetime_minutes={lifetime}")
    trials, lodged, died = 4000, 0, 0
    gmp = sim.exp.type_names.index("GMP")
    for _ in range(trials):
        sim.pool.add(np.array([gmp], np.int8), np.array([GRAFT], np.uint8), np.zeros(1, np.uint8),
                     np.zeros(1, np.uint8), np.zeros(1, np.int32))
        sim.advance(1)
        on_lattice = int((sim.state.ctype != EMPTY).sum())
        if on_lattice:
            lodged += 1
            sim.state.ctype[:] = EMPTY
            sim.recount()
        elif sim.pool.size == 0:
            died += 1
        sim.pool.n[0] = 0
    mu, dt = 24 * 60 / lifetime, sim.exp.time.dt_days
    a_eff = a * 1.0  # the lattice is empty at every trial: free fraction 1
    happen = 1 - math.exp(-(a_eff + mu) * dt)
    assert binomial_ok(lodged, trials, a_eff / (a_eff + mu) * happen)
    assert binomial_ok(died, trials, mu / (a_eff + mu) * happen)


def test_circulating_hsc_lodges_only_in_free_niches():
    sim = quiet_sim("lattice.niche_fraction=0.1", "circulation.lodging_rate=1e6")
    hsc = sim.exp.type_names.index("HSC")
    n = 20
    sim.pool.add(np.full(n, hsc, np.int8), np.full(n, GRAFT, np.uint8), np.zeros(n, np.uint8),
                 np.zeros(n, np.uint8), np.arange(1, n + 1, dtype=np.int32))
    sim.advance(1)
    lodged = np.flatnonzero(sim.state.ctype == hsc)
    assert len(lodged) == n
    assert (sim.state.niche[lodged] == 1).all()
    assert (sim.state.flags[lodged] & QUIESCENT).all()


def test_silencing_probability():
    rate = 1.0
    sim = quiet_sim("lattice.niche_fraction=0", f"transgene.silencing_rate={rate}")
    n = sim.state.n_sites
    put(sim, np.arange(n), "GMP", graft=True, vcn=1, divs=3)
    sim.advance(1)
    silenced = int(((sim.state.flags & SILENCED) != 0).sum())
    assert binomial_ok(silenced, n, rate * sim.exp.time.dt_days)  # r_i / R x R dt


def test_fitness_factor_scales_division_of_transduced_cells():
    sim = quiet_sim("lattice.niche_fraction=0", "cell_types.GMP.division_rate=1.0",
                    "transgene.fitness.division_factor=2.0", "lattice.size=64")
    n = sim.state.n_sites
    every_other = np.arange(0, n, 2)  # room for daughters; lattice rows alternate
    put(sim, every_other, "GMP", graft=True, vcn=1, divs=0)  # divs 0: a division event is an exit
    exits = sim.advance(1).sum(axis=0)
    gmp = sim.exp.type_names.index("GMP")
    p = 2.0 * sim.exp.time.dt_days  # the division's share r / R of R dt
    assert binomial_ok(int(exits[gmp, X_CELLS]), len(every_other), p)


@pytest.mark.parametrize("size,dims,periodic", [(64, 2, True), (65, 2, False), (20, 3, True), (17, 3, False)])
def test_clustered_niches_are_the_sites_nearest_the_centres(size, dims, periodic):
    """The compiled nearest-centre distance equals the NumPy brute force, site by site."""
    from engraft.kernel.census import nearest_centre_distance
    from engraft.lattice import site_coordinates

    rng = np.random.default_rng(5)
    coords = site_coordinates(size, dims)
    centres = coords[rng.choice(size**dims, size=7, replace=False)]
    expected = np.full(size**dims, np.inf)
    for centre in centres:
        delta = np.abs(coords - centre)
        if periodic:
            delta = np.minimum(delta, size - delta)
        expected = np.minimum(expected, np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1)))
    padded = np.zeros((len(centres), 3), dtype=np.int64)
    padded[:, :dims] = centres
    assert np.array_equal(nearest_centre_distance(size, dims, padded, periodic), expected)


@pytest.mark.parametrize("size,dims,periodic,radius", [(64, 2, True, 5), (65, 2, False, 7), (20, 3, True, 3),
                                                        (17, 3, False, 4)])
def test_local_nearest_centre_distance_is_the_brute_force_within_its_radius(size, dims, periodic, radius):
    """The windowed distance equals the NumPy brute force where that is <= radius, inf elsewhere."""
    from engraft.kernel.census import nearest_centre_distance_within
    from engraft.lattice import site_coordinates

    rng = np.random.default_rng(6)
    coords = site_coordinates(size, dims)
    centres = coords[rng.choice(size**dims, size=9, replace=False)]
    expected = np.full(size**dims, np.inf)
    for centre in centres:
        delta = np.abs(coords - centre)
        if periodic:
            delta = np.minimum(delta, size - delta)
        expected = np.minimum(expected, np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1)))
    expected[expected > radius] = np.inf
    padded = np.zeros((len(centres), 3), dtype=np.int64)
    padded[:, :dims] = centres
    got = nearest_centre_distance_within(size, dims, padded, periodic, radius)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("dims,small,large", [(2, 64, 256), (3, 16, 40)])
def test_clustered_niche_geometry_does_not_grow_with_the_lattice(dims, small, large):
    """With niche_cluster_size the niche map of a small lattice is a patch of a large one.

    Local statistics of the map, the fraction of niche sites with a non-niche
    neighbour (the cluster rim) and the mean number of niche neighbours of a
    niche site, agree between sizes within their seed-to-seed spread (6 SE of
    the difference); a fixed vessel count (the clusters grow with the
    lattice) fails this.
    """
    from engraft.lattice import neighbour_offsets, niche_map, site_coordinates

    def stats(size, seed):
        niche = niche_map(size, dims, 0.08, "clustered", None, True, np.random.default_rng(seed),
                          cluster_size=8)
        sites = np.flatnonzero(niche)
        c = site_coordinates(size, dims, sites)
        nb = np.zeros(len(sites))
        for o in neighbour_offsets(dims, "moore"):
            cc = (c + o[:dims]) % size
            j = cc[:, 0] + size * cc[:, 1] + (size * size * cc[:, 2] if dims == 3 else 0)
            nb += niche[j]
        return [(nb < 3**dims - 1).mean(), nb.mean()]

    a = np.array([stats(small, s) for s in range(8)])
    b = np.array([stats(large, 100 + s) for s in range(3)])
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + a.var(axis=0, ddof=1) / len(a) * (small / large) ** dims)
    diff = np.abs(a.mean(axis=0) - b.mean(axis=0))
    assert np.all(diff < 6 * se + 1e-3), (a.mean(axis=0), b.mean(axis=0), se)
