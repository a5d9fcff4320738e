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
occupied lattice about a fifth of the cells pass, on the burned-in human
marrow about a ninth. The visit order is shuffled with its swaps prefetched
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
from engraft.kernel.prefetch import prefetch
from engraft.kernel.rng import randbelow, uniform, xoshiro_step

# cell flags
GRAFT = np.uint8(1)
QUIESCENT = np.uint8(2)
SILENCED = np.uint8(4)
EMPTY = -1

# indices into the int64 geometry vector
G_DIMS, G_SIZE, G_PERIODIC, G_PLACEMENT_POOL = 0, 1, 2, 3
# columns of the per-type int64 table
T_IS_HSC, T_MAX_DIV, T_TERMINAL = 0, 1, 2
# exit tally quantities
X_CELLS, X_GRAFT, X_TRANSDUCED, X_VCN, X_EXPRESSION = 0, 1, 2, 3, 4
N_EXIT_QUANTITIES = 5
# counters
C_EMPTY, C_EMPTY_NICHE = 0, 1
# events (same numbers as engraft.rates)
E_DIVIDE, E_DIE, E_ACTIVATE, E_EGRESS, E_SILENCE = 0, 1, 2, 3, 4

#: visits between the prefetch of a site's data and its visit (~100 ns of memory latency)
PREFETCH_AHEAD = 8
#: Fisher-Yates swaps whose targets are drawn, and prefetched, before they are made
SHUFFLE_BATCH = 32


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
def screen_probabilities(tint, p_any):
    """Per cell type + 1 (index 0: empty, 0): the largest ``p_any`` over the type's states.

    An HSC's states are resting and active on a niche (off a niche it acts
    every step anyway: the kernels never screen it out); a progenitor has one
    state row. A draw at or above this value means no event, whatever the
    cell's transgene state or niche.
    """
    n_types = tint.shape[0]
    p_screen = np.zeros(n_types + 1)
    for t in range(n_types):
        for h in range(2 if tint[t, T_IS_HSC] != 0 else 1):
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


@njit(**JIT)
def transgene_state(vcn, flags):
    """0: no vector, 1: expressing, 2: silenced (engraft.rates NONE/EXPRESSING/SILENCED)."""
    if vcn == 0:
        return 0
    if flags & SILENCED:
        return 2
    return 1


@njit(**JIT)
def empty_neighbours(site, geom, offsets, ctype, niche, for_hsc, buf):
    """Write the empty neighbours of ``site`` that a daughter may take into ``buf``.

    An HSC daughter may take any empty neighbour; a progenitor daughter only
    an empty non-niche one (niches hold HSCs). Returns how many were written.
    """
    dims = geom[G_DIMS]
    size = geom[G_SIZE]
    periodic = geom[G_PERIODIC] != 0
    q = site // size
    x = site - q * size
    if dims == 3:
        z = q // size
        y = q - z * size
    else:
        z = 0
        y = q
    n = 0
    for k in range(offsets.shape[0]):
        nx = x + offsets[k, 0]
        ny = y + offsets[k, 1]
        nz = z + offsets[k, 2]
        if periodic:  # offsets are -1, 0 or 1: wrap without integer division
            if nx < 0:
                nx += size
            elif nx >= size:
                nx -= size
            if ny < 0:
                ny += size
            elif ny >= size:
                ny -= size
            if dims == 3:
                if nz < 0:
                    nz += size
                elif nz >= size:
                    nz -= size
        elif nx < 0 or nx >= size or ny < 0 or ny >= size or nz < 0 or nz >= size:
            continue
        j = nx + size * (ny + size * nz)
        if ctype[j] == EMPTY and (for_hsc or not niche[j]):
            buf[n] = j
            n += 1
    return n


@njit(**JIT)
def draw_category(cum_row, u):
    """Index of the first cumulative probability above ``u``."""
    for k in range(cum_row.shape[0]):
        if u < cum_row[k]:
            return k
    return cum_row.shape[0] - 1


@njit(**JIT)
def vacate(site, ctype, flags, vcn, divs, clone, affinity, niche, counters):
    ctype[site] = EMPTY
    flags[site] = 0
    vcn[site] = 0
    divs[site] = 0
    clone[site] = 0
    affinity[site] = 0.0
    counters[C_EMPTY] += 1
    if niche[site]:
        counters[C_EMPTY_NICHE] += 1


@njit(**JIT)
def place(site, t, f, v, d, c, a, ctype, flags, vcn, divs, clone, affinity, niche, counters, is_hsc):
    """Put a cell on an empty site; an HSC landing on a niche becomes quiescent."""
    if is_hsc and niche[site]:
        f = f | QUIESCENT
        a = 1.0
    else:
        f = f & ~QUIESCENT
    ctype[site] = t
    flags[site] = f
    vcn[site] = v
    divs[site] = d
    clone[site] = c
    affinity[site] = a
    counters[C_EMPTY] -= 1
    if niche[site]:
        counters[C_EMPTY_NICHE] -= 1


@njit(**JIT)
def pool_push(t, f, v, d, c, pool_type, pool_flags, pool_vcn, pool_divs, pool_clone, pool_n):
    k = pool_n[0]
    pool_type[k] = t
    pool_flags[k] = f & ~QUIESCENT
    pool_vcn[k] = v
    pool_divs[k] = d
    pool_clone[k] = c
    pool_n[0] = k + 1


@njit(**JIT)
def daughter_type_from(u, t, diff_cum, hsc_type, hsc_diff_type, self_renewal):
    """Type of a new daughter of a cell of type ``t``, given one uniform draw ``u``."""
    if t == hsc_type:
        if u < self_renewal:
            return hsc_type
        return hsc_diff_type
    return draw_category(diff_cum[t], u)


@njit(**JIT)
def daughter_type(t, tint, diff_cum, hsc_type, hsc_diff_type, self_renewal, state):
    """Type of a new daughter of a cell of type ``t`` (one draw from ``state``)."""
    return daughter_type_from(uniform(state), t, diff_cum, hsc_type, hsc_diff_type, self_renewal)


@njit(**JIT)
def divisions_for(t_new, t_old, divs_old, tint):
    """Divisions left of a daughter: one fewer if it kept the type, else its type's maximum."""
    if t_new == t_old:
        return divs_old - 1
    return tint[t_new, T_MAX_DIV]


@njit(**JIT)
def record_exit(row, t, f, v, expr_weight, exits):
    exits[row, t, X_CELLS] += 1.0
    if f & GRAFT:
        exits[row, t, X_GRAFT] += 1.0
    if v > 0:
        exits[row, t, X_TRANSDUCED] += 1.0
        exits[row, t, X_VCN] += v
        if not (f & SILENCED):
            exits[row, t, X_EXPRESSION] += expr_weight[v]


@njit(**JIT)
def blood_phase(ctype, flags, vcn, divs, clone, affinity, niche, niche_sites, counters, tint,
                lodging_rate, death_rate, dt, pool_type, pool_flags, pool_vcn, pool_divs, pool_clone,
                pool_n, pool_order, state):
    """Resolve one step of every circulating cell: it lodges, dies or stays (exactly).

    The cells act in a random order (draws from ``state``), so competition
    for the last free sites is fair; lodged and dead cells leave the pool,
    which is compacted keeping the survivors in index order.
    """
    n_sites = ctype.shape[0]
    n_niche = niche_sites.shape[0]
    n_pool = pool_n[0]
    for k in range(n_pool):
        pool_order[k] = k
    shuffle_prefix(pool_order, n_pool, state)
    for j in range(n_pool):
        k = pool_order[j]
        t = pool_type[k]
        hsc = tint[t, T_IS_HSC] != 0
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
            # a uniformly random free target site (rejection; free > 0 here)
            while True:
                if hsc:
                    site = niche_sites[randbelow(state, n_niche)]
                else:
                    site = randbelow(state, n_sites)
                if ctype[site] == EMPTY and (hsc or not niche[site]):
                    break
            place(site, t, pool_flags[k], pool_vcn[k], pool_divs[k], pool_clone[k],
                  1.0, ctype, flags, vcn, divs, clone, affinity, niche, counters, hsc)
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
    pool_n[0] = w


@njit(**JIT)
def run_steps(
    n_steps, exits,
    ctype, flags, vcn, divs, clone, affinity, niche, niche_sites, order, counters,
    geom, offsets, tint, diff_cum, exit_cum, hsc_type, hsc_diff_type, hsc_par,
    p_any, cum, blood_par, expr_weight,
    pool_type, pool_flags, pool_vcn, pool_divs, pool_clone, pool_n, pool_order,
    state,
):
    """Advance ``n_steps`` steps; return how many were done.

    Fewer than ``n_steps`` are done only when the pool arrays might overflow
    in the next step; the caller then grows them and calls again.
    ``exits[s]`` receives the exits of the s-th step of this call.
    """
    n_sites = ctype.shape[0]
    self_renewal = hsc_par[0]
    affinity_decay = hsc_par[1]
    affinity_min = hsc_par[2]
    lodging_rate = blood_par[0]
    death_rate = blood_par[1]
    dt = blood_par[2]
    placement_pool = geom[G_PLACEMENT_POOL] != 0
    capacity = pool_type.shape[0]
    buf = np.empty(offsets.shape[0], dtype=np.int64)
    dims = geom[G_DIMS]
    size = geom[G_SIZE]
    last = size - 1
    periodic = geom[G_PERIODIC] != 0
    row = size
    n_neighbours = offsets.shape[0]
    deltas = np.empty(n_neighbours, dtype=np.int64)  # site-index offsets, valid off the edges
    for nb in range(n_neighbours):
        deltas[nb] = offsets[nb, 0] + size * (offsets[nb, 1] + size * offsets[nb, 2])
    # screening probability per cell type + 1 (0 for empty; an HSC: on a niche) and its
    # integer threshold
    p_screen = screen_probabilities(tint, p_any)
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
            hsc = tint[t, T_IS_HSC] != 0
            h = 0
            if hsc:
                if niche[i]:
                    h = 0 if f & QUIESCENT else 1
                else:
                    h = 2
                    a = affinity[i] * affinity_decay
                    affinity[i] = a
                    if a < affinity_min:
                        # Roeder-Loeffler: too little niche affinity left -> commit
                        ctype[i] = hsc_diff_type
                        divs[i] = tint[hsc_diff_type, T_MAX_DIV]
                        affinity[i] = 0.0
                        continue
            p = p_any[t, h, g]
            if u >= p:
                continue
            event = draw_category(cum[t, h, g], u / p)

            if event == E_DIE:
                vacate(i, ctype, flags, vcn, divs, clone, affinity, niche, counters)
            elif event == E_SILENCE:
                flags[i] = f | SILENCED
            elif event == E_ACTIVATE:
                flags[i] = f & ~QUIESCENT
            elif event == E_EGRESS:
                pool_push(t, f, v, divs[i], clone[i], pool_type, pool_flags, pool_vcn,
                          pool_divs, pool_clone, pool_n)
                vacate(i, ctype, flags, vcn, divs, clone, affinity, niche, counters)
            else:  # E_DIVIDE
                # what the daughter will be: an HSC draws it now (before its site)
                d = divs[i]
                td = hsc_type
                if hsc:  # the mother stays an HSC
                    td = daughter_type(t, tint, diff_cum, hsc_type, hsc_diff_type, self_renewal, state)
                elif d == 0:  # a progenitor with no divisions left exits or changes type
                    if tint[t, T_TERMINAL]:
                        record_exit(step, t, f, v, expr_weight, exits)
                        vacate(i, ctype, flags, vcn, divs, clone, affinity, niche, counters)
                    else:
                        tn = draw_category(exit_cum[t], uniform(state))
                        ctype[i] = tn
                        divs[i] = tint[tn, T_MAX_DIV]
                    continue
                target = -1
                if not placement_pool:
                    # empty_neighbours(), written out: a call with this many array
                    # arguments costs more than the scan. Same neighbours, same order.
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
                            if periodic:  # offsets are -1, 0 or 1
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
                    dd = 0 if td == hsc_type else tint[td, T_MAX_DIV]
                    df = f & ~QUIESCENT
                    if placement_pool:
                        pool_push(td, df, v, dd, clone[i], pool_type, pool_flags, pool_vcn,
                                  pool_divs, pool_clone, pool_n)
                    else:
                        place(target, td, df, v, dd, clone[i], affinity[i], ctype, flags, vcn,
                              divs, clone, affinity, niche, counters, td == hsc_type)
                    if niche[i]:
                        flags[i] = f | QUIESCENT  # back to rest in its niche
                else:  # a progenitor: two daughters, one stays, one takes the new site
                    t1 = daughter_type(t, tint, diff_cum, hsc_type, hsc_diff_type, self_renewal, state)
                    t2 = daughter_type(t, tint, diff_cum, hsc_type, hsc_diff_type, self_renewal, state)
                    d2 = divisions_for(t2, t, d, tint)
                    ctype[i] = t1
                    divs[i] = divisions_for(t1, t, d, tint)
                    if placement_pool:
                        pool_push(t2, f, v, d2, clone[i], pool_type, pool_flags, pool_vcn,
                                  pool_divs, pool_clone, pool_n)
                    else:
                        place(target, t2, f, v, d2, clone[i], 0.0, ctype, flags, vcn, divs, clone,
                              affinity, niche, counters, False)

        # --- 2. the blood: every circulating cell lodges, dies or stays ---------------
        blood_phase(ctype, flags, vcn, divs, clone, affinity, niche, niche_sites, counters, tint,
                    lodging_rate, death_rate, dt, pool_type, pool_flags, pool_vcn, pool_divs,
                    pool_clone, pool_n, pool_order, state)
    return n_steps
