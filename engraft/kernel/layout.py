"""The layout of the compiled state: one home for its dtypes, flag bits and numbering.

Everything that must agree between the kernels, the Python layer
(:mod:`engraft.lattice`, :mod:`engraft.simulation`, :mod:`engraft.tally`)
and the Mesa reference is defined here once and imported from here; nothing
here imports another engraft module.

Per site the state is

========== ======= ==========================================================
array      dtype   meaning
========== ======= ==========================================================
ctype      int8    cell type index (``EMPTY``: no cell)
flags      uint8   :data:`FLAG_GRAFT`, :data:`FLAG_QUIESCENT`, :data:`FLAG_SILENCED`
vcn        uint8   vector copies (0: not transduced)
divs       uint8   divisions left (progenitors)
clone      int32   clone id (0: host; graft clones numbered from 1)
affinity   float32 niche affinity of an HSC (Roeder-Loeffler)
niche      uint8   1 on niche sites (fixed)
========== ======= ==========================================================

:data:`STATE_BYTES_PER_SITE` is computed from these dtypes.
"""

from __future__ import annotations

import numpy as np

#: dtype of each per-site state array (and, but for ``affinity`` and ``niche``, of the blood pool's)
STATE_DTYPES = {
    "ctype": np.int8,
    "flags": np.uint8,
    "vcn": np.uint8,
    "divs": np.uint8,
    "clone": np.int32,
    "affinity": np.float32,
    "niche": np.uint8,
}
#: the fields a circulating cell keeps (the pool's arrays, of the dtypes above)
POOL_FIELDS = ("ctype", "flags", "vcn", "divs", "clone")
#: bytes of lattice state per site
STATE_BYTES_PER_SITE = sum(np.dtype(d).itemsize for d in STATE_DTYPES.values())

#: ``ctype`` of an empty site
EMPTY = -1

# bits of ``flags`` (a cell's marks, distinct from the state classes of engraft.rates)
#: the cell descends from the graft
FLAG_GRAFT = np.uint8(1)
#: an HSC resting in its niche (the state class HSC_RESTING of engraft.rates while on a niche)
FLAG_QUIESCENT = np.uint8(2)
#: the transgene is silenced (the state class TG_SILENCED of engraft.rates when vcn > 0)
FLAG_SILENCED = np.uint8(4)

# HSC states: the second index of the per-step tables (engraft.rates.step_tables)
#: in a niche, resting
HSC_RESTING = 0
#: in a niche, cycling
HSC_ACTIVE = 1
#: off the niches: cycling and losing niche affinity
HSC_OFF_NICHE = 2
N_HSC_STATES = 3
# transgene states: the third index
TG_NONE = 0
TG_EXPRESSING = 1
TG_SILENCED = 2
N_TG_STATES = 3

# events: the last index of the per-step tables, in this order
E_DIVIDE, E_DIE, E_ACTIVATE, E_EGRESS, E_SILENCE = 0, 1, 2, 3, 4
N_EVENTS = 5
EVENT_NAMES = ("divide", "die", "activate", "egress", "silence")

# quantities of the exit tally (last axis of ``exits``: per step and cell type)
X_CELLS, X_GRAFT, X_TRANSDUCED, X_VCN, X_EXPRESSION = 0, 1, 2, 3, 4
N_EXIT_QUANTITIES = 5
EXIT_QUANTITIES = ("cells", "graft", "transduced", "vcn", "expression")

# the empty-site counters (``counters``)
C_EMPTY, C_EMPTY_NICHE = 0, 1
