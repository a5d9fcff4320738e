"""The rules of a cell's visit, once for both kernels (model page, section 4).

Each function is named after the method of the Mesa reference
(:mod:`engraft.reference.agents`, :class:`engraft.reference.model.ReferenceModel`)
that it mirrors. They are compiled as ordinary Numba functions, called
from the kernels' loops; Numba's own inlining (``inline='always'``, at the
level of its IR) made the sequential kernel 1.2x slower on a fully
occupied 1024^2 lattice and 1.4x on the burned-in human marrow (paired
runs; docs/performance.md), so it is not used.
The kernels keep only what differs between them: the visit order, the
random source (a function here takes its uniform draws as arguments), and
where a daughter or a cell bound for the blood goes.

A function here takes the arrays and numbers it needs one by one, never a
named tuple: the kernels read them out of their tuples once, before their
loops. Reading an array field of a named tuple inside a loop costs a
reference count increment and decrement (calls into Numba's runtime) at
each read, and handing a tuple of arrays to a function compiled into the
loop costs one for each of its arrays, so the kernels unpack their tuples
before their loops (the cost is measured in docs/performance.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from engraft.kernel.jit import JIT
from engraft.kernel.layout import (
    C_EMPTY,
    C_EMPTY_NICHE,
    EMPTY,
    FLAG_GRAFT,
    FLAG_QUIESCENT,
    FLAG_SILENCED,
    HSC_ACTIVE,
    HSC_OFF_NICHE,
    HSC_RESTING,
    TG_EXPRESSING,
    TG_NONE,
    TG_SILENCED,
    X_CELLS,
    X_EXPRESSION,
    X_GRAFT,
    X_TRANSDUCED,
    X_VCN,
)

#: how the rule functions are compiled: as the kernels' other helpers (not ``inline='always'``:
#: see the module docstring)
RULE_JIT = dict(JIT)


@njit(**RULE_JIT)
def transgene_state(vcn, flags):
    """TG_NONE (no vector), TG_EXPRESSING or TG_SILENCED (``MarrowCell.transgene_state``)."""
    if vcn == 0:
        return TG_NONE
    if flags & FLAG_SILENCED:
        return TG_SILENCED
    return TG_EXPRESSING


@njit(**RULE_JIT)
def hsc_state(on_niche, flags):
    """The state class of an HSC: resting or active in a niche, or off the niches (``HSC.step``)."""
    if on_niche:
        return HSC_RESTING if flags & FLAG_QUIESCENT else HSC_ACTIVE
    return HSC_OFF_NICHE


@njit(**RULE_JIT)
def commit(i, ctype, divs, affinity, hsc_diff_type, max_divisions):
    """``HSC.commit``: too little niche affinity left, the HSC at ``i`` becomes the differentiated type."""
    ctype[i] = hsc_diff_type
    divs[i] = max_divisions[hsc_diff_type]
    affinity[i] = 0.0


@njit(**RULE_JIT)
def lose_affinity(i, ctype, divs, affinity, affinity_decay, affinity_min, hsc_diff_type, max_divisions):
    """An HSC off the niches loses affinity (Roeder-Loeffler); below ``affinity_min`` it commits
    (``HSC.step``). Returns whether it committed: then that is its event of the step."""
    a = affinity[i] * affinity_decay
    affinity[i] = a
    if a < affinity_min:
        commit(i, ctype, divs, affinity, hsc_diff_type, max_divisions)
        return True
    return False


@njit(**RULE_JIT)
def draw_event(u, t, h, g, p_any, cum):
    """``ReferenceModel.draw_event``: the event of a cell of type ``t`` in state class ``(h, g)`` given
    its uniform draw ``u``, or -1 for none (competing risks, tables of :mod:`engraft.rates`)."""
    p = p_any[t, h, g]
    if u >= p:
        return -1
    v = u / p
    last = cum.shape[3] - 1
    for e in range(last):
        if v < cum[t, h, g, e]:
            return e
    return last


@njit(**RULE_JIT)
def draw_category(cum_row, u):
    """Index of the first cumulative probability above ``u`` (``random.choices`` with ``cum_weights``)."""
    for k in range(cum_row.shape[0]):
        if u < cum_row[k]:
            return k
    return cum_row.shape[0] - 1


@njit(**RULE_JIT)
def draw_daughter_type(u, t, hsc_type, hsc_diff_type, self_renewal, diff_cum):
    """Type of a new daughter of a cell of type ``t``, given one uniform draw ``u``: an HSC's
    self-renews with probability ``self_renewal`` (``HSC.divide``), a progenitor's follows its
    type's ``differentiation`` (``ReferenceModel.draw_daughter_type``)."""
    if t == hsc_type:
        if u < self_renewal:
            return hsc_type
        return hsc_diff_type
    return draw_category(diff_cum[t], u)


@njit(**RULE_JIT)
def divisions_for(t_new, t_old, divs_old, max_divisions):
    """``Progenitor._divisions_for``: one fewer if the daughter kept the type, else its type's maximum."""
    if t_new == t_old:
        return divs_old - 1
    return max_divisions[t_new]


@njit(**RULE_JIT)
def hsc_daughter_divisions(td, hsc_type, max_divisions):
    """Divisions left of an HSC's daughter of type ``td`` (an HSC: 0, unused)."""
    return 0 if td == hsc_type else max_divisions[td]


@njit(**RULE_JIT)
def die(site, ctype, flags, vcn, divs, clone, affinity, niche, counters):
    """``MarrowCell.die`` (and the marrow side of ``enter_blood``): the site becomes empty."""
    ctype[site] = EMPTY
    flags[site] = 0
    vcn[site] = 0
    divs[site] = 0
    clone[site] = 0
    affinity[site] = 0.0
    counters[C_EMPTY] += 1
    if niche[site]:
        counters[C_EMPTY_NICHE] += 1


@njit(**RULE_JIT)
def settle(site, t, f, v, d, c, a, ctype, flags, vcn, divs, clone, affinity, niche, counters, is_hsc):
    """``settle``: put a cell on an empty site; an HSC landing on a niche rests with full affinity."""
    if is_hsc and niche[site]:
        f = f | FLAG_QUIESCENT
        a = 1.0
    else:
        f = f & ~FLAG_QUIESCENT
    ctype[site] = t
    flags[site] = f
    vcn[site] = v
    divs[site] = d
    clone[site] = c
    affinity[site] = a
    counters[C_EMPTY] -= 1
    if niche[site]:
        counters[C_EMPTY_NICHE] -= 1


@njit(**RULE_JIT)
def silence(i, f, flags):
    """``MarrowCell.silence``."""
    flags[i] = f | FLAG_SILENCED


@njit(**RULE_JIT)
def activate(i, f, flags):
    """An HSC at rest in its niche starts cycling (``HSC.step``, event ACTIVATE)."""
    flags[i] = f & ~FLAG_QUIESCENT


@njit(**RULE_JIT)
def rest_in_niche(i, f, flags, niche):
    """After a division, an HSC in a niche goes back to rest (``HSC.divide``)."""
    if niche[i]:
        flags[i] = f | FLAG_QUIESCENT


@njit(**RULE_JIT)
def renew_mother(i, t1, t, d, ctype, divs, max_divisions):
    """The mother of a progenitor division becomes its first daughter (``Progenitor.divide``)."""
    ctype[i] = t1
    divs[i] = divisions_for(t1, t, d, max_divisions)


@njit(**RULE_JIT)
def differentiate_in_place(i, u, t, ctype, divs, exit_cum, max_divisions):
    """``Progenitor.differentiate_in_place``: an exhausted non-terminal progenitor becomes one of its
    other types (``ReferenceModel.draw_exit_type`` with the uniform draw ``u``)."""
    tn = draw_category(exit_cum[t], u)
    ctype[i] = tn
    divs[i] = max_divisions[tn]


@njit(**RULE_JIT)
def count_exit(row, t, f, v, expr_weight, exits):
    """``ReferenceModel.count_exit``: book one exit of type ``t`` (flags ``f``, ``v`` copies) in ``exits[row, t]``
    (``Progenitor.exit_quantities``)."""
    exits[row, t, X_CELLS] += 1.0
    if f & FLAG_GRAFT:
        exits[row, t, X_GRAFT] += 1.0
    if v > 0:
        exits[row, t, X_TRANSDUCED] += 1.0
        exits[row, t, X_VCN] += v
        if not (f & FLAG_SILENCED):
            exits[row, t, X_EXPRESSION] += expr_weight[v]


@njit(**RULE_JIT)
def site_coordinates(i, size, dims):
    """``(x, y, z)`` of site ``i = x + size (y + size z)`` (z = 0 in 2D)."""
    q = i // size
    x = i - q * size
    if dims == 3:
        z = q // size
        y = q - z * size
    else:
        z = 0
        y = q
    return x, y, z


@njit(**RULE_JIT)
def random_empty_neighbours(i, x, y, z, interior, for_hsc, ctype, niche, size, dims, periodic, offsets, deltas,
                            buf):
    """The neighbours of site ``i`` (at ``x, y, z``) a daughter may take, into ``buf``; returns how many
    (``ReferenceModel.random_empty_neighbour`` before its choice, which is the kernel's).

    An HSC daughter (``for_hsc``) may take any empty neighbour, a progenitor daughter only an
    empty site off the niches. Off the edges (``interior``) the neighbours are ``i + deltas``;
    at an edge each wraps (periodic) or is skipped (closed), without integer division (the
    offsets are -1, 0 or 1). Branch-free: every neighbour is written, and kept only if free.
    """
    n_free = 0
    n_neighbours = offsets.shape[0]
    if interior:
        for nb in range(n_neighbours):
            j = i + deltas[nb]
            buf[n_free] = j
            uj = uint64(j)  # not negative: no index fix-up
            n_free += (ctype[uj] == EMPTY) & (for_hsc | (niche[uj] == 0))
        return n_free
    last = size - 1
    for nb in range(n_neighbours):
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
        j = nx + size * (ny + size * nz)
        buf[n_free] = j
        uj = uint64(j)
        n_free += (ctype[uj] == EMPTY) & (for_hsc | (niche[uj] == 0))
    return n_free


@njit(**JIT)
def neighbour_deltas(rules):
    """Site-index offsets of the neighbourhood (valid off the edges)."""
    offsets = rules.offsets
    size = rules.size
    deltas = np.empty(offsets.shape[0], dtype=np.int64)
    for nb in range(offsets.shape[0]):
        deltas[nb] = offsets[nb, 0] + size * (offsets[nb, 1] + size * offsets[nb, 2])
    return deltas


@njit(**JIT)
def empty_neighbours(site, rules, ctype, niche, for_hsc, buf):
    """The empty neighbours of ``site`` that a daughter may take, into ``buf``; returns how many
    (:func:`random_empty_neighbours` as one call, for tests and Python callers)."""
    size = rules.size
    last = size - 1
    x, y, z = site_coordinates(site, size, rules.dims)
    interior = 0 < x < last and 0 < y < last and (rules.dims == 2 or 0 < z < last)
    return random_empty_neighbours(site, x, y, z, interior, for_hsc, ctype, niche, size, rules.dims, rules.periodic,
                                   rules.offsets, neighbour_deltas(rules), buf)
