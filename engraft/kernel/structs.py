"""What the kernels take: named tuples of arrays and scalars.

Both kernels' ``run_steps`` take a :class:`Lattice` (the per-site state),
a :class:`Pool` (the circulating cells) and a :class:`Rules` (every number
of the rules, built once per run by :mod:`engraft.simulation`); the
parallel kernel also its :class:`engraft.kernel.parallel.Workspace`.
Fields are read by name, so their order is free.

To add a per-cell attribute: add its array to :class:`Lattice` (and to
:class:`engraft.lattice.State`) and its dtype to
:data:`engraft.kernel.layout.STATE_DTYPES`; give ``die`` and ``settle`` in
:mod:`engraft.kernel.rules` the array and the value, and pass them where the
kernels read the lattice's arrays (the top of ``run_steps``, ``sweep_chunk``
and ``blood_phase``); ``Pool``, ``pool_push`` and ``park`` too if it travels
in the blood.

The kernels read the array fields into local variables once, before their
loops, and pass those to the rule functions: an array field read inside a
loop costs a reference count increment and decrement at each read (see
:mod:`engraft.kernel.rules`). Under ``prange`` this also keeps writes out of
tuple fields (writes through a tuple field inside a parallel loop are not
safe: numba issue 5872).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Lattice(NamedTuple):
    """The lattice state (dtypes: :data:`engraft.kernel.layout.STATE_DTYPES`)."""

    ctype: np.ndarray
    flags: np.ndarray
    vcn: np.ndarray
    divs: np.ndarray
    clone: np.ndarray
    affinity: np.ndarray
    niche: np.ndarray
    niche_sites: np.ndarray  # int64: the indices of the niche sites
    counters: np.ndarray  # int64[2]: empty sites, empty niche sites (C_EMPTY, C_EMPTY_NICHE)


class Pool(NamedTuple):
    """The circulating cells ``0 .. n[0] - 1``, and the blood phase's scratch order."""

    ctype: np.ndarray
    flags: np.ndarray
    vcn: np.ndarray
    divs: np.ndarray
    clone: np.ndarray
    n: np.ndarray  # int64[1]
    order: np.ndarray  # scratch: the order in which the cells act


class Rules(NamedTuple):
    """Every number of the rules (docs/model.md, section 4), per step of ``dt`` days."""

    dims: int
    size: int  # sites along each axis
    periodic: bool
    placement_pool: bool  # daughters go to the blood, not to a neighbour
    lodging_list: bool  # lodging may list the free sites (circulation.lodging_search: adaptive)
    offsets: np.ndarray  # int64 (neighbours, 3): the neighbourhood
    is_hsc: np.ndarray  # int64 per type: 1 for the HSC type
    max_divisions: np.ndarray  # int64 per type: divisions a new progenitor of the type has
    terminal: np.ndarray  # int64 per type: 1 if its exhausted cells exit to a lineage
    diff_cum: np.ndarray  # (types, types): cumulative daughter-type probabilities
    exit_cum: np.ndarray  # (types, types): cumulative type of an exhausted non-terminal progenitor
    hsc_type: int
    hsc_diff_type: int  # what a committing HSC becomes
    self_renewal: float  # probability that an HSC daughter is an HSC
    affinity_decay: float  # factor on an off-niche HSC's affinity per step
    affinity_min: float  # below it, an off-niche HSC commits
    p_any: np.ndarray  # (types, HSC states, transgene states): probability of any event in a step
    cum: np.ndarray  # (..., events): cumulative probabilities of the event, given one
    lodging_rate: float  # per day, times the free fraction of target sites
    death_rate: float  # per day, in the blood
    dt: float  # days per step
    expr_weight: np.ndarray  # expression units per vector copy count
