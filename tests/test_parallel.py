"""The parallel (sublattice) kernel: race-free, thread-count independent, same dynamics.

- The colouring: sites of one colour never share a neighbour, nor do stripes
  of one stripe colour (every size, boundary and dimension, including
  periodic sizes that are not multiples of 3), and the stripes and colour
  classes the kernel walks cover every site once.
- The counter stream: the kernel's split form equals ``counter_uniform``.
- The screens: the sparse one and the stripe one (coarse bit sets, then the exact test)
  pass the sites of the rule with their draws; the
  column marks of a crowded line say exactly which dividing cells have room, and the
  division thresholds only take draws that mean a division in every transgene state.
- Rules that the update order could break: a daughter does not act in the
  step it is born; the empty-site counters that the chunks merge match a
  recount; cells reach the blood and lodge in both placement modes.
- Same seed, 1 or 2 threads: bit-identical tables and lattice.
- Statistics (slow): on a steady state and a transplant, read-outs of the
  parallel and the sequential kernel agree over many seeds: two-sample KS
  with p > alpha / m and means within ``z(alpha / m)`` combined standard
  errors, alpha = 1e-3, m = the number of tests on the config (Bonferroni).
  The same comparison must reject a change of HSC self-renewal from 0.5 to
  0.65, so it can see a real difference. (Its power, measured: 0.6 gives
  |z| = 5.1 on the HSC count against a critical 4.26; 0.55 is not resolved by
  200 seeds on this small marrow, |z| <= 3.)
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from multiprocessing import get_context

import numba
import numpy as np
import pytest
from scipy import stats

from engraft import load_config
from engraft.kernel import parallel
from engraft.kernel.bits import pack_bytes, trailing_zeros
from engraft.kernel.rng import counter_uniform
from engraft.lattice import EMPTY, neighbour_offsets
from engraft.simulation import Simulation
from tests.conftest import CONFIGS, ROOT
from tests.rulesupport import QUIET, clear, put

ALPHA = 1e-3


# ----------------------------------------------------------------------------------
# the colouring and the stream
# ----------------------------------------------------------------------------------
def _chebyshev(a: np.ndarray, b: np.ndarray, size: int, periodic: bool) -> np.ndarray:
    d = np.abs(a - b)
    if periodic:
        d = np.minimum(d, size - d)
    return d.max(axis=-1)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize(("dims", "sizes"), [(2, range(3, 15)), (3, range(3, 9))])
def test_sites_of_one_colour_share_no_neighbour(dims, sizes, periodic):
    """Two sites of one colour are >= 3 apart (Chebyshev, with wrap-around when periodic)."""
    for size in sizes:
        colour = parallel.colour_of_sites(size, dims, periodic)
        idx = np.arange(size**dims)
        coords = np.stack([idx % size, (idx // size) % size] + ([idx // size**2] if dims == 3 else []), axis=1)
        for c in np.unique(colour):
            members = coords[colour == c]
            dist = _chebyshev(members[:, None, :], members[None, :, :], size, periodic)
            np.fill_diagonal(dist, 99)
            assert dist.min() >= 3, (size, dims, periodic, c)
        if size % 3 == 0 or not periodic:
            assert np.unique(colour).size == 3**dims  # the plain 9 / 27 colours


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize(("dims", "sizes"), [(2, [*range(3, 40), 64, 100, 1024, 2048]),
                                             (3, [*range(3, 20), 33, 64, 128])])
def test_stripes_of_one_colour_are_three_apart(dims, sizes, periodic):
    """Stripes t and t + 2 are >= 3 lines apart (across the wrap, too): their
    neighbourhoods are disjoint, so the stripes of one colour can run at once."""
    for size in sizes:
        bounds = parallel.stripes(size, dims)
        m = bounds.size - 1
        assert bounds[0] == 0 and bounds[-1] == size and (np.diff(bounds) >= 1).all()
        if m == 1:
            continue
        assert m % 2 == 0 and (np.diff(bounds) >= 2).all(), (size, dims)
        for t in range(m):
            for u in range(t + 2, m, 2):  # same colour
                near = bounds[u] - (bounds[t + 1] - 1)  # last line of t to first of u
                far = bounds[t] + size - (bounds[u + 1] - 1)  # across the wrap
                assert near >= 3 and (far >= 3 or not periodic), (size, dims, t, u)


@pytest.mark.parametrize(("size", "dims", "periodic"), [(9, 2, True), (10, 2, True), (11, 2, True),
                                                        (10, 2, False), (100, 2, True), (7, 3, True),
                                                        (6, 3, False), (34, 3, True)])
def test_stripes_and_colour_classes_cover_every_site_once(size, dims, periodic):
    """The lines the kernel walks (stripe by stripe, colour by colour) give every site exactly one visit."""
    first, count = parallel.axis_colouring(size, periodic)
    axis = [np.concatenate([f + 3 * np.arange(c) for f, c in zip(first, count, strict=True)])]
    assert sorted(axis[0]) == list(range(size))
    ws = parallel.make_workspace(size**dims, dims, size, periodic, 3)
    visits = np.zeros(size**dims, dtype=int)
    n_axis = first.size
    for st in range(ws.stripe_slot0.size):
        for colour in range(n_axis**dims):
            classes = [(colour // n_axis**d) % n_axis for d in range(dims)]
            ranges = [first[a] + 3 * np.arange(count[a]) for a in classes[:-1]]
            slow = classes[-1]
            ranges.append(ws.stripe_start[st, slow] + 3 * np.arange(ws.stripe_n[st, slow]))
            grids = np.meshgrid(*ranges, indexing="ij")
            site = sum(g.ravel() * size**d for d, g in enumerate(grids))
            np.add.at(visits, site, 1)
    assert (visits == 1).all()


@numba.njit
def _both_streams(key, step, site, draw):
    return parallel.site_uniform(parallel.step_base(key, step, draw), site), counter_uniform(key, step, site, draw)


def test_split_counter_stream_equals_counter_uniform():
    for key in (np.uint64(0x1234_5678_9ABC_DEF0), np.uint64(2**64 - 1)):
        for step in (0, 1, 7, 123_456):
            for draw in range(parallel.N_VISIT_DRAWS):
                for site in (0, 1, 4095, 10**6):
                    split, whole = _both_streams(key, step, site, draw)
                    assert split == whole


def _screen_rule(bits, t, niche, hsc_type, thresholds):
    """What pass 1 must let through: the cell's draw is below its type's screening threshold, or it
    is an HSC off a niche (never an empty site)."""
    return (t != EMPTY) & ((bits < thresholds[t + 1]) | ((t == hsc_type) & (niche == 0)))


@pytest.mark.parametrize("occupancy", [0.0, 0.1, 0.5, 1.0])
def test_sparse_screen_passes_the_sites_of_the_rule(occupancy):
    """The sparse screen passes exactly the occupied sites the rule takes, with their draws."""
    rng = np.random.default_rng(3)
    n = 3 * 400 + 2
    ctype = np.where(rng.random(n) < occupancy, rng.integers(0, 4, n), EMPTY).astype(np.int8)
    niche = (rng.random(n) < 0.3).astype(np.uint8)
    hsc_type = 0
    # ceil(p 2**53) per type + 1: empty never; the HSC p = 1/2; type 1 p = 1/8; type 2 always; type 3 never
    thresholds = np.array([0, 2**52, 2**50, 2**53, 0], dtype=np.uint64)
    base = parallel.step_base(np.uint64(99), 5, parallel.D_EVENT)
    for start, line_len in ((0, 400), (1, 400), (2, 37)):
        sites = start + 3 * np.arange(line_len)
        bits = np.array([int(parallel.site_uniform(base, int(i)) * 2**53) for i in sites], dtype=np.uint64)
        rule = _screen_rule(bits, ctype[sites].astype(np.int64), niche[sites], hsc_type, thresholds)
        passed = np.full(line_len, -1, dtype=np.int64)
        passed_bits = np.zeros(line_len, dtype=np.uint64)
        k = parallel.screen_line_sparse(start, line_len, base, ctype, niche, hsc_type, thresholds, passed,
                                        passed_bits, np.zeros(line_len, dtype=np.uint64))
        np.testing.assert_array_equal(passed[:k], np.flatnonzero(rule))
        np.testing.assert_array_equal(passed_bits[:k], bits[rule])


@pytest.mark.parametrize("occupancy", [0.5, 0.9, 1.0])
def test_stripe_screen_passes_the_sites_of_the_rule(occupancy):
    """The stripe screen (coarse bit sets, then the exact test per line) passes exactly the sites the
    rule takes, with their draws; with the room test it leaves out exactly the passing progenitors
    whose draw's coarse bits mean a division in every state, with divisions left, off the x edges
    and with no free Moore neighbour (those divisions wait). Thresholds that are not multiples of the coarse
    step put some draws in the coarse bucket of their threshold, where only the exact test decides;
    a type past the 15 the byte tables hold takes every draw as a candidate."""
    rng = np.random.default_rng(4)
    size, n_rows = 130, 80  # 130 columns: three words a row, the last one partial
    n = size * n_rows
    types = np.array([0, 1, 2, 3, 16])
    ctype = np.where(rng.random(n) < occupancy, rng.choice(types, n), EMPTY).astype(np.int8)
    niche = (rng.random(n) < 0.2).astype(np.uint8)
    divs = rng.integers(0, 3, n).astype(np.int8)
    hsc_type = 0
    step = 2 ** (53 - parallel.COARSE_BITS)
    thresholds = np.zeros(18, dtype=np.uint64)  # types + 1
    thresholds[[1, 2, 3, 4, 17]] = [2**52 + 12345, 37 * step + step // 2, 2**53, 5 * step + 1, 2**51 + 7]
    div_thresholds = np.zeros(17, dtype=np.uint64)  # 0 for the HSC
    div_thresholds[[1, 2, 3, 16]] = [11 * step + step // 3, 2**53 - 1, 5 * step, 2**50]
    levels = parallel.coarse_levels(thresholds, div_thresholds)
    base = parallel.step_base(np.uint64(7), 3, parallel.D_EVENT)
    bits = np.array([int(parallel.site_uniform(base, i) * 2**53) for i in range(n)], dtype=np.uint64)
    t = ctype.astype(np.int64)
    rule = _screen_rule(bits, t, niche, hsc_type, thresholds)
    coarse = bits >> np.uint64(53 - parallel.COARSE_BITS)
    exact_only = (t >= 0) & (coarse == (thresholds[t + 1] >> np.uint64(53 - parallel.COARSE_BITS)))
    assert exact_only.sum() > 10  # the coarse screen alone would be wrong on these

    n_words = -(-size // 64)
    flags = np.zeros(64 * n_words, dtype=np.uint8)
    cand = np.zeros((n_rows, n_words), dtype=np.uint64)
    wait = np.zeros_like(cand)
    free = np.zeros((n_rows + 2, n_words), dtype=np.uint64)
    parallel.screen_stripe(0, n_rows, 1, n_rows, size, base, ctype, niche, divs, hsc_type, levels, flags, cand,
                           wait, free)
    inner = parallel.site_words(np.arange(1, size - 1), n_words)
    colw = np.zeros(n_words, dtype=np.uint64)
    passed = np.zeros(size, dtype=np.int64)
    passed_bits = np.zeros(size, dtype=np.uint64)
    left_out = 0
    for y in range(1, n_rows - 1):
        row = y * size
        parallel.line_room(free, y + 1, 2, size, colw)
        for x_first in range(3):
            xs = np.arange(x_first, size, 3)
            klass = parallel.site_words(xs, n_words)
            i = row + xs
            passes = rule[i]
            room = np.array([parallel.has_room(colw, x) if 0 < x < size - 1 else 1 for x in xs])
            waits = (bits[i] < div_thresholds[t[i]]) & (t[i] != EMPTY) & (divs[i] > 0) & (room == 0)
            # the room test works on the coarse bits: it takes the draws whose coarse bucket lies
            # wholly below the division threshold (the rest are left to the rules, which find the
            # same), and never a draw at or above it; a type past the tables' 15 is left to the rules
            wait_level = np.where(t[i] + 1 < 16, div_thresholds[t[i]] >> np.uint64(53 - parallel.COARSE_BITS), 0)
            coarse_waits = waits & (coarse[i] < wait_level)
            for use_room, expected in ((False, passes), (True, passes & ~coarse_waits)):
                k = parallel.line_from_bits(row, x_first, n_words, base, cand[y], klass, wait[y], inner, colw,
                                            use_room, ctype, niche, hsc_type, thresholds, passed, passed_bits)
                np.testing.assert_array_equal(passed[:k], np.flatnonzero(expected), err_msg=str((y, x_first, use_room)))
                np.testing.assert_array_equal(passed_bits[:k], bits[i][expected])
            left_out += int((passes & coarse_waits).sum())
    if occupancy == 1.0:
        assert left_out > 0  # the room test had divisions to leave out


@numba.njit
def _trailing_zeros(v):
    return trailing_zeros(v)  # an intrinsic: callable from compiled code only


def test_bit_helpers_match_plain_python():
    """pack_bytes gathers the low bit of each byte; trailing_zeros is the index of the lowest set bit."""
    rng = np.random.default_rng(5)
    for v in rng.integers(0, 2**63, 200, dtype=np.uint64):
        v = np.uint64(v) | np.uint64(1 << 63) if v % 2 else np.uint64(v)
        expected = sum(((int(v) >> (8 * j)) & 1) << j for j in range(8))
        assert int(pack_bytes(v)) == expected
        if v:
            assert _trailing_zeros(v) == (int(v) & -int(v)).bit_length() - 1
    assert _trailing_zeros(np.uint64(1 << 63)) == 63


@pytest.mark.parametrize("dims, size", [(2, 20), (3, 9), (2, 70)])
def test_free_columns_say_whether_a_progenitor_daughter_has_room(dims, size):
    """cols[x-1] | cols[x] | cols[x+1] is 1 exactly when an occupied site off the edges has an empty,
    non-niche Moore neighbour (the fast "must wait" test of crowded lines); has_room says the same
    from the columns packed as bits (70 columns: two words, the test of x = 63, 64 spans both)."""
    rng = np.random.default_rng(dims)
    n = size**dims
    offsets = neighbour_offsets(dims, "moore")
    strides = np.array([1, size, size * size])[:dims]
    n_words = -(-size // 64)
    answers = [0, 0]
    for empty_fraction in (0.02, 0.2):
        ctype = np.where(rng.random(n) < empty_fraction, EMPTY, 2).astype(np.int8)
        niche = (rng.random(n) < 0.3).astype(np.uint8)
        cols = np.zeros(64 * n_words, dtype=np.uint8)
        colw = np.zeros(n_words, dtype=np.uint64)
        for line in range(n // size):
            coords = [(line * size // s) % size for s in strides[1:]]  # y (and z) of the line
            if any(c in (0, size - 1) for c in coords):
                continue
            row = line * size
            parallel.free_columns(row, size, dims, ctype, niche, cols)
            parallel.pack_flags(cols, 0, colw)
            for x in range(1, size - 1):
                i = row + x
                if ctype[i] == EMPTY:
                    continue
                nbrs = i + offsets[:, :dims] @ strides
                room = bool(np.any((ctype[nbrs] == EMPTY) & (niche[nbrs] == 0)))
                assert bool(cols[x - 1] | cols[x] | cols[x + 1]) == room, (line, x)
                assert parallel.has_room(colw, x) == room, (line, x)
                answers[room] += 1
    assert min(answers) > 0, answers  # both answers occurred


@pytest.mark.parametrize("dims, size, planes", [(2, 70, (10, 16)), (2, 20, (0, 4)), (3, 9, (3, 6)), (3, 9, (0, 3))])
def test_stripe_free_sets_follow_the_sweep(dims, size, planes):
    """The free bit sets of a stripe and its halo, screened once and then kept by mark_free as
    sites are vacated and taken (some across the periodic edge, outside the sets), give every
    line off the edges the same free columns as free_columns reads from the lattice then."""
    rng = np.random.default_rng(size + dims)
    n = size**dims
    n_rows = n // size
    halo = size if dims == 3 else 1
    rows_per_plane = size if dims == 3 else 1
    r_lo, r_hi = planes[0] * rows_per_plane, planes[1] * rows_per_plane
    n_words = -(-size // 64)
    ctype = np.where(rng.random(n) < 0.1, EMPTY, 2).astype(np.int8)
    niche = (rng.random(n) < 0.2).astype(np.uint8)
    divs = np.ones(n, dtype=np.int8)
    levels = parallel.coarse_levels(np.zeros(4, dtype=np.uint64), np.zeros(3, dtype=np.uint64))
    flags = np.zeros(64 * n_words, dtype=np.uint8)
    cand = np.zeros((r_hi - r_lo, n_words), dtype=np.uint64)
    wait = np.zeros_like(cand)
    free = np.zeros((r_hi - r_lo + 2 * halo, n_words), dtype=np.uint64)
    parallel.screen_stripe(r_lo, r_hi, halo, n_rows, size, np.uint64(1), ctype, niche, divs, 0, levels, flags,
                           cand, wait, free)
    row0 = r_lo - halo
    # the sites a sweep of the stripe may change: its own and its halo's, and across the edge
    lo, hi = max(0, row0) * size, min(n_rows, r_hi + halo) * size
    sites = np.concatenate([rng.integers(lo, hi, 300), rng.integers(0, n, 30)])
    for site in sites:
        if ctype[site] == EMPTY:
            ctype[site] = 2
            parallel.mark_free(free, row0, size, site, False)
        else:
            ctype[site] = EMPTY
            parallel.mark_free(free, row0, size, site, niche[site] == 0)
    cols = np.zeros(64 * n_words, dtype=np.uint8)
    expected = np.zeros(n_words, dtype=np.uint64)
    colw = np.zeros(n_words, dtype=np.uint64)
    checked = 0
    for r in range(r_lo, r_hi):
        y, z = r % size, r // size
        if y in (0, size - 1) or (dims == 3 and z in (0, size - 1)):
            continue
        parallel.free_columns(r * size, size, dims, ctype, niche, cols)
        parallel.pack_flags(cols, 0, expected)
        parallel.line_room(free, r - row0, dims, size, colw)
        np.testing.assert_array_equal(colw, expected, err_msg=f"row {r}")
        checked += 1
    assert checked > 0


def test_fixed_daughters_are_the_only_outcome_of_the_draw():
    """Where fixed_daughters names a type, daughter_type_from gives it for every draw in [0, 1), so
    the kernel may leave the draws out; where it says -1, the draw can give two types."""
    from engraft.kernel.rules import draw_daughter_type

    diff_cum = np.array([
        [0.0, 0.0, 0.0, 0.0],  # the HSC's row: its daughters follow self-renewal
        [0.0, 0.6, 0.9, 1.0],  # an MPP: three outcomes
        [0.0, 0.0, 1.0, 1.0],  # a committed progenitor making its own type
        [1.0, 1.0, 1.0, 1.0],  # always the first type
        [0.0, 1e-17, 1.0, 1.0],  # almost always type 2, but not always
    ])
    fixed = parallel.fixed_daughters(diff_cum)
    np.testing.assert_array_equal(fixed, [-1, -1, 2, 0, -1])
    draws = np.concatenate([[0.0, 1e-18, 0.5, 1.0 - 2.0**-53], np.random.default_rng(6).random(200)])
    for t in range(1, diff_cum.shape[0]):
        outcomes = {draw_daughter_type(u, t, 0, 1, 0.5, diff_cum) for u in draws}
        assert outcomes == {fixed[t]} if fixed[t] >= 0 else len(outcomes) >= 2, (t, outcomes)


@pytest.mark.parametrize("division_factor", [1.0, 0.5, 1.2])
def test_division_thresholds_mark_draws_that_divide_in_every_state(division_factor):
    """Below a progenitor type's threshold, the kernel's event rule (u < p_any, then the category of
    u / p_any) says "divide" in every transgene state, and the threshold is the smallest p_any x
    cum[..., 0] over the states, less at most a relative 1e-9 (the fast "division waits" test of
    crowded lines); 0 for HSCs. Transduced cells dividing slower or faster make the states differ."""
    from engraft.kernel.layout import E_DIVIDE
    from engraft.kernel.rules import draw_event

    exp = load_config(CONFIGS / "tiny.yaml", [f"transgene.fitness.division_factor={division_factor}"])
    t = Simulation(exp, seed=0).rules
    thr = parallel.division_thresholds(t)
    n_checked = 0
    for ct in range(t.is_hsc.shape[0]):
        if t.is_hsc[ct]:  # an HSC
            assert thr[ct] == 0
            continue
        p_div = t.p_any[ct, 0, :] * t.cum[ct, 0, :, 0]
        if p_div.min() == 0:
            assert thr[ct] == 0
            continue
        assert 0 < thr[ct] / 2**53 <= p_div.min()
        assert thr[ct] / 2**53 >= p_div.min() * (1 - 1.1e-9)
        if division_factor != 1.0:
            assert p_div.max() > p_div.min() * 1.01  # the states differ: the smallest one counts
        below = np.unique(np.concatenate([np.arange(max(int(thr[ct]) - 1000, 0), int(thr[ct])),
                                          np.random.default_rng(ct).integers(0, int(thr[ct]), 1000)]))
        for g in range(t.p_any.shape[2]):
            p = t.p_any[ct, 0, g]
            for bits in below:
                u = float(bits) * parallel.U53
                assert u < p
                assert draw_event(u, ct, 0, g, t.p_any, t.cum) == E_DIVIDE
                n_checked += 1
    assert n_checked > 0


# ----------------------------------------------------------------------------------
# rules that the update order could break
# ----------------------------------------------------------------------------------
def quiet_parallel(*overrides: str, seed: int = 0) -> Simulation:
    """tests.rulesupport.quiet_sim with the parallel kernel."""
    exp = load_config(CONFIGS / "tiny.yaml", [*QUIET, *overrides])
    sim = Simulation(exp, seed=seed, kernel="parallel")
    clear(sim)
    sim.burn_in()
    return sim


def test_kernel_argument_is_checked():
    exp = load_config(CONFIGS / "tiny.yaml")
    with pytest.raises(ValueError, match="kernel"):
        Simulation(exp, kernel="gpu")


def test_a_daughter_does_not_act_in_the_step_it_is_born():
    """A lone MPP divides with probability p = 0.38 per step: after one step at most 2 cells.

    Were a daughter visited in its birth step (when its colour comes later,
    half the time), it would divide again with probability p: about 400 p^2 / 2
    = 29 of 400 runs would end with 3 cells.
    """
    rate = 2.4
    p = rate * 0.2  # time.event_probability: rate_dt
    exp = load_config(CONFIGS / "tiny.yaml", [*QUIET, f"cell_types.MPP.division_rate={rate}",
                                              "lattice.niche_fraction=0"])
    counts = []
    for seed in range(400):
        sim = Simulation(exp, seed=seed, kernel="parallel")
        clear(sim)
        put(sim, 16 + 32 * 16, "MPP", divs=8)
        sim.advance(1)
        counts.append(int((sim.state.ctype != EMPTY).sum()))
    counts = np.array(counts)
    assert counts.max() == 2
    assert stats.binomtest(int((counts == 2).sum()), counts.size, p).pvalue > ALPHA


def test_steps_in_one_call_equal_the_same_steps_in_many():
    """Daughter marks cycle over MARK_PERIOD steps and are cleared when the cycle
    restarts and at each call: 700 steps in one call (two full mark cycles) give
    the same lattice as the same steps in calls of 1 to 9 steps."""
    exp = load_config(CONFIGS / "tiny.yaml", ["time.burn_in_days=10"])
    sims = [Simulation(exp, seed=5, kernel="parallel") for _ in range(2)]
    for sim in sims:
        sim.burn_in()
        sim.condition()
        sim.infuse(0)
    n = 700
    assert n > 2 * parallel.MARK_PERIOD
    sims[0].advance(n)
    done, k = 0, 0
    while done < n:
        k = k % 9 + 1
        sims[1].advance(min(k, n - done))
        done += min(k, n - done)
    a, b = (sim.state for sim in sims)
    for name in ("ctype", "flags", "vcn", "divs", "clone", "affinity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.ctype != EMPTY).sum() > 0


@pytest.mark.parametrize("placement", ["neighbour", "pool"])
def test_merged_counters_match_a_recount(placement):
    exp = load_config(CONFIGS / "tiny.yaml", ["lattice.size=64", f"circulation.placement={placement}",
                                              "time.burn_in_days=10"])
    sim = Simulation(exp, seed=3, kernel="parallel")
    sim.burn_in()
    sim.condition()
    sim.infuse(0)
    for _ in range(5):
        sim.advance(10)
        kernel_counts = sim.counters.copy()
        sim.recount()
        np.testing.assert_array_equal(kernel_counts, sim.counters)
    assert (sim.state.ctype != EMPTY).sum() > 0


def test_egress_parks_cells_in_the_blood():
    """Quiescent niche HSCs leave at 0.4 / day (no lodging, no death in the blood):
    every cell that left is in the pool, and their number is binomial."""
    sim = quiet_parallel("circulation.egress_rate=0.4", "lattice.size=60", "lattice.niche_fraction=0.3",
                         "circulation.lodging_rate=0", "circulation.blood_lifetime_minutes=1e12", seed=2)
    put(sim, sim.niche_sites, "HSC", quiescent=True, clone=7)
    n = sim.niche_sites.size
    sim.advance(1)
    left = n - int((sim.state.ctype != EMPTY).sum())
    assert sim.pool.size == left
    assert (sim.pool.clone[:left] == 7).all()
    assert stats.binomtest(left, n, 0.4 * 0.2).pvalue > ALPHA


# ----------------------------------------------------------------------------------
# thread-count independence
# ----------------------------------------------------------------------------------
THREAD_CASES = {
    # 96 % 3 == 0: the plain 9 colours; 8 stripes of 12 lines, 4 per stripe colour under prange
    "2d_plain": ["lattice.size=96"],
    # 100 % 3 == 1: 16 colours, stripes of 12 and 13 lines; daughters through the blood
    "2d_fallback_pool": ["lattice.size=100", "circulation.placement=pool"],
    # 3D, closed, von Neumann: 27 colours, 8 slabs of 4 and 5 planes
    "3d_closed": ["lattice.dims=3", "lattice.size=33", "lattice.boundary=closed",
                  "lattice.neighbourhood=von_neumann"],
}
SHORT = ["time.burn_in_days=20", "time.duration_days=30"]


def _run_tables(case: str, threads: int) -> tuple[str, bytes]:
    """Timeseries (CSV) and final lattice bytes of a transplant on ``threads`` threads."""
    numba.set_num_threads(threads)
    exp = load_config(CONFIGS / "tiny.yaml", [*THREAD_CASES[case], *SHORT])
    sim = Simulation(exp, seed=11, kernel="parallel")
    result = sim.run()
    s = sim.state
    lattice = b"".join(a.tobytes() for a in (s.ctype, s.flags, s.vcn, s.divs, s.clone, s.affinity))
    return result.timeseries.to_csv(), lattice + result.clones.to_csv().encode()


_TWO_THREAD_SCRIPT = """
import hashlib, sys
from tests.test_parallel import _run_tables
for threads in (1, 2):
    ts, lattice = _run_tables(sys.argv[1], threads)
    print(hashlib.sha256(ts.encode() + lattice).hexdigest())
"""


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="threads exist only in compiled code (and plain "
                    "Python would take 20 minutes here)")
@pytest.mark.parametrize("case", sorted(THREAD_CASES))
def test_same_seed_same_tables_on_one_and_two_threads(case):
    if numba.config.NUMBA_NUM_THREADS >= 2:
        one = _run_tables(case, 1)
        two = _run_tables(case, 2)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert one[0] == two[0]
        assert one[1] == two[1]
    else:  # a one-core machine: ask Numba for two threads in a fresh process
        env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
        out = subprocess.run([sys.executable, "-c", _TWO_THREAD_SCRIPT, case], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        assert len(out) == 2 and out[0] == out[1]


# ----------------------------------------------------------------------------------
# statistics: parallel vs sequential over many seeds
# ----------------------------------------------------------------------------------
SEEDS = 200
STEADY = ["conditioning=null", "infusions=[]", "lattice.size=30"]
TRANSPLANT = ["lattice.size=32"]
STAT_CASES = {
    # host marrow alone (30 % 3 == 0: the plain colouring)
    "steady_state": (STEADY, ("hsc_count", "MPP_host", "GMP_host", "EP_host", "occupancy",
                              "myeloid_cells", "platelets_cells"), (0.0, 40.0, 80.0, 120.0)),
    # myeloablative transplant (32 % 3 == 2: the fallback colouring, 25 colours)
    "transplant": (TRANSPLANT, ("hsc_count", "hsc_chimerism", "hsc_vcn", "clones_alive",
                                "factor_iu_dl", "occupancy"), (10.0, 30.0, 60.0, 120.0)),
}


def _quantity(ts, name: str):
    if name == "hsc_count":
        return ts["HSC_host"] + ts["HSC_graft"]
    return ts[name]


def _seed_rows(case: str, kernel: str, extra: tuple[str, ...], seeds: tuple[int, ...]) -> list[list[float]]:
    numba.set_num_threads(1)  # one worker per core; results do not depend on it
    overrides, quantities, days = STAT_CASES[case]
    exp = load_config(CONFIGS / "tiny.yaml", [*overrides, *extra])
    rows = []
    for seed in seeds:
        ts = Simulation(exp, seed=seed, kernel=kernel).run().timeseries.set_index("day")
        rows.append([float(_quantity(ts, q).loc[d]) for q in quantities for d in days])
    return rows


@cache
def readouts(case: str, kernel: str, extra: tuple[str, ...] = ()) -> dict[tuple[str, float], np.ndarray]:
    """{(quantity, day): values over SEEDS seeds} (seeds 1000.. for the parallel kernel)."""
    _, quantities, days = STAT_CASES[case]
    first = 1000 if kernel == "parallel" else 0
    seeds = list(range(first, first + SEEDS))
    workers = max(1, min(os.cpu_count() or 1, 4))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_seed_rows, [case] * workers, [kernel] * workers, [extra] * workers,
                              [tuple(seeds[w::workers]) for w in range(workers)]))
    rows = np.array([row for part in parts for row in part])
    keys = [(q, d) for q in quantities for d in days]
    return {key: rows[:, k] for k, key in enumerate(keys)}


def compare(a: dict, b: dict, alpha: float = ALPHA) -> list[str]:
    """The read-outs on which samples ``a`` and ``b`` differ (KS and mean, Bonferroni)."""
    level = alpha / (2 * len(a))
    z_critical = stats.norm.isf(level / 2)
    differ = []
    for key in a:
        x, y = a[key][~np.isnan(a[key])], b[key][~np.isnan(b[key])]
        assert x.size >= 20 and y.size >= 20, key
        se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
        if se == 0.0:
            if x.mean() != y.mean():
                differ.append(f"{key}: constant {x.mean():g} vs {y.mean():g}")
            continue
        z = (x.mean() - y.mean()) / se
        p = stats.ks_2samp(x, y).pvalue
        if p <= level or abs(z) >= z_critical:
            differ.append(f"{key}: means {x.mean():.4g} vs {y.mean():.4g} (z {z:+.2f}), KS p {p:.2g}")
    return differ


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(STAT_CASES))
def test_parallel_and_sequential_kernels_agree(case):
    differ = compare(readouts(case, "parallel"), readouts(case, "sequential"))
    assert not differ, "\n".join(differ)


@pytest.mark.slow
def test_comparison_sees_a_change_of_self_renewal():
    broken = readouts("transplant", "parallel", ("cell_types.HSC.self_renewal=0.65",))
    assert compare(broken, readouts("transplant", "sequential"))


def test_neighbourhood_offsets_match_the_kernel_scratch():
    """The workspace holds room for every neighbour the kernel can find."""
    for dims in (2, 3):
        ws = parallel.make_workspace(6**dims, dims, 6, True, 3)
        assert ws.scratch_nb.shape[1] == neighbour_offsets(dims, "moore").shape[0]
