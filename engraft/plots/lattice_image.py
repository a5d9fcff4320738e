"""Lattice snapshots as images: sites coloured by cell type, origin or clone.

Shared by the snapshot figures, the animation and the browser view, so a
site has the same colour in all three. A 3D lattice is shown by its
mid-plane slice (``LatticeGeometry.plane``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch

from engraft.lattice import EMPTY, GRAFT
from engraft.plots.data import LatticeGeometry
from engraft.plots.style import (
    EMPTY_COLOUR,
    NICHE_COLOUR,
    ORIGIN_COLOURS,
    ORIGIN_LABELS,
    OTHER_CLONES_COLOUR,
    clone_colour,
    type_colour,
)

COLOUR_BY = ("type", "origin", "clone")
#: clones named one by one in a legend; the others share one patch
LEGEND_CLONES = 8


def _palette(colours: Sequence[str]) -> np.ndarray:
    return np.array([to_rgba(c) for c in colours], dtype=np.float32)


def site_categories(ctype: np.ndarray, flags: np.ndarray, vcn: np.ndarray, clone: np.ndarray,
                    niche: np.ndarray, by: str, n_types: int,
                    clone_rank: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """A colour index per site and the colours it indexes.

    Index 0 is an empty marrow site, 1 an empty niche; occupied sites follow:
    ``type``: one colour per cell type; ``origin``: host, graft untransduced,
    graft transduced; ``clone``: host, then the ranked clones of
    ``clone_rank`` (clone id -> rank, -1 unranked), then all other graft clones.
    """
    if by not in COLOUR_BY:
        raise ValueError(f"by: must be one of {', '.join(COLOUR_BY)}, got {by!r}")
    occupied = ctype != EMPTY
    graft = occupied & ((flags & GRAFT) != 0)
    index = np.where(niche != 0, 1, 0).astype(np.int32)
    colours = [EMPTY_COLOUR, NICHE_COLOUR]
    if by == "type":
        index[occupied] = 2 + ctype[occupied].astype(np.int32)
        colours += [type_colour(t) for t in range(n_types)]
    elif by == "origin":
        index[occupied & ~graft] = 2
        index[graft & (vcn == 0)] = 3
        index[graft & (vcn > 0)] = 4
        colours += [ORIGIN_COLOURS["host"], ORIGIN_COLOURS["graft_untransduced"],
                    ORIGIN_COLOURS["graft_transduced"]]
    else:
        ranks = clone_rank if clone_rank is not None else np.full(1, -1)
        n_ranked = int(ranks.max(initial=-1)) + 1
        index[occupied & ~graft] = 2
        ids = clone[graft]
        rank = np.where(ids < len(ranks), ranks[np.minimum(ids, len(ranks) - 1)], -1)
        index[graft] = np.where(rank >= 0, 3 + rank, 3 + n_ranked)
        colours += [ORIGIN_COLOURS["host"]] + [clone_colour(r) for r in range(n_ranked)]
        colours += [OTHER_CLONES_COLOUR]
    return index, colours


def clone_ranks(top_ids: Sequence[int]) -> np.ndarray:
    """Clone id -> rank lookup for :func:`site_categories` (-1: not among ``top_ids``)."""
    top_ids = np.asarray(top_ids, dtype=np.int64)
    ranks = np.full(int(top_ids.max(initial=0)) + 1, -1, dtype=np.int64)
    ranks[top_ids] = np.arange(top_ids.size)
    return ranks


def lattice_rgba(arrays: dict[str, np.ndarray], geometry: LatticeGeometry, by: str,
                 n_types: int, clone_rank: np.ndarray | None = None) -> np.ndarray:
    """An RGBA image (y, x, 4) of one lattice state (a mid-plane slice in 3D).

    Parameters
    ----------
    arrays : ``ctype``, ``flags``, ``vcn``, ``clone`` and ``niche``, one value per site.
    geometry : the lattice's size and dimension.
    by : ``"type"``, ``"origin"`` or ``"clone"``.
    n_types : number of cell types (colours for ``by="type"``).
    clone_rank : clone id -> rank of the clones coloured individually (``by="clone"``).
    """
    plane = {k: geometry.plane(arrays[k]) for k in ("ctype", "flags", "vcn", "clone", "niche")}
    index, colours = site_categories(plane["ctype"], plane["flags"], plane["vcn"], plane["clone"],
                                     plane["niche"], by, n_types, clone_rank)
    return _palette(colours)[index]


def lattice_legend(by: str, type_names: Sequence[str], top_ids: Sequence[int] = ()) -> list[Patch]:
    """Legend patches matching :func:`site_categories`."""
    handles = [Patch(facecolor=NICHE_COLOUR, edgecolor="#bbbbbb", lw=0.5, label="empty niche site"),
               Patch(facecolor=EMPTY_COLOUR, edgecolor="#bbbbbb", lw=0.5, label="empty marrow site")]
    if by == "type":
        handles += [Patch(color=type_colour(t), label=name) for t, name in enumerate(type_names)]
    elif by == "origin":
        handles += [Patch(color=ORIGIN_COLOURS[k], label=ORIGIN_LABELS[k])
                    for k in ("host", "graft_untransduced", "graft_transduced")]
    else:
        handles.append(Patch(color=ORIGIN_COLOURS["host"], label="host"))
        handles += [Patch(color=clone_colour(r), label=f"clone {int(c)}")
                    for r, c in enumerate(list(top_ids)[:LEGEND_CLONES])]
        handles.append(Patch(color=OTHER_CLONES_COLOUR, label="other graft clones"))
    return handles
