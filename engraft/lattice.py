"""The marrow lattice: geometry, niche map and structure-of-arrays cell state.

Sites are numbered ``x + L * (y + L * z)``. Per site the state is

========== ======= ==========================================================
array      dtype   meaning
========== ======= ==========================================================
ctype      int8    cell type index (``-1``: empty)
flags      uint8   bit 0 graft origin, bit 1 quiescent (HSC), bit 2 silenced
vcn        uint8   vector copies (0: not transduced)
divs       uint8   divisions left (progenitors)
clone      int32   clone id (0: host; graft clones numbered from 1)
affinity   float32 niche affinity of an HSC (Roeder-Loeffler)
niche      uint8   1 on niche sites (fixed)
========== ======= ==========================================================

13 bytes per site (:data:`engraft.config.load.STATE_BYTES_PER_SITE`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

import numpy as np

from engraft.kernel.census import nearest_centre_distance, nearest_centre_distance_within
from engraft.kernel.layout import EMPTY
from engraft.kernel.layout import FLAG_GRAFT as GRAFT
from engraft.kernel.layout import FLAG_QUIESCENT as QUIESCENT
from engraft.kernel.layout import FLAG_SILENCED as SILENCED

__all__ = ["EMPTY", "GRAFT", "QUIESCENT", "SILENCED", "State", "neighbour_offsets", "niche_map"]


def index_dtype(n: int) -> type:
    """The dtype of arrays of site or pool indices below ``n``: int32 where it suffices."""
    return np.int32 if n < 2**31 else np.int64


def neighbour_offsets(dims: int, neighbourhood: str) -> np.ndarray:
    """Offsets (K, 3) of the neighbourhood; the unused z column is 0 in 2D."""
    out = []
    for delta in itertools.product((-1, 0, 1), repeat=dims):
        manhattan = sum(abs(d) for d in delta)
        if manhattan == 0:
            continue
        if neighbourhood == "von_neumann" and manhattan != 1:
            continue
        out.append(list(delta) + [0] * (3 - dims))
    return np.asarray(out, dtype=np.int64)


def site_coordinates(size: int, dims: int, sites: np.ndarray | None = None) -> np.ndarray:
    """Coordinates (len(sites), dims) of ``sites`` (default: every site, in site order)."""
    idx = np.arange(size**dims) if sites is None else np.asarray(sites)
    coords = [idx % size, (idx // size) % size]
    if dims == 3:
        coords.append(idx // (size * size))
    return np.stack(coords, axis=1)


def niche_map(size: int, dims: int, fraction: float, placement: str,
              cluster_count: int | None, periodic: bool, rng: np.random.Generator,
              cluster_size: float | None = None) -> np.ndarray:
    """A uint8 map with exactly ``round(fraction * N)`` niche sites.

    ``random``: a uniformly random subset. ``clustered``: the sites nearest to
    random vessel centres (ties broken at random), so niches form small groups
    around vessels as perisinusoidal niches do. The number of centres is
    ``round(niche sites / cluster_size)``: the centres have a fixed density per
    site, so a cluster holds ``cluster_size`` niche sites on average and the
    spacing of the clusters is the same at every lattice size (a small lattice
    is a patch of a large one). ``cluster_count`` instead fixes the number of
    centres, so that the clusters grow with the lattice; it is kept for
    configs that need a set number of large clusters.
    """
    n = size**dims
    k = int(round(fraction * n))
    niche = np.zeros(n, dtype=np.uint8)
    if k == 0:
        return niche
    if placement == "random":
        niche[rng.choice(n, size=k, replace=False)] = 1
        return niche
    if cluster_count is not None:
        n_centres = min(cluster_count, n)
    else:
        if cluster_size is None:
            raise ValueError("niche_map: clustered placement needs cluster_count or cluster_size")
        n_centres = min(n, max(1, int(round(k / cluster_size))))
    picked = rng.choice(n, size=n_centres, replace=False)
    centres = np.zeros((n_centres, 3), dtype=np.int64)
    centres[:, :dims] = site_coordinates(size, dims, picked)
    noise = rng.random(n) * 0.5  # random tie-breaking within a shell
    # distances only as far out as the niches reach: start from the radius of a ball of
    # k / n_centres sites and widen until the k-th nearest site lies inside it
    radius = int(math.ceil(2.0 * (k / n_centres) ** (1.0 / dims))) + 2
    while True:
        if 2 * radius >= size:
            best = nearest_centre_distance(size, dims, centres, periodic)
        else:
            best = nearest_centre_distance_within(size, dims, centres, periodic, radius)
        score = best + noise
        chosen = np.argpartition(score, k - 1)[:k]
        if 2 * radius >= size or score[chosen].max() < radius:
            break  # every site farther than the radius scores above the chosen ones
        radius *= 2
    niche[chosen] = 1
    return niche


@dataclass
class State:
    """Structure-of-arrays lattice state plus the circulating pool."""

    ctype: np.ndarray
    flags: np.ndarray
    vcn: np.ndarray
    divs: np.ndarray
    clone: np.ndarray
    affinity: np.ndarray
    niche: np.ndarray

    @classmethod
    def empty(cls, niche: np.ndarray) -> State:
        n = niche.shape[0]
        return cls(
            ctype=np.full(n, EMPTY, dtype=np.int8),
            flags=np.zeros(n, dtype=np.uint8),
            vcn=np.zeros(n, dtype=np.uint8),
            divs=np.zeros(n, dtype=np.uint8),
            clone=np.zeros(n, dtype=np.int32),
            affinity=np.zeros(n, dtype=np.float32),
            niche=niche,
        )

    @property
    def n_sites(self) -> int:
        return self.ctype.shape[0]

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def copy(self) -> State:
        return State(**{f.name: getattr(self, f.name).copy() for f in fields(self)})


@dataclass
class Pool:
    """Cells circulating in the blood (structure of arrays, first ``n`` valid)."""

    ctype: np.ndarray
    flags: np.ndarray
    vcn: np.ndarray
    divs: np.ndarray
    clone: np.ndarray
    n: np.ndarray  # int64[1], shared with the kernel
    order: np.ndarray  # the kernel's scratch: the order in which the blood phase takes the cells

    @classmethod
    def with_capacity(cls, capacity: int) -> Pool:
        return cls(
            ctype=np.full(capacity, EMPTY, dtype=np.int8),
            flags=np.zeros(capacity, dtype=np.uint8),
            vcn=np.zeros(capacity, dtype=np.uint8),
            divs=np.zeros(capacity, dtype=np.uint8),
            clone=np.zeros(capacity, dtype=np.int32),
            n=np.zeros(1, dtype=np.int64),
            order=np.empty(capacity, dtype=index_dtype(capacity)),
        )

    @property
    def capacity(self) -> int:
        return self.ctype.shape[0]

    @property
    def size(self) -> int:
        return int(self.n[0])

    def grow(self, needed: int) -> None:
        """Make room for ``needed`` cells in all, keeping the current ones."""
        if needed <= self.capacity:
            return
        new = max(needed, 2 * self.capacity)
        for name in ("ctype", "flags", "vcn", "divs", "clone"):
            old = getattr(self, name)
            arr = np.full(new, EMPTY, dtype=old.dtype) if name == "ctype" else np.zeros(new, old.dtype)
            arr[: self.size] = old[: self.size]
            setattr(self, name, arr)
        self.order = np.empty(new, dtype=index_dtype(new))

    def add(self, ctype, flags, vcn, divs, clone) -> None:
        k = len(ctype)
        self.grow(self.size + k)
        s = slice(self.size, self.size + k)
        self.ctype[s], self.flags[s], self.vcn[s] = ctype, flags, vcn
        self.divs[s], self.clone[s] = divs, clone
        self.n[0] += k

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the valid cells where ``mask`` is true (order preserved)."""
        k = self.size
        idx = np.flatnonzero(mask[:k])
        for name in ("ctype", "flags", "vcn", "divs", "clone"):
            arr = getattr(self, name)
            arr[: len(idx)] = arr[idx]
        self.n[0] = len(idx)
