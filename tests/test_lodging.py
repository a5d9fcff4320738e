"""Where a circulating cell lodges: uniformly among the free sites of its kind, by either search.

``circulation.lodging_search: adaptive`` (the default) finds the site by
random trials until the blood phase's trials would pass the number of
candidate sites, then draws from a list of the free ones
(:func:`engraft.kernel.sequential.listing_pays`); ``rejection`` uses random
trials only. Both draw uniformly among the free sites; the tests check the
list's parts against NumPy, and the site left free after a blood phase in
which the list is used against the uniform distribution (chi-square).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from engraft.kernel.sequential import LODGE_LIST_TRIALS, list_free_sites, listing_pays, take_listed
from engraft.lattice import EMPTY, GRAFT
from tests import rulesupport
from tests.rulesupport import clear, put, quiet_sim

ALPHA = 1e-3


@pytest.fixture(params=["sequential", "parallel"])
def kernel(request, monkeypatch):
    monkeypatch.setattr(rulesupport, "KERNEL", request.param)
    return request.param


def test_free_site_lists_are_the_free_sites_of_each_kind():
    rng = np.random.default_rng(4)
    n = 4096
    ctype = np.where(rng.random(n) < 0.7, rng.integers(0, 6, n), EMPTY).astype(np.int8)
    niche = (rng.random(n) < 0.2).astype(np.uint8)
    niche_sites = np.flatnonzero(niche).astype(np.int64)
    free_niches = niche_sites[ctype[niche_sites] == EMPTY]
    out = np.full(free_niches.size, -1, dtype=np.int64)
    assert list_free_sites(niche_sites, niche_sites.size, True, ctype, niche, out) == free_niches.size
    np.testing.assert_array_equal(out, free_niches)
    free_other = np.flatnonzero((ctype == EMPTY) & (niche == 0))
    out = np.full(free_other.size, -1, dtype=np.int64)
    assert list_free_sites(niche_sites, n, False, ctype, niche, out) == free_other.size
    np.testing.assert_array_equal(out, free_other)
    # never past the end of ``out`` (sized from the empty-site counters)
    short = np.full(3, -1, dtype=np.int64)
    assert list_free_sites(niche_sites, n, False, ctype, niche, short) == 3
    np.testing.assert_array_equal(short, free_other[:3])


def test_listing_starts_when_rejection_has_cost_a_pass():
    n = 1024
    assert not listing_pays(n, n // LODGE_LIST_TRIALS, 10 * n)  # free sites common: trials stay cheap
    assert not listing_pays(n, 8, 0)  # scarce, but this phase's trials (128 expected) are below n
    assert not listing_pays(n, 8, n - 128)
    assert listing_pays(n, 8, n - 127)
    assert listing_pays(n, 1, 0) is False  # one free site: n // 1 trials expected, not more than n
    assert listing_pays(n, 1, 1)


def test_a_listed_entry_is_drawn_uniformly_and_removed():
    state = np.array([1, 2, 3, 4], dtype=np.uint64)
    k, draws = 10, 20000
    counts = np.zeros(k, dtype=np.int64)
    for _ in range(draws):
        listed = np.arange(100, 100 + k, dtype=np.int64)
        site = take_listed(listed, k, state)
        counts[site - 100] += 1
        assert site not in listed[: k - 1]
        assert sorted(listed[: k - 1].tolist() + [site]) == list(range(100, 100 + k))
    assert stats.chisquare(counts).pvalue > ALPHA


def _left_free(sim, free: np.ndarray, type_name: str, reps: int) -> np.ndarray:
    """Fill every candidate site but ``free``, put ``free.size - 1`` cells of ``type_name`` in the
    blood (they all lodge within the step), step once: the site left free, per repetition."""
    s = sim.state
    hsc = type_name == "HSC"
    candidates = np.flatnonzero(s.niche != 0) if hsc else np.flatnonzero(s.niche == 0)
    occupied = np.setdiff1d(candidates, free)
    t = sim.exp.type_names.index(type_name)
    n = free.size - 1
    left = np.empty(reps, dtype=np.int64)
    for r in range(reps):
        clear(sim)
        put(sim, occupied, type_name, quiescent=hsc)
        sim.pool.add(np.full(n, t, np.int8), np.full(n, GRAFT, np.uint8), np.zeros(n, np.uint8),
                     np.zeros(n, np.uint8), np.arange(1, n + 1, dtype=np.int32))
        sim.advance(1)
        still = free[s.ctype[free] == EMPTY]
        assert still.size == 1 and sim.pool.size == 0
        left[r] = still[0]
    return left


@pytest.mark.parametrize("type_name", ["HSC", "GMP"])
def test_the_site_left_free_is_uniform_when_the_free_sites_are_listed(kernel, type_name):
    """1024 candidate sites, 48 free, 47 cells lodge: the phase's trials pass 1024 after about 30
    lodgings (sum of 1024 / k from k = 48 down), so the last ones draw from the list. The one site
    left free is uniform over the 48 (chi-square, 1500 repetitions); rejection alone, from the
    same seed, gives other draws (the list was used)."""
    niche = "lattice.niche_fraction=1.0" if type_name == "HSC" else "lattice.niche_fraction=0"
    over = [niche, "lattice.niche_placement=random", "lattice.niche_cluster_size=null",
            "circulation.lodging_rate=1e9", "circulation.blood_lifetime_minutes=1e12"]
    free = np.random.default_rng(7).choice(1024, 48, replace=False)
    reps = 1500
    adaptive = _left_free(quiet_sim(*over, seed=5), free, type_name, reps)
    rejection = _left_free(quiet_sim(*over, "circulation.lodging_search=rejection", seed=5), free, type_name, reps)
    for left in (adaptive, rejection):
        counts = np.array([(left == f).sum() for f in free])
        assert stats.chisquare(counts).pvalue > ALPHA
    assert (adaptive != rejection).any()
