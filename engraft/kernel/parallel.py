"""The parallel agent kernel: sublattice (graph-colouring) updates under ``prange``.

Same rules as :mod:`engraft.kernel.sequential` (model page, section 4), a
different update order. A visit reads and writes only its site and its
neighbours (distance 1: a division writes a daughter into a neighbour). One
step:

1. **Stripes.** The lattice is cut along its slowest axis (y in 2D, z in 3D)
   into an even number of stripes (slabs in 3D), each at least 2 lines high
   (:func:`stripes`). Stripes 0, 2, 4, ... are stripe colour 0, stripes 1, 3,
   5, ... colour 1. Two stripes of one colour have a stripe of the other
   between them, so their sites are at least 3 apart (across the wrap, too:
   the number of stripes is even), their neighbourhoods are disjoint, and
   all stripes of one colour can be swept at once, by any number of threads,
   without a race. The two stripe colours are swept in a fresh random order
   each step; the stripes of a colour are split into ``min(N_CHUNKS,
   stripes)`` chunks that ``prange`` spreads over threads (one stripe, or a
   lattice under :data:`PARALLEL_MIN_SITES` sites, is one chunk, swept on
   the calling thread). The chunks depend on the lattice only, never on the
   thread count. A stripe holds about :data:`STRIPE_SITES` sites, so it stays
   in the core's cache while it is swept.
2. **Site colours within a stripe.** One thread sweeps a stripe colour by
   colour: the 3 x 3 (2D) / 3 x 3 x 3 (3D) block colouring, colour ``(x mod
   3, y mod 3[, z mod 3])``, 9 / 27 colours, visited in a fresh random order
   each step (the same order in every stripe). Two sites of one colour are
   never neighbours, so a line of one colour's sites can be screened in one
   pass and visited in a second (below). *Periodic lattices whose size is not
   a multiple of 3* would put colour 0 next to colour 0 across the wrap;
   there each axis keeps ``coordinate mod 3`` on its first ``3 * (L // 3)``
   coordinates and gives each of the last ``L mod 3`` coordinates a colour
   of its own (4 or 5 colours per axis: :func:`axis_colouring`). A closed
   boundary does not wrap and keeps 3 colours per axis at any size.
   Every site occupied at the start of the step is visited once; a daughter
   born in the step is marked (``mark``) and not visited before the next one.
3. Each visit draws its random numbers from the counter-based stream
   ``counter_uniform(key, step, site, draw)`` (:mod:`engraft.kernel.rng`),
   with one ``draw`` index per purpose (:data:`D_EVENT`, ...), so a site's
   draws do not depend on which thread ran it or when.
4. Nothing shared is written under ``prange``: each chunk writes its own row
   of exit tallies (``chunk_exits``) and empty-site counts (``chunk_counts``)
   and its own slice of pending blood entries (``push_*``: a cell that leaves
   into the blood, or a daughter placed through the pool, is parked there).
   After each stripe colour the pending entries join the pool serially,
   chunk by chunk; after the sweep the chunk tallies are summed in chunk
   order.
5. The blood phase is :func:`engraft.kernel.sequential.blood_phase`, run
   serially with a xoshiro256** state seeded from the counter stream of the
   step (which also shuffles the colour orders).

Because stripes, chunks, draws and merge orders are fixed by the lattice,
the seed and the step alone, results are bit-identical for any number of
threads. They are *not* those of the sequential kernel (another update
order, another stream); the two agree in distribution
(``tests/test_parallel.py``).

The visit order is the one real difference from random sequential update:
within a step, two neighbours in one stripe are updated in the order of
their site colours, and two neighbours in two stripes in the order of the
stripe colours; each order is shared by all pairs with the same pair of
colours. Each step draws new orders, so no neighbour is systematically
first.

Why stripes, rather than sweeping each site colour over the whole lattice:
that reads the whole state once per colour (9 / 27 times a step) from
memory, where a stripe is read once and swept from cache; and it starts two
parallel loops a step instead of 9 / 27.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange, uint8, uint64

from engraft.kernel.bits import pack_bytes, trailing_zeros
from engraft.kernel.jit import JIT, PARALLEL_JIT
from engraft.kernel.layout import (
    C_EMPTY,
    E_ACTIVATE,
    E_DIE,
    E_EGRESS,
    E_SILENCE,
    EMPTY,
    FLAG_QUIESCENT,
    HSC_OFF_NICHE,
    HSC_RESTING,
    N_EXIT_QUANTITIES,
)
from engraft.kernel.rng import U53, splitmix64
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
    random_empty_neighbours,
    renew_mother,
    rest_in_niche,
    settle,
    silence,
    transgene_state,
)
from engraft.kernel.sequential import (
    blood_phase,
    screen_passes,
    screen_probabilities,
    screen_thresholds,
    shuffle_prefix,
)

__all__ = ["N_CHUNKS", "Workspace", "axis_colouring", "coarse_levels", "colour_of_sites", "counter_key",
           "division_thresholds", "fixed_daughters", "free_columns", "free_row", "has_room", "line_from_bits",
           "line_room", "make_workspace", "mark_free", "pack_flags", "run_steps", "screen_line_sparse",
           "screen_passes", "screen_stripe", "site_uniform", "step_base", "StepTables", "stripe_classes", "stripes"]

#: chunks per stripe colour: fixed, so that results do not depend on the thread count
N_CHUNKS = 64
#: marks cycle through 1 .. MARK_PERIOD and are all cleared when the cycle restarts
MARK_PERIOD = 255
#: lattices with fewer sites than this are swept on the calling thread (same result)
PARALLEL_MIN_SITES = 1024
#: below this fraction of occupied sites, a step screens each line's occupied sites only
#: (:func:`screen_line_sparse`); above it, every site of each stripe at once
#: (:func:`screen_stripe`), which is cheaper on a crowded lattice. The same sites pass
#: either way (measurements: docs/performance.md).
SPARSE_OCCUPANCY = 0.5
#: on a sparse lattice, a line with at least this many sites past the screen first marks the
#: columns that have room for a daughter (:func:`free_columns`), so that most divisions on a
#: crowded line find out they must wait from 3 bits instead of 8 / 26 neighbours (a dense
#: lattice always does, from the stripe's free bit sets: :func:`line_room`). The same result
#: either way; it pays off only on crowded lines (docs/performance.md).
COLUMNS_MIN_PASSED = 16
#: sites per stripe aimed at (about 200 KB of state: it stays in a core's L2 cache
#: while the 9 / 27 site colours are swept over it)
STRIPE_SITES = 16384
#: stripes a lattice is cut into at least, where each can still be 2 lines high
MIN_STRIPES = 8

# the ``draw`` argument of counter_uniform, one per purpose of a visit
D_EVENT, D_TYPE, D_TYPE2, D_TARGET = 0, 1, 2, 3
#: bits of a draw the stripe screen compares (:func:`screen_row`): a site whose draw shares them
#: with its type's threshold (one in 2**COARSE_BITS) is a candidate the exact screen may drop
COARSE_BITS = 7
#: draw index of the per-step serial stream (colour order, blood)
D_SERIAL = 4
N_VISIT_DRAWS = 4

_STEP_MIX = 0x100000001B3  # as in engraft.kernel.rng.counter_uniform


# ----------------------------------------------------------------------------------
# the counter-based stream, split so that the per-step part is hashed once
# ----------------------------------------------------------------------------------
@njit(**JIT)
def step_base(key, step, draw):
    """The part of ``counter_uniform(key, step, site, draw)`` that does not depend on ``site``."""
    return splitmix64(uint64(key) ^ splitmix64(uint64(step) * uint64(_STEP_MIX) + uint64(draw)))


@njit(**JIT)
def site_uniform(base, site):
    """``counter_uniform(key, step, site, draw)`` given ``base = step_base(key, step, draw)``."""
    return float(splitmix64(uint64(base) ^ uint64(site)) >> uint64(11)) * U53


@njit(**JIT)
def counter_key(state):
    """The counter stream's key: a hash of a run's xoshiro256** seed state (uint64[4])."""
    return splitmix64(state[0] ^ splitmix64(state[1] ^ splitmix64(state[2] ^ splitmix64(state[3]))))


@njit(**JIT)
def seed_serial(serial, key, step):
    """Seed the xoshiro256** state of one step's serial phases from the counter stream."""
    base = step_base(key, step, D_SERIAL)
    for k in range(4):
        serial[k] = splitmix64(base ^ uint64(k))
    if serial[0] == 0 and serial[1] == 0 and serial[2] == 0 and serial[3] == 0:  # pragma: no cover
        serial[0] = 1


# ----------------------------------------------------------------------------------
# the colouring
# ----------------------------------------------------------------------------------
def axis_colouring(size: int, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Colour classes along one axis: class ``a`` holds ``first[a] + 3 k``, ``k < count[a]``.

    Two coordinates of one class are at least 3 apart (across the wrap, too,
    on a periodic axis), so sites whose classes agree on every axis have
    disjoint Moore neighbourhoods.

    Parameters
    ----------
    size : sites along the axis (>= 1).
    periodic : whether the axis wraps around.

    Returns
    -------
    first, count : int64 arrays, one entry per class.
    """
    if not periodic or size % 3 == 0:
        first = [a for a in range(min(3, size))]
        count = [len(range(a, size, 3)) for a in first]
    else:
        body = 3 * (size // 3)  # coordinates 0 .. body-1 keep coordinate mod 3
        first = [a for a in range(min(3, body))] + list(range(body, size))
        count = [body // 3] * min(3, body) + [1] * (size - body)
    return np.asarray(first, dtype=np.int64), np.asarray(count, dtype=np.int64)


def colour_of_sites(size: int, dims: int, periodic: bool) -> np.ndarray:
    """The colour of every site (int64, site order), as :func:`run_steps` uses them."""
    first, count = axis_colouring(size, periodic)
    n_axis = first.size
    axis_class = np.empty(size, dtype=np.int64)
    for a in range(n_axis):
        axis_class[first[a] + 3 * np.arange(count[a])] = a
    idx = np.arange(size**dims)
    colour = axis_class[idx % size] + n_axis * axis_class[(idx // size) % size]
    if dims == 3:
        colour += n_axis * n_axis * axis_class[idx // (size * size)]
    return colour


def stripes(size: int, dims: int) -> np.ndarray:
    """Boundaries of the stripes (2D) / slabs (3D) along the slowest axis.

    Stripe ``t`` holds the sites whose last coordinate (y in 2D, z in 3D) is in
    ``bounds[t] .. bounds[t+1] - 1``. A stripe holds about
    :data:`STRIPE_SITES` sites, so that it stays in a core's cache while its
    colours are swept, and at least 2 lines of the slow axis, so that two
    stripes with one stripe between them are at least 3 apart; there are at
    least :data:`MIN_STRIPES` stripes where the lattice allows it, so that
    mid-sized lattices still spread over threads. The stripes depend on the
    lattice only. Their number is even (on a periodic lattice, stripe 0 and
    the last one touch) unless there is a single stripe.
    """
    plane = size ** (dims - 1)
    height = max(2, min(-(-STRIPE_SITES // plane), size // MIN_STRIPES))
    m = max(1, size // height)
    if m % 2 and m > 1:
        m -= 1
    return np.array([t * size // m for t in range(m + 1)], dtype=np.int64)


def stripe_classes(bounds: np.ndarray, first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The part of each axis class inside each stripe: ``first[a] + 3 k`` in the stripe.

    Returns ``start, n``, shape (stripes, classes): the class's coordinates
    in stripe ``t`` are ``start[t, a] + 3 j`` for ``j < n[t, a]``.
    """
    m = bounds.size - 1
    start = np.zeros((m, first.size), dtype=np.int64)
    n = np.zeros((m, first.size), dtype=np.int64)
    for t in range(m):
        for a in range(first.size):
            coords = first[a] + 3 * np.arange(count[a])
            inside = coords[(coords >= bounds[t]) & (coords < bounds[t + 1])]
            if inside.size:
                start[t, a] = inside[0]
                n[t, a] = inside.size
    return start, n


class Workspace(NamedTuple):
    """Scratch arrays of the parallel kernel (passed after the run's own arrays)."""

    mark: np.ndarray  # uint8[n_sites]: 1 + step % MARK_PERIOD on a daughter born in that step
    axis_first: np.ndarray
    axis_count: np.ndarray
    stripe_start: np.ndarray  # (stripes, axis classes): see stripe_classes
    stripe_n: np.ndarray
    stripe_slot0: np.ndarray  # (stripes,): first pending slot of the stripe (within its stripe colour)
    colour_order: np.ndarray  # site colours, shuffled each step
    stripe_order: np.ndarray  # the 2 stripe colours, shuffled each step
    chunk_exits: np.ndarray  # (N_CHUNKS, n_types, N_EXIT_QUANTITIES)
    chunk_counts: np.ndarray  # (N_CHUNKS, 2): changes of the empty-site counters
    push_type: np.ndarray
    push_flags: np.ndarray
    push_vcn: np.ndarray
    push_divs: np.ndarray
    push_clone: np.ndarray
    push_n: np.ndarray  # (N_CHUNKS,)
    serial: np.ndarray  # xoshiro256** state of the serial phases
    bases: np.ndarray  # step_base of each visit draw, for the current step
    scratch_nb: np.ndarray  # (N_CHUNKS, neighbours): free neighbours of a dividing cell
    scratch_line: np.ndarray  # (N_CHUNKS, longest line): the sites of a line that passed the screen
    scratch_bits: np.ndarray  # (N_CHUNKS, longest line): their event draws (53 random bits)
    scratch_draws: np.ndarray  # (N_CHUNKS, longest line): the event draws of a whole line (sparse: its
    #                            occupied positions)
    scratch_cols: np.ndarray  # (N_CHUNKS, 64 x words per row): per column, whether a line's neighbour
    #                           rows hold a site a progenitor daughter may take (free_columns, sparse)
    stripe_rows: np.ndarray  # (stripes + 1,): first row of each stripe (row: y in 2D, y + size z in 3D)
    class_words: np.ndarray  # (axis classes, words per row): bit x set where column x is in the class
    inner_words: np.ndarray  # (words per row,): bit x set for 0 < x < size - 1
    scratch_colw: np.ndarray  # (N_CHUNKS, words per row): a line's free columns as bits (has_room)
    scratch_flags: np.ndarray  # (N_CHUNKS, 64 x words per row): one row's screen flags (screen_row)
    scratch_cand: np.ndarray  # (N_CHUNKS, rows per stripe, words per row): the stripe's candidates
    scratch_wait: np.ndarray  # (N_CHUNKS, rows per stripe, words per row): its sure divisions (screen_row)
    scratch_free: np.ndarray  # (N_CHUNKS, rows per stripe + 2 x halo, words per row): its free sites and
    #                           those of the rows around it (screen_stripe, mark_free)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)


def site_words(columns: np.ndarray, n_words: int) -> np.ndarray:
    """The bit set (uint64 words, bit ``x % 64`` of word ``x // 64``) of the given columns."""
    flags = np.zeros(64 * n_words, dtype=np.uint8)
    flags[columns] = 1
    return np.packbits(flags, bitorder="little").view("<u8").astype(np.uint64)


def make_workspace(n_sites: int, dims: int, size: int, periodic: bool, n_types: int) -> Workspace:
    """Allocate the parallel kernel's scratch arrays for one lattice.

    Parameters
    ----------
    n_sites : ``size ** dims``.
    dims, size, periodic : the lattice geometry.
    n_types : number of cell types (rows of the exit tally).
    """
    first, count = axis_colouring(size, periodic)
    n_colours = first.size**dims
    bounds = stripes(size, dims)
    start, n = stripe_classes(bounds, first, count)
    plane = size ** (dims - 1)
    stripe_sites = np.diff(bounds) * plane
    slot0 = np.zeros(bounds.size - 1, dtype=np.int64)
    for colour in (0, 1):  # stripes of one colour take consecutive slot ranges
        members = np.arange(colour, bounds.size - 1, 2)
        slot0[members] = np.concatenate([[0], np.cumsum(stripe_sites[members])[:-1]])
    push_capacity = int(max(stripe_sites[0::2].sum(), stripe_sites[1::2].sum()))
    n_words = -(-size // 64)
    rows_per_plane = size if dims == 3 else 1
    rows_max = int(np.diff(bounds).max()) * rows_per_plane
    class_words = np.stack([site_words(first[a] + 3 * np.arange(count[a]), n_words) for a in range(first.size)])
    return Workspace(
        mark=np.zeros(n_sites, dtype=np.uint8),
        axis_first=first,
        axis_count=count,
        stripe_start=start,
        stripe_n=n,
        stripe_slot0=slot0,
        colour_order=np.arange(n_colours, dtype=np.int64),
        stripe_order=np.arange(2, dtype=np.int64),
        chunk_exits=np.zeros((N_CHUNKS, n_types, N_EXIT_QUANTITIES)),
        chunk_counts=np.zeros((N_CHUNKS, 2), dtype=np.int64),
        push_type=np.full(push_capacity, EMPTY, dtype=np.int8),
        push_flags=np.zeros(push_capacity, dtype=np.uint8),
        push_vcn=np.zeros(push_capacity, dtype=np.uint8),
        push_divs=np.zeros(push_capacity, dtype=np.uint8),
        push_clone=np.zeros(push_capacity, dtype=np.int32),
        push_n=np.zeros(N_CHUNKS, dtype=np.int64),
        serial=np.zeros(4, dtype=np.uint64),
        bases=np.zeros(N_VISIT_DRAWS, dtype=np.uint64),
        scratch_nb=np.zeros((N_CHUNKS, 3**dims - 1), dtype=np.int64),
        scratch_line=np.zeros((N_CHUNKS, int(count.max())), dtype=np.int64),
        scratch_bits=np.zeros((N_CHUNKS, int(count.max())), dtype=np.uint64),
        scratch_draws=np.zeros((N_CHUNKS, int(count.max())), dtype=np.uint64),
        scratch_cols=np.zeros((N_CHUNKS, 64 * n_words), dtype=np.uint8),
        stripe_rows=bounds * rows_per_plane,
        class_words=class_words,
        inner_words=site_words(np.arange(1, size - 1), n_words),
        scratch_colw=np.zeros((N_CHUNKS, n_words), dtype=np.uint64),
        scratch_flags=np.zeros((N_CHUNKS, 64 * n_words), dtype=np.uint8),
        scratch_cand=np.zeros((N_CHUNKS, rows_max, n_words), dtype=np.uint64),
        scratch_wait=np.zeros((N_CHUNKS, rows_max, n_words), dtype=np.uint64),
        scratch_free=np.zeros((N_CHUNKS, rows_max + 2 * rows_per_plane, n_words), dtype=np.uint64),
    )


# ----------------------------------------------------------------------------------
# one chunk of stripes
# ----------------------------------------------------------------------------------
@njit(**RULE_JIT)
def park(slot, t, f, v, d, c, push_type, push_flags, push_vcn, push_divs, push_clone):
    """``enter_blood``: park a cell bound for the blood in a chunk's pending slot (as ``pool_push`` does)."""
    push_type[slot] = t
    push_flags[slot] = f & ~FLAG_QUIESCENT
    push_vcn[slot] = v
    push_divs[slot] = d
    push_clone[slot] = c


@njit(**JIT)
def division_thresholds(rules):
    """Per cell type: event bits below which a progenitor's event is a division, in every state.

    The event is a division (category 0) when ``u < p_any`` and ``u / p_any <
    cum[..., 0]``, that is below ``p_any cum[..., 0]`` up to rounding; the
    threshold is the smallest such product over the transgene states, less a
    relative 1e-9 so that rounding can never cross it, as ``floor(p 2**53)``.
    0 for HSCs (their state rows differ on and off a niche) and for types
    that never divide.
    """
    p_any = rules.p_any
    cum = rules.cum
    n_types = p_any.shape[0]
    out = np.zeros(n_types, dtype=np.uint64)
    for t in range(n_types):
        if rules.is_hsc[t] != 0:
            continue
        p = 1.0
        for g in range(p_any.shape[2]):
            p = min(p, p_any[t, 0, g] * cum[t, 0, g, 0])
        out[t] = uint64(np.floor(p * (1.0 - 1e-9) * 9007199254740992.0))
    return out


@njit(**JIT)
def fixed_daughters(diff_cum):
    """Per cell type: the type that both daughters of a progenitor division take, where the
    division has a single outcome, else -1 (and -1 for HSCs, whose daughters follow
    self-renewal).

    ``draw_daughter_type`` returns the first category whose cumulative
    probability exceeds its draw ``u`` (in [0, 1)): when the first positive
    entry of the type's row is already 1, that is the answer for every
    draw, and the two draws need not be made. The counter-based stream gives
    every draw its own counter, so leaving them out changes no other draw.
    (A committed progenitor that only makes more of itself, as GMPs, MkPs,
    EPs and CLPs do in the shipped configs, is such a type.)
    """
    n_types = diff_cum.shape[0]
    out = np.full(n_types, -1, dtype=np.int64)
    for t in range(n_types):
        for c in range(diff_cum.shape[1]):
            if diff_cum[t, c] > 0.0:
                if diff_cum[t, c] >= 1.0:
                    out[t] = c
                break
    return out


@njit(**JIT)
def coarse_levels(thresholds, div_thresholds):
    """The stripe screen's tables: per cell type + 1, the top :data:`COARSE_BITS` bits of the draw
    at which a site may pass the screen, and below which a progenitor surely divides.

    Returns uint64[4]: candidate levels of types + 1 = 0..7 (one byte each, entry ``t + 1`` in
    byte ``(t + 1) % 8``), the same for 8..15, then the division levels likewise. With ``c`` the
    top bits of a site's 53 event bits ``b``: ``b < thresholds[t + 1]`` implies ``c <
    candidate level``, and ``c < division level`` implies ``b < div_thresholds[t]``
    (:func:`screen_row`). Types from 15 on have candidate level ``2**COARSE_BITS`` (every draw
    is a candidate) and division level 0.
    """
    words = np.zeros(4, dtype=np.uint64)
    shift = uint64(53 - COARSE_BITS)
    for t1 in range(min(thresholds.shape[0], 16)):
        th = thresholds[t1]
        cand = uint64(0) if th == 0 else ((th - uint64(1)) >> shift) + uint64(1)  # at most 2**COARSE_BITS
        wait = uint64(0) if t1 == 0 else div_thresholds[t1 - 1] >> shift
        byte = uint64(8 * (t1 % 8))
        words[t1 // 8] |= cand << byte
        words[2 + t1 // 8] |= wait << byte
    return words


@njit(**JIT)
def screen_row(row, size, base, ctype, niche, divs, hsc_type, levels, flags):
    """The stripe screen of one row of sites, ``row .. row + size - 1``: a flag byte per site.

    Bit 0, *candidate*: the site may pass the screen (:func:`screen_passes`):
    the top :data:`COARSE_BITS` of its event draw are below its type's
    candidate level, or it is an HSC off a niche. Every site that passes is a
    candidate; a few more (their draw shares its top bits with the threshold)
    are dropped by the exact test when their line is visited.

    Bit 1, *sure division*: a progenitor with divisions left whose draw's top
    bits are below its type's division level: its event is a division in
    every transgene state (as for :func:`division_thresholds`, of which this
    is a part).

    Bit 2, *free*: an empty site off the niches, which a progenitor daughter
    may take (:func:`free_row`).

    One branch-free loop that the compiler vectorises: the draw is hashed in
    place and the levels of a type are a byte of a word (:func:`coarse_levels`),
    picked by a shift rather than a table read. A site's type, divisions and
    niche change only when the site itself is visited (or, when empty, take
    a daughter, which waits for the next step), so flags computed before a
    stripe's sweep hold for each site until its visit.
    """
    r = uint64(row)
    b = uint64(base)
    hsc1 = uint64(hsc_type + 1)
    top = uint64(64 - COARSE_BITS)
    c_lo, c_hi, w_lo, w_hi = levels[0], levels[1], levels[2], levels[3]
    for x in range(size):
        ux = uint64(x)
        i = r + ux
        c = splitmix64(b ^ i) >> top  # the top bits of site_uniform(base, i)
        t1 = uint64(ctype[i] + 1)  # 0: empty
        byte = (t1 & uint64(7)) << uint64(3)
        low = t1 < uint64(8)
        known = t1 < uint64(16)
        cand_level = ((c_lo if low else c_hi) >> byte) & uint64(255)
        wait_level = ((w_lo if low else w_hi) >> byte) & uint64(255)
        cand = ((c < cand_level) & known) | (not known) | ((t1 == hsc1) & (niche[i] == 0))
        wait = (c < wait_level) & known & (divs[i] > 0)
        free = (t1 == uint64(0)) & (niche[i] == 0)
        flags[ux] = uint8(cand) | (uint8(wait) << uint8(1)) | (uint8(free) << uint8(2))


@njit(**JIT)
def free_row(row, size, ctype, niche, flags):
    """Flag byte 1 for each site of a row ``row .. row + size - 1`` that is empty and off the
    niches (a site a progenitor daughter may take), else 0. Branch-free; vectorised."""
    r = uint64(row)
    for x in range(size):
        i = r + uint64(x)
        flags[uint64(x)] = (ctype[i] == EMPTY) & (niche[i] == 0)


@njit(**JIT)
def pack_flags(flags, bit, words):
    """Bit ``bit`` of each flag byte (``flags``: 8 bytes per word of ``words``) as a bit set:
    ``words[w]`` bit ``j`` is that bit of ``flags[64 w + j]``."""
    v = flags.view(np.uint64)
    shift = uint64(bit)
    for w in range(words.shape[0]):
        c = uint64(0)
        for j in range(8):
            c |= pack_bytes(v[8 * w + j] >> shift) << uint64(8 * j)
        words[w] = c


@njit(**JIT)
def pack_screen(flags, cand, wait, free):
    """The three flags of :func:`screen_row` as bit sets, in one pass over the flag bytes (one
    read of 8 bytes for all three; :func:`pack_flags` packs one flag)."""
    v = flags.view(np.uint64)
    for w in range(cand.shape[0]):
        c = uint64(0)
        d = uint64(0)
        f = uint64(0)
        for j in range(8):
            b = v[8 * w + j]
            shift = uint64(8 * j)
            c |= pack_bytes(b) << shift
            d |= pack_bytes(b >> uint64(1)) << shift
            f |= pack_bytes(b >> uint64(2)) << shift
        cand[w] = c
        wait[w] = d
        free[w] = f


@njit(**JIT)
def screen_stripe(r_lo, r_hi, halo, n_rows, size, base, ctype, niche, divs, hsc_type, levels, flags, cand, wait,
                  free):
    """Screen rows ``r_lo .. r_hi - 1`` of a stripe into bit sets, one word per 64 sites (the bits
    past ``size`` are 0): ``cand[r - r_lo]``, ``wait[r - r_lo]`` and ``free[r - r_lo + halo]``
    hold the three flags of :func:`screen_row` for row ``r``. ``free`` also covers the ``halo``
    rows on either side (a plane in 3D, a row in 2D: the neighbours of the stripe's lines), where
    they are on the lattice (rows ``0 .. n_rows - 1``). :func:`mark_free` keeps ``free``
    up to date through the stripe's sweep."""
    for r in range(r_lo - halo, r_hi + halo):
        if r < 0 or r >= n_rows:
            continue
        if r_lo <= r < r_hi:
            screen_row(r * size, size, base, ctype, niche, divs, hsc_type, levels, flags)
            pack_screen(flags, cand[r - r_lo], wait[r - r_lo], free[r - r_lo + halo])
        else:
            free_row(r * size, size, ctype, niche, flags)
            pack_flags(flags, 0, free[r - r_lo + halo])


@njit(**JIT)
def mark_free(free, row0, size, site, is_free):
    """Set (``is_free``) or clear the bit of ``site`` in a stripe's free bit sets, whose row 0 is
    lattice row ``row0`` (:func:`screen_stripe`); a site outside them (across a periodic edge)
    is not tracked and is left alone."""
    q = site // size
    r = q - row0
    if 0 <= r < free.shape[0]:
        x = site - q * size
        bit = uint64(1) << uint64(x & 63)
        if is_free:
            free[r, x >> 6] |= bit
        else:
            free[r, x >> 6] &= ~bit


@njit(**JIT)
def line_room(free, r, dims, size, colw):
    """The free columns of the line in stripe row ``r`` of ``free``, as bits: column ``x`` is
    set if one of the rows around the line (``r - 1 .. r + 1``; in 3D also a plane up and
    down) holds a free site there (as :func:`free_columns` computes from the lattice)."""
    for w in range(colw.shape[0]):
        colw[w] = free[r - 1, w] | free[r, w] | free[r + 1, w]
    if dims == 3:
        for dz in (-size, size):
            for w in range(colw.shape[0]):
                colw[w] |= free[r + dz - 1, w] | free[r + dz, w] | free[r + dz + 1, w]


@njit(**JIT)
def line_from_bits(row, x_first, n_words, base, cand, klass, wait, inner, colw, use_room, ctype, niche, hsc_type,
                   thresholds, passed, passed_bits):
    """The sites of one line that pass the screen, from its stripe's bit sets: as
    :func:`screen_line_sparse` writes them (positions ``q``, ``x = x_first + 3 q``, in increasing
    order, and their event bits).

    The line's sites are ``cand & klass`` (its axis class). With ``use_room``
    (``colw``: the line's free columns as bits, :func:`line_room`), a sure
    division off the x edges (``inner``) with no free column around it is
    left out first: its division waits (:func:`has_room`). The rest get the
    exact screen, on their full event draw.
    """
    b = uint64(base)
    n = 0
    for w in range(n_words):
        act = cand[w] & klass[w]
        if use_room:
            c = colw[w]
            left = c << uint64(1)  # bit x: column x - 1
            right = c >> uint64(1)  # bit x: column x + 1
            if w > 0:
                left |= colw[w - 1] >> uint64(63)
            if w + 1 < n_words:
                right |= colw[w + 1] << uint64(63)
            act &= ~(wait[w] & inner[w] & ~(c | left | right))
        while act != 0:
            x = 64 * w + trailing_zeros(act)
            act &= act - uint64(1)
            i = uint64(row + x)
            bits = splitmix64(b ^ i) >> uint64(11)
            passed[uint64(n)] = (x - x_first) // 3
            passed_bits[uint64(n)] = bits
            n += screen_passes(bits, ctype[i], niche[i], hsc_type, thresholds)
    return n


@njit(**JIT)
def screen_line_sparse(start, line_len, base, ctype, niche, hsc_type, thresholds, passed, passed_bits, occupied):
    """Pass 1 over one line of a sparse lattice: write the positions ``q`` of the sites with
    something to do, and their event bits.

    Site ``start + 3 q`` passes :func:`screen_passes` with its event draw
    ``site_uniform(base, site)``. A first branch-free pass lists the line's
    occupied positions in ``occupied`` (one byte read per site); only those
    sites are drawn and screened, so an empty site costs no hash (an empty
    site never passes: its threshold is 0 and it is no HSC). The passing
    sites go to ``passed`` in increasing ``q``, their 53 event bits to
    ``passed_bits``: what :func:`line_from_bits` writes for the same line
    without its room test.
    """
    m = 0
    for q in range(line_len):
        occupied[uint64(m)] = q
        m += ctype[uint64(start + 3 * q)] != EMPTY
    n = 0
    for k in range(m):
        q = np.int64(occupied[uint64(k)])
        i = uint64(start + 3 * q)
        t = ctype[i]
        bits = splitmix64(base ^ i) >> uint64(11)
        passed[uint64(n)] = q
        passed_bits[uint64(n)] = bits
        n += screen_passes(bits, t, niche[i], hsc_type, thresholds)
    return n


@njit(**JIT)
def free_columns(row, size, dims, ctype, niche, cols):
    """Which columns of a line's neighbourhood hold a site a progenitor daughter may take.

    ``cols[x]`` is 1 if column ``x`` of the rows around line ``row`` (rows
    y-1, y, y+1; in 3D also in planes z-1 and z+1) holds an empty site that
    is not a niche, else 0. With the Moore neighbourhood, a site ``x`` off
    the edges has such a neighbour exactly when ``cols[x-1] | cols[x] |
    cols[x+1]`` (the site itself is occupied). Sites of one colour on a line
    are 3 apart, so each column belongs to one site's neighbourhood: a visit
    changes only its own columns, and ``cols`` computed before the visits of
    a line stays exact for all of them. The line must be off the y (and z)
    edges. Branch-free over whole rows, which the compiler vectorises. A
    sparse step's crowded lines read it; a dense step keeps the same answer
    for all lines of a stripe in bit sets (:func:`line_room`).
    """
    for c in range(size):
        cols[c] = 0
    plane = size * size
    for a in range(3 if dims == 3 else 1):
        dz = (a - 1) * plane if dims == 3 else 0
        for b in range(3):
            r = uint64(row + dz + (b - 1) * size)
            for c in range(size):
                uc = uint64(c)
                cols[uc] |= (ctype[r + uc] == EMPTY) & (niche[r + uc] == 0)


@njit(**JIT)
def has_room(colw, x):
    """Whether a site at ``x`` off the x edges has a neighbour a progenitor daughter may take
    (``colw``: the free columns of its line as bits, :func:`line_room`, or
    :func:`free_columns` packed); 0 or 1."""
    lo = uint64(x - 1)
    mid = uint64(x)
    hi = uint64(x + 1)
    one = uint64(1)
    return ((colw[lo >> uint64(6)] >> (lo & uint64(63))) | (colw[mid >> uint64(6)] >> (mid & uint64(63)))
            | (colw[hi >> uint64(6)] >> (hi & uint64(63)))) & one


class StepTables(NamedTuple):
    """What :func:`run_steps` derives from the rules once per call, for :func:`sweep_chunk`."""

    deltas: np.ndarray  # site-index offsets of the neighbours, off the edges
    thresholds: np.ndarray  # screen_thresholds: per type + 1
    div_thresholds: np.ndarray  # division_thresholds: per type
    levels: np.ndarray  # coarse_levels
    fixed_daughter: np.ndarray  # fixed_daughters: per type


@njit(**JIT)
def sweep_chunk(k, t_lo, t_hi, stripe_colour, cur_mark, sparse, lat, rules, ws, tabs):
    """Visit the sites of stripes ``t_lo .. t_hi-1`` of one stripe colour (chunk ``k``).

    The ``j``-th stripe of colour ``stripe_colour`` is stripe ``stripe_colour
    + 2 j``. Each stripe is swept colour by colour, in the step's colour order
    (``colour_order``), and each colour line by line: a line is a row of the
    colour's sites along x, ``axis_count[a]`` sites ``axis_first[a] + 3 q``.
    Writes go to the sites of the stripes and their neighbours, and to chunk
    ``k``'s own tallies, pending slots and scratch rows only.

    Each line takes two passes. The first screens out the sites with nothing
    to do: empty, or a cell whose event draw says no event in any state its
    type can have there (an HSC off a niche always passes). On a lattice at
    least half occupied, each stripe is screened whole before its sweep
    (:func:`screen_stripe`, a vectorised pass into bit sets) and each line
    takes its sites from the bit sets (:func:`line_from_bits`); on a sparse
    one (``sparse``), each line screens its occupied sites
    (:func:`screen_line_sparse`). The same sites pass either way, with the
    same draws. The second pass runs the rules on the sites that passed,
    skipping daughters born in this step (``mark``). Both see the same
    values: a visit changes only its site and its neighbours, never another
    site of the colour, and a site's own type, divisions and niche change
    only at its own visit. On a crowded line, a progenitor whose draw means
    a division in any transgene state (:func:`division_thresholds`), with
    divisions left and no free column around it (``colw``,
    :func:`has_room`), is passed over before the rules: such a division
    waits, as the full rules would find. In the stripe screen this is one
    bit operation per 64 sites (the *sure divisions* of :func:`screen_row`);
    on a sparse lattice, a test of its type, its division count and 3 bits.
    A line's free columns come from :func:`free_columns` on a sparse
    lattice; on a dense one from the stripe's free bit sets, computed with
    the screen and kept up to date at each vacated or taken site
    (:func:`mark_free`), so a line reads a few words instead of its
    neighbour rows.

    The rules are those of :mod:`engraft.kernel.rules`, compiled into this
    loop; ``lat``, ``rules``: :mod:`engraft.kernel.structs`, ``ws`` the
    :class:`Workspace`, ``tabs`` the call's :class:`StepTables`.
    """
    ws.push_n[k] = 0
    if t_lo >= t_hi:
        return
    ctype, flags, vcn, divs, clone, affinity, niche = (lat.ctype, lat.flags, lat.vcn, lat.divs, lat.clone,
                                                        lat.affinity, lat.niche)
    mark = ws.mark
    bases = ws.bases
    colour_order = ws.colour_order
    axis_first, axis_count = ws.axis_first, ws.axis_count
    stripe_start, stripe_n, stripe_slot0, stripe_rows = ws.stripe_start, ws.stripe_n, ws.stripe_slot0, ws.stripe_rows
    counts = ws.chunk_counts[k]
    chunk_exits = ws.chunk_exits
    class_words, inner_words = ws.class_words, ws.inner_words
    deltas, thresholds, div_thresholds, levels = tabs.deltas, tabs.thresholds, tabs.div_thresholds, tabs.levels
    fixed_daughter = tabs.fixed_daughter
    # the arrays, read out of the tuples once (an array field read in the loop costs a reference
    # count increment and decrement each time: engraft.kernel.rules)
    push_type, push_flags, push_vcn, push_divs, push_clone = ws.push_type, ws.push_flags, ws.push_vcn, ws.push_divs, ws.push_clone
    is_hsc, max_divisions, terminal = rules.is_hsc, rules.max_divisions, rules.terminal
    diff_cum, exit_cum, p_any, cum = rules.diff_cum, rules.exit_cum, rules.p_any, rules.cum
    expr_weight, offsets = rules.expr_weight, rules.offsets
    hsc_diff_type, self_renewal = rules.hsc_diff_type, rules.self_renewal
    affinity_decay, affinity_min, periodic = rules.affinity_decay, rules.affinity_min, rules.periodic
    hsc_type = rules.hsc_type
    dims = rules.dims
    size = rules.size
    last = size - 1
    placement_pool = rules.placement_pool
    n_neighbours = deltas.shape[0]
    # this chunk's pending slots: one per site it visits
    slot0 = stripe_slot0[stripe_colour + 2 * t_lo]
    n_push = 0
    n_axis = axis_first.shape[0]
    b_event = bases[D_EVENT]
    passed = ws.scratch_line[k]
    passed_bits = ws.scratch_bits[k]
    draws = ws.scratch_draws[k]
    n_colours = colour_order.shape[0]
    cols = ws.scratch_cols[k]
    colw = ws.scratch_colw[k]
    cand = ws.scratch_cand[k]
    wait = ws.scratch_wait[k]
    free = ws.scratch_free[k]
    nb_buf = ws.scratch_nb[k]
    row_flags = ws.scratch_flags[k]
    n_words = colw.shape[0]
    moore = n_neighbours == 3**dims - 1
    # the stripe's free bit sets are read by crowded lines (Moore neighbours, daughters to a
    # neighbour) and kept up to date through the sweep only then
    track_free = not sparse and moore and not placement_pool
    halo = size if dims == 3 else 1  # rows of the free bit sets beyond each side of a stripe
    n_rows = ctype.shape[0] // size
    for sc in range((t_hi - t_lo) * n_colours):  # stripe by stripe, colour by colour
        st = stripe_colour + 2 * (t_lo + sc // n_colours)
        if not sparse and sc % n_colours == 0:  # a new stripe: screen it whole, once
            screen_stripe(stripe_rows[st], stripe_rows[st + 1], halo, n_rows, size, b_event, ctype, niche, divs,
                          hsc_type, levels, row_flags, cand, wait, free)
        free_row0 = stripe_rows[st] - halo  # the lattice row of the free bit sets' row 0
        c = colour_order[sc % n_colours]
        x_class = c % n_axis
        y_class = (c // n_axis) % n_axis
        line_len = axis_count[x_class]
        x_first = axis_first[x_class]
        if dims == 3:  # slabs along z: lines (y, z), y over the whole axis
            n_y = axis_count[y_class]
            y0 = axis_first[y_class]
            n_lines = n_y * stripe_n[st, c // (n_axis * n_axis)]
            z0 = stripe_start[st, c // (n_axis * n_axis)]
        else:  # stripes along y
            n_y = stripe_n[st, y_class]
            y0 = stripe_start[st, y_class]
            n_lines = n_y
            z0 = 0
        for line in range(n_lines):
            y = y0 + 3 * (line % n_y)
            z = z0 + 3 * (line // n_y)
            row = size * (y + size * z)
            inner_yz = (0 < y < last) and (dims == 2 or 0 < z < last)
            # pass 1: the sites with something to do, and for a crowded line which columns have
            # room, once for all its divisions (colw: free_columns, or line_room from the stripe's
            # free bit sets)
            if sparse:
                n_passed = screen_line_sparse(row + x_first, line_len, b_event, ctype, niche, hsc_type, thresholds,
                                              passed, passed_bits, draws)
                use_cols = moore and inner_yz and not placement_pool and n_passed >= COLUMNS_MIN_PASSED
                if use_cols:
                    free_columns(row, size, dims, ctype, niche, cols)
                    pack_flags(cols, 0, colw)
            else:
                use_cols = track_free and inner_yz
                rl = y + size * z - stripe_rows[st]  # the line's row within the stripe
                if use_cols:
                    line_room(free, rl + halo, dims, size, colw)
                n_passed = line_from_bits(row, x_first, n_words, b_event, cand[rl], class_words[x_class], wait[rl],
                                          inner_words, colw, use_cols, ctype, niche, hsc_type, thresholds, passed,
                                          passed_bits)
            for qq in range(n_passed):  # pass 2: the rules
                x = x_first + 3 * passed[qq]
                i = row + x
                t = ctype[i]
                if use_cols and passed_bits[qq] < div_thresholds[t] and 0 < x < last and divs[i] > 0:
                    # a progenitor whose draw means a division in every transgene state, with
                    # divisions left: with no room (colw), it waits, as below (or it
                    # was born in this step: it would not act either)
                    if has_room(colw, x) == 0:
                        continue
                if mark[i] == cur_mark:
                    continue  # born in this step: acts from the next one
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
                u = float(passed_bits[qq]) * U53  # site_uniform(b_event, i)
                event = draw_event(u, t, h, g, p_any, cum)
                if event < 0:
                    continue
                if event == E_DIE:
                    die(i, ctype, flags, vcn, divs, clone, affinity, niche, counts)
                    if track_free:
                        mark_free(free, free_row0, size, i, niche[i] == 0)
                    continue
                if event == E_SILENCE:
                    silence(i, f, flags)
                    continue
                if event == E_ACTIVATE:
                    activate(i, f, flags)
                    continue
                if event == E_EGRESS:
                    park(slot0 + n_push, t, f, v, divs[i], clone[i], push_type, push_flags, push_vcn, push_divs, push_clone)
                    n_push += 1
                    die(i, ctype, flags, vcn, divs, clone, affinity, niche, counts)
                    if track_free:
                        mark_free(free, free_row0, size, i, niche[i] == 0)
                    continue

                # E_DIVIDE: first what the daughter will be
                d = divs[i]
                td = hsc_type
                if hsc:  # the mother stays an HSC
                    td = draw_daughter_type(site_uniform(bases[D_TYPE], i), t, hsc_type, hsc_diff_type, self_renewal, diff_cum)
                elif d == 0:  # a progenitor with no divisions left exits or changes type
                    if terminal[t]:
                        count_exit(k, t, f, v, expr_weight, chunk_exits)
                        die(i, ctype, flags, vcn, divs, clone, affinity, niche, counts)
                        if track_free:
                            mark_free(free, free_row0, size, i, niche[i] == 0)
                    else:
                        differentiate_in_place(i, site_uniform(bases[D_TYPE], i), t, ctype, divs, exit_cum,
                                               max_divisions)
                    continue
                # then where it goes: a random free neighbour (an HSC daughter may take a
                # niche) or, with pool placement, the blood
                target = -1
                if not placement_pool:
                    for_hsc = hsc and td == hsc_type
                    if use_cols and not for_hsc and 0 < x < last:
                        if has_room(colw, x) == 0:
                            continue  # no room: the division waits
                    n_free = random_empty_neighbours(i, x, y, z, inner_yz and 0 < x < last, for_hsc, ctype, niche,
                                                     size, dims, periodic, offsets, deltas, nb_buf)
                    if n_free == 0:
                        continue  # no room: the division waits
                    target = nb_buf[int(site_uniform(bases[D_TARGET], i) * n_free)]
                if hsc:
                    dd = hsc_daughter_divisions(td, hsc_type, max_divisions)
                    df = f & ~FLAG_QUIESCENT
                    if placement_pool:
                        park(slot0 + n_push, td, df, v, dd, clone[i], push_type, push_flags, push_vcn, push_divs, push_clone)
                        n_push += 1
                    else:
                        settle(target, td, df, v, dd, clone[i], affinity[i], ctype, flags, vcn, divs, clone, affinity, niche, counts,
                               td == hsc_type)
                        mark[target] = cur_mark
                        if track_free:
                            mark_free(free, free_row0, size, target, False)
                    rest_in_niche(i, f, flags, niche)
                else:
                    t1 = fixed_daughter[t]
                    t2 = t1
                    if t1 < 0:  # daughters of more than one possible type: draw each
                        t1 = draw_daughter_type(site_uniform(bases[D_TYPE], i), t, hsc_type, hsc_diff_type, self_renewal, diff_cum)
                        t2 = draw_daughter_type(site_uniform(bases[D_TYPE2], i), t, hsc_type, hsc_diff_type, self_renewal, diff_cum)
                    d2 = divisions_for(t2, t, d, max_divisions)
                    renew_mother(i, t1, t, d, ctype, divs, max_divisions)
                    if placement_pool:
                        park(slot0 + n_push, t2, f, v, d2, clone[i], push_type, push_flags, push_vcn, push_divs, push_clone)
                        n_push += 1
                    else:
                        settle(target, t2, f, v, d2, clone[i], 0.0, ctype, flags, vcn, divs, clone, affinity, niche, counts, False)
                        mark[target] = cur_mark
                        if track_free:
                            mark_free(free, free_row0, size, target, False)
    ws.push_n[k] = n_push


# ----------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------
@njit(**PARALLEL_JIT)
def run_steps(n_steps, first_step, key, exits, lat, pool, rules, ws):
    """Advance ``n_steps`` steps; return how many were done.

    ``first_step`` is the run's count of kernel steps before this call (the
    counter stream's step of the first one), ``key`` the stream's key
    (:func:`counter_key`); ``lat``, ``pool``, ``rules``:
    :mod:`engraft.kernel.structs`; ``ws``: the :class:`Workspace` of the
    lattice (:func:`make_workspace`). As in the sequential kernel, fewer than
    ``n_steps`` are done only when the pool might overflow in the next step,
    and ``exits[s]`` receives the exits of the s-th step of this call.
    """
    # the fields this loop reads or writes, as locals (the parallel loop below only passes the
    # tuples on; writes through a tuple field inside a prange body are unsafe: numba issue 5872)
    counters = lat.counters
    mark, bases, serial = ws.mark, ws.bases, ws.serial
    colour_order, stripe_order, stripe_slot0 = ws.colour_order, ws.stripe_order, ws.stripe_slot0
    chunk_counts, chunk_exits = ws.chunk_counts, ws.chunk_exits
    push_n = ws.push_n
    push_type, push_flags, push_vcn, push_divs, push_clone = ws.push_type, ws.push_flags, ws.push_vcn, ws.push_divs, ws.push_clone
    pool_type, pool_flags, pool_vcn, pool_divs, pool_clone = pool.ctype, pool.flags, pool.vcn, pool.divs, pool.clone
    pool_n = pool.n
    n_sites = lat.ctype.shape[0]
    n_colours = colour_order.shape[0]
    n_stripes = stripe_slot0.shape[0]
    capacity = pool.ctype.shape[0]
    # screening thresholds per cell type + 1: ceil(p 2**53) of screen_probabilities (empty
    # sites never pass)
    thresholds = screen_thresholds(screen_probabilities(rules))
    div_thresholds = division_thresholds(rules)
    tabs = StepTables(deltas=neighbour_deltas(rules), thresholds=thresholds, div_thresholds=div_thresholds,
                      levels=coarse_levels(thresholds, div_thresholds), fixed_daughter=fixed_daughters(rules.diff_cum))
    # marks from before this call are stale (the state may have been edited in between)
    # (explicit loops here and below: under parallel=True an array expression such as
    # mark[:] = 0 becomes a parallel loop, whose thread launch costs more than it saves)
    for i in range(n_sites):
        mark[i] = 0

    for step in range(n_steps):
        # at most one cell per occupied site enters the blood in a step
        if pool_n[0] + (n_sites - counters[C_EMPTY]) > capacity:
            return step
        gstep = first_step + step
        for d in range(N_VISIT_DRAWS):
            bases[d] = step_base(key, gstep, d)
        seed_serial(serial, key, gstep)
        cur_mark = np.uint8(1 + gstep % MARK_PERIOD)
        # which screen (the same result either way): set by the occupancy at the step's start
        sparse = n_sites - counters[C_EMPTY] < SPARSE_OCCUPANCY * n_sites
        if gstep % MARK_PERIOD == 0 and step > 0:  # no mark left can equal a later step's
            for i in range(n_sites):
                mark[i] = 0
        for c in range(n_colours):
            colour_order[c] = c
        shuffle_prefix(colour_order, n_colours, serial)
        stripe_order[0] = 0
        stripe_order[1] = 1
        shuffle_prefix(stripe_order, 2, serial)
        for k in range(N_CHUNKS):
            chunk_counts[k, 0] = 0
            chunk_counts[k, 1] = 0
            for t in range(chunk_exits.shape[1]):
                for x in range(chunk_exits.shape[2]):
                    chunk_exits[k, t, x] = 0.0

        for si in range(2):
            sc = stripe_order[si]
            n_t = (n_stripes - sc + 1) // 2  # stripes sc, sc + 2, ...
            if n_t == 0:
                continue
            # chunks depend on the lattice only: one stripe, or a small lattice, is one chunk,
            # swept on this thread
            swept_in_parallel = n_t > 1 and n_sites >= PARALLEL_MIN_SITES
            n_chunks = min(N_CHUNKS, n_t) if swept_in_parallel else 1
            if swept_in_parallel:
                for k in prange(n_chunks):
                    sweep_chunk(k, k * n_t // n_chunks, (k + 1) * n_t // n_chunks, sc, cur_mark, sparse, lat, rules,
                                ws, tabs)
            else:
                sweep_chunk(0, 0, n_t, sc, cur_mark, sparse, lat, rules, ws, tabs)
            # the pending blood entries join the pool, chunk by chunk (serial, fixed order)
            w = pool_n[0]
            for k in range(n_chunks):
                slot0 = stripe_slot0[sc + 2 * (k * n_t // n_chunks)]
                for e in range(push_n[k]):
                    pool_type[w] = push_type[slot0 + e]
                    pool_flags[w] = push_flags[slot0 + e]
                    pool_vcn[w] = push_vcn[slot0 + e]
                    pool_divs[w] = push_divs[slot0 + e]
                    pool_clone[w] = push_clone[slot0 + e]
                    w += 1
                push_n[k] = 0
            pool_n[0] = w

        # chunk tallies, summed in chunk order
        for k in range(N_CHUNKS):
            counters[0] += chunk_counts[k, 0]
            counters[1] += chunk_counts[k, 1]
            for t in range(chunk_exits.shape[1]):
                for x in range(chunk_exits.shape[2]):
                    exits[step, t, x] += chunk_exits[k, t, x]

        blood_phase(lat, pool, rules, serial)
    return n_steps
