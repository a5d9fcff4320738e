"""Compiled passes over the lattice for read-outs and set-up.

A recorded time point needs counts by cell type and origin, the HSCs'
vector copies and the graft clone sizes. At 10^6 sites, NumPy builds a
boolean mask and a temporary per question (about 11 ms per record, a third
of a human-scale run with daily records); :func:`lattice_census` answers all
of them in two passes over the arrays (a whole record then takes about 3 ms).
The results are integer counts, identical to the NumPy expressions they
replace (``tests/test_run.py`` compares them). :func:`nearest_centre_distance`
builds the clustered niche map (``tests/test_rules.py`` compares it with the
NumPy form).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engraft.kernel.jit import JIT
from engraft.kernel.layout import EMPTY
from engraft.kernel.layout import FLAG_GRAFT as GRAFT

__all__ = ["lattice_census", "nearest_centre_distance"]


@njit(**JIT)
def lattice_census(ctype, flags, vcn, clone, n_types, hsc_index):
    """Counts of one time point, in two passes over the lattice.

    Returns
    -------
    counts : int64 (2, n_types): cells of each type, row 0 host, row 1 graft.
    hsc_transduced : HSCs with at least one vector copy.
    hsc_copies : vector copies summed over HSCs.
    clone_cells : int64 (max graft clone id + 1,): graft cells per clone id
        (all types); ``[0]`` when there is no graft cell.
    hsc_clone_cells : int64, same length: graft HSCs per clone id.
    """
    n = ctype.shape[0]
    top = -1
    for i in range(n):
        if ctype[i] != EMPTY and (flags[i] & GRAFT) != 0 and clone[i] > top:
            top = clone[i]
    counts = np.zeros((2, n_types), dtype=np.int64)
    clone_cells = np.zeros(max(top + 1, 1), dtype=np.int64)
    hsc_clone_cells = np.zeros(max(top + 1, 1), dtype=np.int64)
    hsc_transduced = 0
    hsc_copies = 0
    for i in range(n):
        t = ctype[i]
        if t == EMPTY:
            continue
        graft = (flags[i] & GRAFT) != 0
        counts[1 if graft else 0, t] += 1
        if graft:
            clone_cells[clone[i]] += 1
        if t == hsc_index:
            v = vcn[i]
            hsc_transduced += v != 0
            hsc_copies += v
            if graft:
                hsc_clone_cells[clone[i]] += 1
    return counts, hsc_transduced, hsc_copies, clone_cells, hsc_clone_cells


@njit(**JIT)
def nearest_centre_distance(size, dims, centres, periodic):
    """Euclidean distance from every site to its nearest centre (float64, site order).

    ``centres`` is (C, dims) of int64 coordinates; with ``periodic`` each axis
    distance is the shorter way round. The same arithmetic as the NumPy
    expression ``sqrt(sum(delta ** 2))`` over float64, so the same values.
    """
    n = size**dims
    best = np.full(n, np.inf)
    n_centres = centres.shape[0]
    for i in range(n):
        x = i % size
        y = (i // size) % size
        z = i // (size * size)
        b = np.inf
        for c in range(n_centres):
            dx = abs(x - centres[c, 0])
            dy = abs(y - centres[c, 1])
            dz = abs(z - centres[c, 2]) if dims == 3 else 0
            if periodic:
                dx = min(dx, size - dx)
                dy = min(dy, size - dy)
                dz = min(dz, size - dz) if dims == 3 else 0
            fx = float(dx)
            fy = float(dy)
            fz = float(dz)
            d = np.sqrt(fx * fx + fy * fy + fz * fz) if dims == 3 else np.sqrt(fx * fx + fy * fy)
            if d < b:
                b = d
        best[i] = b
    return best
