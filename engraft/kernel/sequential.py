"""The sequential agent kernel: random sequential update over SoA lattice state.

One call advances the lattice and the circulating pool by ``n_steps`` steps.
Per step (model page, section 4):

1. Every site occupied at the start of the step is visited once, in a fresh
   uniformly random order (Mesa's ``shuffle_do`` semantics; visits that the
   step's screening shows to have no effect are skipped: see *Speed*). Only
   a cell's own event removes it, so a listed site still holds its cell when
   visited; daughters born during the step are not visited until the next
   step.
2. A visited HSC off a niche first loses affinity (times ``affinity_decay``);
   below ``affinity_min`` it commits in place to the HSC's differentiated type
   and has no other event this step.
3. One uniform draw decides whether an event happens (``p_any`` of the cell's
   state class) and which (``cum``): see :mod:`engraft.rates`.
4. Niches hold HSCs: an HSC daughter takes any empty neighbour, a
   progenitor daughter only an empty non-niche neighbour; with none free the
   division waits. The daughter's type is drawn before its site.
5. After the sweep, every circulating cell resolves its step exactly: it
   lodges (rate ``lodging_rate`` x free fraction of its target sites: the
   niche sites for an HSC, the non-niche sites for a progenitor), dies
   (rate ``death_rate``), or stays in the blood, in a random order so that
   competition for the last free niches is fair.

Speed: a visit whose event draw says "no event" changes nothing, and only a
cell's own visit changes its site, so which cells will have nothing to do is
known at the start of the step. Each occupied site first gets its
*screening trial*, in site order (memory read in sequence): its event draw
``u`` is below the largest event probability of its cell type
(``p_screen``: :func:`screen_probabilities`), or it is an HSC off a niche
(which acts every step). Only the cells that pass are shuffled and visited;
the others would have been visited without effect. Given that it passed, a
cell's event draw is uniform below ``p_screen``, so the visit draws it as
``p_screen * u'`` with a fresh ``u'`` (an HSC off a niche: ``u'``). A random
order of all cells restricted to those that pass is a random order of those
that pass, and their draws are independent uniforms as before: the dynamics
are exactly the random sequential update's; only the use of the random
stream differs from drawing every cell's number at its visit. On a fully
occupied lattice about a fifth of the cells pass; fewer on a marrow of
resting HSCs. The visit order is shuffled with its swaps prefetched
in batches (the same permutation as the plain Fisher-Yates loop), and since
a random order defeats the hardware prefetcher, each visit prefetches the
arrays and neighbour rows of the cell visited ``PREFETCH_AHEAD`` visits
later. Neighbours wrap without integer division.

Mature output is not simulated here: each exit is counted in ``exits``
(per step and cell type: cells, graft cells, transduced cells, vector copies,
expression units) and :mod:`engraft.tally` turns the counts into blood.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from engraft.kernel.jit import JIT
from engraft.kernel.layout import (
    C_EMPTY,
    C_EMPTY_NICHE,
    E_ACTIVATE,
    E_DIE,
    E_DIVIDE,
    E_EGRESS,
    E_SILENCE,
    EMPTY,
    FLAG_QUIESCENT,
    HSC_OFF_NICHE,
    HSC_RESTING,
    N_EXIT_QUANTITIES,
    X_CELLS,
    X_EXPRESSION,
    X_GRAFT,
    X_TRANSDUCED,
    X_VCN,
)
from engraft.kernel.prefetch import prefetch
from engraft.kernel.rng import randbelow, uniform, xoshiro_step
from engraft.kernel.rules import (
    RULE_JIT,
    activate,
    count_exit,
    die,
    differentiate_in_place,
    divisions_for,
    draw_daughter_type,
    draw_event,
    hsc_daughter_divisions,
    hsc_state,
    lose_affinity,
    neighbour_deltas,
    renew_mother,
    rest_in_niche,
    settle,
    silence,
    transgene_state,
)

__all__ = ["C_EMPTY", "C_EMPTY_NICHE", "E_ACTIVATE", "E_DIE", "E_DIVIDE", "E_EGRESS", "E_SILENCE", "EMPTY",
           "N_EXIT_QUANTITIES", "X_CELLS", "X_EXPRESSION", "X_GRAFT", "X_TRANSDUCED", "X_VCN", "blood_phase",
           "run_steps", "screen_passes", "screen_probabilities", "screen_thresholds", "shuffle_prefix"]

#: visits between the prefetch of a site's data and its visit (~100 ns of memory latency)
PREFETCH_AHEAD = 8
#: Fisher-Yates swaps whose targets are drawn, and prefetched, before they are made
SHUFFLE_BATCH = 32
#: a lodging cell finds its site by rejection (random candidate sites until a free one); where
#: that takes more than this many trials on average (candidates / free sites), and a blood
#: phase's trials for that kind of site (niche or not) would pass the number of its
#: candidates, the free sites are listed in one pass and the phase's remaining lodgings of that
#: kind draw from the list (:func:`listing_pays`; docs/performance.md)
LODGE_LIST_TRIALS = 16


@njit(**JIT)
def shuffle_prefix(values, n, state):
    """Fisher-Yates shuffle of ``values[:n]`` in place.

    The same draws in the same order as :func:`engraft.kernel.rng.shuffle_prefix`
    (so the same permutation); the swap targets of a batch are drawn first and
    prefetched, so their cache misses overlap.
    """
    targets = np.empty(SHUFFLE_BATCH, dtype=np.int64)
    i = n - 1
    while i > 0:
        b = min(SHUFFLE_BATCH, i)
        for k in range(b):
            j = randbelow(state, i - k + 1)
            targets[k] = j
            prefetch(values, j)
        for k in range(b):
            ii = i - k
            j = targets[k]
            tmp = values[ii]
            values[ii] = values[j]
            values[j] = tmp
        i -= b


@njit(**JIT)
def screen_probabilities(rules):
    """Per cell type + 1 (index 0: empty, 0): the largest ``p_any`` over the type's states.

    An HSC's states are resting and active on a niche (off a niche it acts
    every step anyway: the kernels never screen it out); a progenitor has one
    state row. A draw at or above this value means no event, whatever the
    cell's transgene state or niche.
    """
    p_any = rules.p_any
    n_types = p_any.shape[0]
    p_screen = np.zeros(n_types + 1)
    for t in range(n_types):
        for h in range(2 if rules.is_hsc[t] != 0 else 1):
            for g in range(p_any.shape[2]):
                p_screen[t + 1] = max(p_screen[t + 1], p_any[t, h, g])
    return p_screen


@njit(**JIT)
def screen_thresholds(p_screen):
    """``ceil(p 2**53)`` of each screening probability (uint64), for the integer screen.

    For 53 random bits ``b`` (``u = b 2**-53``), ``u < p`` exactly when ``b <
    ceil(p 2**53)``: the kernels screen on the bits, without a conversion.
    """
    thresholds = np.zeros(p_screen.shape[0], dtype=np.uint64)
    for t in range(p_screen.shape[0]):
        thresholds[t] = uint64(np.ceil(p_screen[t] * 9007199254740992.0))
    return thresholds


@njit(**JIT)
def screen_passes(bits, t, on_niche, hsc_type, thresholds):
    """Whether a site of cell type ``t`` (EMPTY: -1) with event bits ``bits`` passes the screen.

    ``bits < thresholds[t + 1]`` (:func:`screen_thresholds`) is ``u < p`` for
    the type's largest event probability; an HSC off a niche always passes
    (it loses affinity every step). Branch-free, with an unsigned index. The
    screening rule of both kernels.
    """
    return (bits < thresholds[uint64(t + 1)]) | ((t == hsc_type) & (on_niche == 0))


@njit(**RULE_JIT)
def pool_push(t, f, v, d, c, pool_type, pool_flags, pool_vcn, pool_divs, pool_clone, pool_n):
    """``enter_blood``: a cell joins the circulating pool (an HSC there does not rest)."""
    k = pool_n[0]
    pool_type[k] = t
    pool_flags[k] = f & ~FLAG_QUIESCENT
    pool_vcn[k] = v
    pool_divs[k] = d
    pool_clone[k] = c
    pool_n[0] = k + 1


@njit(**JIT)
def listing_pays(n_candidates, n_free, trials):
    """Whether a blood phase should list the free sites of a kind now, before a lodging: rejection
    takes more than :data:`LODGE_LIST_TRIALS` trials a lodging on average, and this phase's
    trials so far with those this lodging is expected to take pass the number of candidates.

    The rule of renting until the rent paid equals the price of buying: rejection goes on until
    it has cost about one pass over the candidates, the price of the list, so a phase never
    costs more than about twice the cheaper of the two ways, however few the free sites. It
    depends on the state and the phase's draws only, so results stay reproducible. In the
    shipped human experiments it is not met (the free niches are many, or the lodgings few); on
    the small lattices of the tiny and mouse configs, whose few niches are mostly full, it is.
    """
    if n_candidates <= LODGE_LIST_TRIALS * n_free:
        return False
    return trials + n_candidates // n_free > n_candidates


@njit(**JIT)
def lodging_site(niche_sites, n_candidates, for_hsc, ctype, niche, state):
    """A uniformly random free site for a lodging cell, by rejection: ``(site, trials)``.

    An HSC (``for_hsc``) takes a free niche (candidates: ``niche_sites``), a
    progenitor a free site off the niches (candidates: every site). Needs a
    free site of that kind.
    """
    trials = 0
    while True:
        trials += 1
        if for_hsc:
            site = niche_sites[randbelow(state, n_candidates)]
        else:
            site = randbelow(state, n_candidates)
        if ctype[site] == EMPTY and (for_hsc or not niche[site]):
            return site, trials


@njit(**JIT)
def list_free_sites(niche_sites, n_candidates, for_hsc, ctype, niche, out):
    """The free sites of one kind (as :func:`lodging_site` would accept them) into ``out``, in
    site order; returns how many (at most ``out``'s length, which the empty-site counters size)."""
    n = 0
    for k in range(n_candidates):
        site = niche_sites[k] if for_hsc else k
        if ctype[site] == EMPTY and (for_hsc or not niche[site]) and n < out.shape[0]:
            out[n] = site
            n += 1
    return n


@njit(**JIT)
def take_listed(listed, n_listed, state):
    """A uniformly random entry of ``listed[:n_listed]`` (n_listed >= 1), removed from it (the last
    entry takes its place)."""
    r = randbelow(state, n_listed)
    site = listed[r]
    listed[r] = listed[n_listed - 1]
    return site


@njit(**JIT)
def blood_phase(lat, pool, rules, state):
    """``ReferenceModel.resolve_blood``: every circulating cell lodges, dies or stays (exactly).

    The cells act in a random order (draws from ``state``), so competition
    for the last free sites is fair; lodged and dead cells leave the pool,
    which is compacted keeping the survivors in index order.
    """
    ctype, flags, vcn, divs, clone, affinity, niche = (lat.ctype, lat.flags, lat.vcn, lat.divs, lat.clone,
                                                        lat.affinity, lat.niche)
    niche_sites = lat.niche_sites
    counters = lat.counters
    is_hsc = rules.is_hsc
    pool_type, pool_flags, pool_vcn, pool_divs, pool_clone = pool.ctype, pool.flags, pool.vcn, pool.divs, pool.clone
    pool_order = pool.order
    lodging_list = rules.lodging_list
    lodging_rate = rules.lodging_rate
    death_rate = rules.death_rate
    dt = rules.dt
    n_sites = ctype.shape[0]
    n_niche = niche_sites.shape[0]
    n_pool = pool.n[0]
    for k in range(n_pool):
        pool_order[k] = k
    shuffle_prefix(pool_order, n_pool, state)
    # the free sites of each kind, listed once in the phase where rejection has become dear
    # (-1: not listed; the list holds the free sites not yet taken in this phase: only lodging
    # fills a site during the blood phase, and an HSC takes only niches, a progenitor only
    # other sites)
    n_listed_niche = -1
    n_listed_other = -1
    trials_niche = 0
    trials_other = 0
    listed_niche = np.empty(0, dtype=np.int64)
    listed_other = np.empty(0, dtype=np.int64)
    for j in range(n_pool):
        k = pool_order[j]
        t = pool_type[k]
        hsc = is_hsc[t] != 0
        if hsc:
            free = counters[C_EMPTY_NICHE] / n_niche if n_niche > 0 else 0.0
        else:
            n_other = n_sites - n_niche
            free = (counters[C_EMPTY] - counters[C_EMPTY_NICHE]) / n_other if n_other > 0 else 0.0
        a = lodging_rate * free
        total = a + death_rate
        happened = -np.expm1(-total * dt) if total > 0.0 else 0.0
        u = uniform(state)
        if u < a / total * happened:
            # a uniformly random free target site (free > 0 here). The two kinds are written out
            # in full: one helper for both, returning its list, made the lodgings 1.2-1.5x slower
            # (an array returned from a compiled call costs reference counting at each lodging)
            if hsc:
                n_free = counters[C_EMPTY_NICHE]
                if n_listed_niche < 0 and lodging_list and listing_pays(n_niche, n_free, trials_niche):
                    listed_niche = np.empty(n_free, dtype=np.int64)
                    n_listed_niche = list_free_sites(niche_sites, n_niche, True, ctype, niche, listed_niche)
                if n_listed_niche >= 0:
                    site = take_listed(listed_niche, n_listed_niche, state)
                    n_listed_niche -= 1
                else:
                    site, trials = lodging_site(niche_sites, n_niche, True, ctype, niche, state)
                    trials_niche += trials
            else:
                n_free = counters[C_EMPTY] - counters[C_EMPTY_NICHE]
                if n_listed_other < 0 and lodging_list and listing_pays(n_sites, n_free, trials_other):
                    listed_other = np.empty(n_free, dtype=np.int64)
                    n_listed_other = list_free_sites(niche_sites, n_sites, False, ctype, niche, listed_other)
                if n_listed_other >= 0:
                    site = take_listed(listed_other, n_listed_other, state)
                    n_listed_other -= 1
                else:
                    site, trials = lodging_site(niche_sites, n_sites, False, ctype, niche, state)
                    trials_other += trials
            settle(site, t, pool_flags[k], pool_vcn[k], pool_divs[k], pool_clone[k], 1.0, ctype, flags, vcn, divs, clone, affinity, niche, counters, hsc)
            pool_type[k] = EMPTY
        elif u < happened:
            pool_type[k] = EMPTY
    # compact the pool, keeping the survivors in index order
    w = 0
    for k in range(n_pool):
        if pool_type[k] != EMPTY:
            pool_type[w] = pool_type[k]
            pool_flags[w] = pool_flags[k]
            pool_vcn[w] = pool_vcn[k]
            pool_divs[w] = pool_divs[k]
            pool_clone[w] = pool_clone[k]
            w += 1
    pool.n[0] = w


@njit(**JIT)
def run_steps(n_steps, exits, lat, pool, rules, order, state):
    """Advance ``n_steps`` steps; return how many were done.

    ``lat``, ``pool``, ``rules``: :mod:`engraft.kernel.structs`; ``order``:
    scratch of one index per site; ``state``: the xoshiro256** state
    (uint64[4]), advanced in place. Fewer than ``n_steps`` are done only
    when the pool arrays might overflow in the next step; the caller then
    grows them and calls again. ``exits[s]`` receives the exits of the s-th
    step of this call.
    """
    ctype, flags, vcn, divs, clone, affinity, niche = (lat.ctype, lat.flags, lat.vcn, lat.divs, lat.clone,
                                                        lat.affinity, lat.niche)
    counters = lat.counters
    # the arrays, read out of the tuples once (an array field read in the loop costs a reference
    # count increment and decrement each time: engraft.kernel.rules)
    is_hsc, max_divisions, terminal = rules.is_hsc, rules.max_divisions, rules.terminal
    diff_cum, exit_cum, p_any, cum = rules.diff_cum, rules.exit_cum, rules.p_any, rules.cum
    expr_weight, offsets = rules.expr_weight, rules.offsets
    hsc_diff_type, self_renewal = rules.hsc_diff_type, rules.self_renewal
    affinity_decay, affinity_min, periodic = rules.affinity_decay, rules.affinity_min, rules.periodic
    hsc_type = rules.hsc_type
    n_sites = ctype.shape[0]
    placement_pool = rules.placement_pool
    pool_type, pool_flags, pool_vcn, pool_divs, pool_clone = pool.ctype, pool.flags, pool.vcn, pool.divs, pool.clone
    pool_n = pool.n
    capacity = pool_type.shape[0]
    buf = np.empty(offsets.shape[0], dtype=np.int64)
    dims = rules.dims
    size = rules.size
    last = size - 1
    row = size
    deltas = neighbour_deltas(rules)
    n_neighbours = offsets.shape[0]
    # screening probability per cell type + 1 (0 for empty; an HSC: on a niche) and its
    # integer threshold
    p_screen = screen_probabilities(rules)
    thresholds = screen_thresholds(p_screen)

    for step in range(n_steps):
        # --- 1. the cells with something to do, in a fresh random order --------------
        m = 0
        for i in range(n_sites):
            order[m] = i  # branch-free: kept only if occupied
            m += ctype[i] != EMPTY
        if pool_n[0] + m > capacity:
            return step
        # a cell's screening trial: whether its event draw is below p_screen of its type
        # (an HSC off a niche always passes); only its own visit changes its site, so the
        # trial gives the same answer at the start of the step as at the visit. The draws
        # are those of uniform(state), with the state in registers.
        n = 0
        s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
        for k in range(m):
            bits, s0, s1, s2, s3 = xoshiro_step(s0, s1, s2, s3)
            i = uint64(order[uint64(k)])
            order[uint64(n)] = i  # branch-free, in place (n <= k)
            n += screen_passes(bits >> uint64(11), ctype[i], niche[i], hsc_type, thresholds)
        state[0], state[1], state[2], state[3] = s0, s1, s2, s3
        shuffle_prefix(order, n, state)

        for j in range(n):
            if j + PREFETCH_AHEAD < n:
                ahead = order[j + PREFETCH_AHEAD]
                prefetch(ctype, ahead)
                prefetch(flags, ahead)
                prefetch(vcn, ahead)
                prefetch(niche, ahead)
                prefetch(divs, ahead)
                prefetch(clone, ahead)
                # the rows above and below hold most neighbours (a division reads them)
                if ahead >= row and ahead + row < n_sites:
                    prefetch(ctype, ahead - row)
                    prefetch(ctype, ahead + row)
                    prefetch(niche, ahead - row)
                    prefetch(niche, ahead + row)
            i = order[j]
            t = ctype[i]
            # the event draw, given the screening trial passed: uniform below p_screen (an
            # HSC off a niche passed whatever its draw, so its draw is uniform below 1)
            ps = p_screen[t + 1]
            if t == hsc_type and niche[i] == 0:
                ps = 1.0
            u = uniform(state) * ps
            f = flags[i]
            v = vcn[i]
            g = transgene_state(v, f)
            hsc = is_hsc[t] != 0
            h = HSC_RESTING
            if hsc:
                h = hsc_state(niche[i], f)
                if h == HSC_OFF_NICHE and lose_affinity(i, ctype, divs, affinity, affinity_decay, affinity_min, hsc_diff_type,
                                                              max_divisions):
                    continue
            event = draw_event(u, t, h, g, p_any, cum)
            if event < 0:
                continue
            if event == E_DIE:
                die(i, ctype, flags, vcn, divs, clone, affinity, niche, counters)
            elif event == E_SILENCE:
                silence(i, f, flags)
            elif event == E_ACTIVATE:
                activate(i, f, flags)
            elif event == E_EGRESS:
                pool_push(t, f, v, divs[i], clone[i], pool_type, pool_flags, pool_vcn, pool_divs, pool_clone, pool_n)
                die(i, ctype, flags, vcn, divs, clone, affinity, niche, counters)
            else:  # E_DIVIDE
                # what the daughter will be: an HSC draws it now (before its site)
                d = divs[i]
                td = hsc_type
                if hsc:  # the mother stays an HSC
                    td = draw_daughter_type(uniform(state), t, hsc_type, hsc_diff_type, self_renewal, diff_cum)
                elif d == 0:  # a progenitor with no divisions left exits or changes type
                    if terminal[t]:
                        count_exit(step, t, f, v, expr_weight, exits)
                        die(i, ctype, flags, vcn, divs, clone, affinity, niche, counters)
                    else:
                        differentiate_in_place(i, uniform(state), t, ctype, divs, exit_cum, max_divisions)
                    continue
                target = -1
                if not placement_pool:
                    # rules.random_empty_neighbours, written out: called here it made a dense 1024^2
                    # step 1.16x slower, and 1.3-1.4x once the rules were no longer inlined by Numba
                    # (paired runs; docs/performance.md). The same neighbours in the same order (the
                    # stored regression table is unchanged; the rule tests run on both kernels).
                    for_hsc = hsc and td == hsc_type
                    q = i // size
                    x = i - q * size
                    if dims == 3:
                        z = q // size
                        y = q - z * size
                    else:
                        z = 0
                        y = q
                    interior = 0 < x < last and 0 < y < last and (dims == 2 or 0 < z < last)
                    n_free = 0
                    for nb in range(n_neighbours):
                        if interior:
                            jn = i + deltas[nb]
                        else:
                            nx = x + offsets[nb, 0]
                            ny = y + offsets[nb, 1]
                            nz = z + offsets[nb, 2]
                            if periodic:
                                if nx < 0:
                                    nx += size
                                elif nx > last:
                                    nx -= size
                                if ny < 0:
                                    ny += size
                                elif ny > last:
                                    ny -= size
                                if dims == 3:
                                    if nz < 0:
                                        nz += size
                                    elif nz > last:
                                        nz -= size
                            elif nx < 0 or nx > last or ny < 0 or ny > last or nz < 0 or nz > last:
                                continue
                            jn = nx + size * (ny + size * nz)
                        buf[n_free] = jn
                        n_free += (ctype[jn] == EMPTY) & (for_hsc | (niche[jn] == 0))
                    if n_free == 0:
                        continue  # no room: the division waits
                    target = buf[randbelow(state, n_free)]
                if hsc:
                    dd = hsc_daughter_divisions(td, hsc_type, max_divisions)
                    df = f & ~FLAG_QUIESCENT
                    if placement_pool:
                        pool_push(td, df, v, dd, clone[i], pool_type, pool_flags, pool_vcn, pool_divs, pool_clone, pool_n)
                    else:
                        settle(target, td, df, v, dd, clone[i], affinity[i], ctype, flags, vcn, divs, clone, affinity, niche, counters,
                               td == hsc_type)
                    rest_in_niche(i, f, flags, niche)
                else:  # a progenitor: two daughters, one stays, one takes the new site
                    t1 = draw_daughter_type(uniform(state), t, hsc_type, hsc_diff_type, self_renewal, diff_cum)
                    t2 = draw_daughter_type(uniform(state), t, hsc_type, hsc_diff_type, self_renewal, diff_cum)
                    d2 = divisions_for(t2, t, d, max_divisions)
                    renew_mother(i, t1, t, d, ctype, divs, max_divisions)
                    if placement_pool:
                        pool_push(t2, f, v, d2, clone[i], pool_type, pool_flags, pool_vcn, pool_divs, pool_clone, pool_n)
                    else:
                        settle(target, t2, f, v, d2, clone[i], 0.0, ctype, flags, vcn, divs, clone, affinity, niche, counters, False)

        # --- 2. the blood: every circulating cell lodges, dies or stays ---------------
        blood_phase(lat, pool, rules, state)
    return n_steps
