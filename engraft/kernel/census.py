"""Compiled passes over the lattice for read-outs and set-up.

A recorded time point needs counts by cell type and origin, the HSCs'
vector copies and the graft clone sizes. NumPy builds a boolean mask and a
temporary per question, which made the daily records a large share of a
human-scale run; :func:`lattice_census` answers all of them in one pass
over the arrays, split over the threads (measurements: docs/performance.md).
The results are integer counts, identical to the NumPy expressions they
replace (``tests/test_run.py`` compares them). :func:`nearest_centre_distance`
and :func:`nearest_centre_distance_within` build the clustered niche map
(``tests/test_rules.py`` compares them with the NumPy form).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from engraft.kernel.jit import JIT, PARALLEL_JIT
from engraft.kernel.layout import EMPTY
from engraft.kernel.layout import FLAG_GRAFT as GRAFT

__all__ = ["lattice_census", "nearest_centre_distance", "nearest_centre_distance_within"]


#: sites per chunk of the census at least (below it one chunk: a thread launch costs more)
CENSUS_MIN_CHUNK = 1 << 16
#: chunks at most (each holds its own clone counts)
CENSUS_MAX_CHUNKS = 8
#: clone counts held by all chunks together at most (two int64 arrays of chunks x clone ids)
CENSUS_MAX_CLONE_COUNTS = 1 << 22


def lattice_census(ctype, flags, vcn, clone, n_types, hsc_index):
    """Counts of one time point, in one pass over the lattice split over the threads.

    The lattice is cut into at most ``CENSUS_MAX_CHUNKS`` chunks (one per
    thread, none smaller than ``CENSUS_MIN_CHUNK`` sites, fewer where the
    clone ids are many); each chunk counts
    on its own and the chunks' counts are summed. The counts are integers,
    so the result is the same for any number of threads or chunks.

    Returns
    -------
    counts : int64 (2, n_types): cells of each type, row 0 host, row 1 graft.
    hsc_transduced : HSCs with at least one vector copy.
    hsc_copies : vector copies summed over HSCs.
    clone_cells : int64 (max graft clone id + 1,): graft cells per clone id
        (all types); ``[0]`` when there is no graft cell.
    hsc_clone_cells : int64, same length: graft HSCs per clone id.
    """
    # clone ids are counted up to the largest id on any site, then cut to the largest graft one
    m = max(int(clone.max(initial=0)) + 1, 1)
    k = max(1, min(numba.get_num_threads(), CENSUS_MAX_CHUNKS, ctype.shape[0] // CENSUS_MIN_CHUNK,
                   CENSUS_MAX_CLONE_COUNTS // m))
    return _census(ctype, flags, vcn, clone, n_types, hsc_index, k, m)


@njit(**PARALLEL_JIT)
def _census(ctype, flags, vcn, clone, n_types, hsc_index, k, m):
    """:func:`lattice_census` over ``k`` chunks, with clone ids below ``m``."""
    n = ctype.shape[0]
    counts = np.zeros((k, 2, n_types), dtype=np.int64)
    clone_cells = np.zeros((k, m), dtype=np.int64)
    hsc_clone_cells = np.zeros((k, m), dtype=np.int64)
    hsc_transduced = np.zeros(k, dtype=np.int64)
    hsc_copies = np.zeros(k, dtype=np.int64)
    for c in prange(k):
        transduced = 0
        copies = 0
        for i in range(c * n // k, (c + 1) * n // k):
            t = ctype[i]
            if t == EMPTY:
                continue
            graft = (flags[i] & GRAFT) != 0
            counts[c, 1 if graft else 0, t] += 1
            if graft:
                clone_cells[c, clone[i]] += 1
            if t == hsc_index:
                v = vcn[i]
                transduced += v != 0
                copies += v
                if graft:
                    hsc_clone_cells[c, clone[i]] += 1
        hsc_transduced[c] = transduced
        hsc_copies[c] = copies
    cells = _sum_chunks(clone_cells)
    hsc_cells = _sum_chunks(hsc_clone_cells)
    top = m - 1  # the largest clone id with a graft cell (0 when there is none)
    while top > 0 and cells[top] == 0:
        top -= 1
    totals = _sum_chunks(counts.reshape((k, 2 * n_types))).reshape((2, n_types))
    return totals, hsc_transduced.sum(), hsc_copies.sum(), cells[: top + 1].copy(), hsc_cells[: top + 1].copy()


@njit(**JIT)
def _sum_chunks(per_chunk):
    """Column sums of a (chunks, m) int64 array (explicit loops: no parallel array expression)."""
    out = per_chunk[0].copy()
    for c in range(1, per_chunk.shape[0]):
        for j in range(per_chunk.shape[1]):
            out[j] += per_chunk[c, j]
    return out


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


@njit(**JIT)
def nearest_centre_distance_within(size, dims, centres, periodic, radius):
    """:func:`nearest_centre_distance` where it is at most ``radius``; ``inf`` elsewhere.

    Each centre visits only the box of half-width ``radius`` around it, so the
    cost is (number of centres) x (2 radius + 1)^dims, not sites x centres: a
    niche map whose vessel density is fixed per site costs time in proportion
    to the lattice. Needs ``2 radius < size`` (each offset in the box is then
    the shorter way round of a periodic axis). Distances are computed with
    the same arithmetic as :func:`nearest_centre_distance`, so where both are
    finite they are the same values.
    """
    n = size**dims
    best = np.full(n, np.inf)
    r2 = float(radius) * float(radius)
    n_centres = centres.shape[0]
    zr = radius if dims == 3 else 0
    for c in range(n_centres):
        cx = centres[c, 0]
        cy = centres[c, 1]
        cz = centres[c, 2] if dims == 3 else 0
        for oz in range(-zr, zr + 1):
            z = cz + oz
            if z < 0 or z >= size:
                if not periodic:
                    continue
                z = z + size if z < 0 else z - size
            for oy in range(-radius, radius + 1):
                y = cy + oy
                if y < 0 or y >= size:
                    if not periodic:
                        continue
                    y = y + size if y < 0 else y - size
                for ox in range(-radius, radius + 1):
                    x = cx + ox
                    if x < 0 or x >= size:
                        if not periodic:
                            continue
                        x = x + size if x < 0 else x - size
                    fx = float(abs(ox))
                    fy = float(abs(oy))
                    fz = float(abs(oz))
                    d2 = fx * fx + fy * fy + fz * fz if dims == 3 else fx * fx + fy * fy
                    if d2 > r2:
                        continue
                    d = np.sqrt(d2)
                    i = x + size * (y + size * z)
                    if d < best[i]:
                        best[i] = d
    return best
