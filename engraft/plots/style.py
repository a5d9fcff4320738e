"""One colour scheme and the axis conventions for every engraft figure.

Every figure, the animation and the browser view take their colours, axis
labels and file-writing rules from here, so a lineage, an origin or a clone
has the same colour wherever it appears.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

#: severity bands (ISTH, White et al. 2001): (lower, upper, label, colour)
SEVERITY_BANDS = (
    (0.0, 1.0, "severe (<1)", "#f4cccc"),
    (1.0, 5.0, "moderate (1-5)", "#fce5cd"),
    (5.0, 40.0, "mild (5-40)", "#fff2cc"),
    (40.0, 200.0, "normal (≥40)", "#d9ead3"),
)
#: host, graft, and the graft split by the vector; magenta for "carries the
#: vector" so it never reads as the erythroid lineage's red
ORIGIN_COLOURS = {"host": "#7f7f7f", "graft": "#1f77b4", "graft_transduced": "#c51b7d",
                  "graft_untransduced": "#9ecae1"}
ORIGIN_LABELS = {"host": "host", "graft": "graft", "graft_transduced": "graft, transduced",
                 "graft_untransduced": "graft, untransduced"}
LINEAGE_COLOURS = {"myeloid": "#ff7f0e", "platelets": "#9467bd", "erythroid": "#d62728",
                   "lymphoid": "#2ca02c"}
TYPE_COLOURS = ("#1f77b4", "#17becf", "#ff7f0e", "#9467bd", "#d62728", "#2ca02c", "#8c564b",
                "#e377c2", "#bcbd22", "#7f7f7f")
FACTOR_COLOUR = "#08306b"
THRESHOLD_COLOUR = "#238b45"
#: HSC read-outs (chimerism, VCN, the HSC type on the lattice) share one colour
HSC_COLOUR = TYPE_COLOURS[0]
DIVERSITY_COLOUR = "#54278f"
CLONE_COUNT_COLOUR = "#737373"
#: the largest clones, by rank (tab20 without its greys); the rest pooled in OTHER_CLONES_COLOUR
CLONE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
                 "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
OTHER_CLONES_COLOUR = "#d9d9d9"
#: lattice sites: empty marrow, empty niche
EMPTY_COLOUR = "#ffffff"
NICHE_COLOUR = "#efe3c8"
#: runs of one setting of the other swept parameters, in order (dose-response curves)
SERIES_COLOURS = ("#08306b", "#c51b7d", "#238b45", "#ff7f0e", "#6a51a3", "#8c564b", "#17becf",
                  "#7f7f7f")
#: probability of reaching the threshold: white (0) to the threshold's green (1)
PROBABILITY_CMAP = "Greens"

DAY_LABEL = "days after infusion"
FACTOR_LABEL = "factor activity (IU/dL = % of normal)"
CHIMERISM_LABEL = "donor chimerism (fraction)"
VCN_LABEL = "mean VCN (vector copies per cell)"
LATTICE_X_LABEL = "x (lattice sites)"
LATTICE_Y_LABEL = "y (lattice sites)"

#: rcParams for every engraft figure: legible at journal column width, text kept as text in SVG
RC_PARAMS = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 200,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}
FIGURE_FORMATS = ("png", "svg", "pdf")


def lineage_colour(name: str, index: int = 0) -> str:
    return LINEAGE_COLOURS.get(name, TYPE_COLOURS[index % len(TYPE_COLOURS)])


def type_colour(index: int) -> str:
    """Colour of the cell type with this index (the config's order)."""
    return TYPE_COLOURS[index % len(TYPE_COLOURS)]


def clone_colour(rank: int) -> str:
    """Colour of the clone of this rank (0 = largest) among the clones shown."""
    return CLONE_COLOURS[rank] if 0 <= rank < len(CLONE_COLOURS) else OTHER_CLONES_COLOUR


def series_colour(index: int) -> str:
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]


def severity_bands(ax, ymax: float) -> None:
    """Shade the severity classes behind a factor-level axis."""
    for lo, hi, label, colour in SEVERITY_BANDS:
        if lo < ymax:
            ax.axhspan(lo, min(hi, ymax), color=colour, zorder=0, label=label, lw=0)


def label_severity_bands(ax) -> None:
    """Name the severity bands inside the right edge of the axis (instead of in a legend)."""
    from matplotlib.transforms import blended_transform_factory

    ymax = ax.get_ylim()[1]
    transform = blended_transform_factory(ax.transAxes, ax.transData)
    for lo, hi, label, _ in SEVERITY_BANDS:
        top = min(hi, ymax)
        if lo < ymax and (top - lo) / ymax > 0.04:  # only bands tall enough to hold a label
            ax.text(0.99, (lo + top) / 2, label.split(" ")[0], transform=transform, ha="right",
                    va="center", fontsize=6.5, color="#666666")


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Context in which engraft figures are built (fonts, spines, output resolution)."""
    import matplotlib.pyplot as plt

    with plt.rc_context(RC_PARAMS):
        yield


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,svg"`` -> ("png", "svg"); unknown formats are a ValueError naming the allowed ones."""
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats:
        raise ValueError(f"--format: must be a comma-separated list of {', '.join(FIGURE_FORMATS)}, "
                         f"got {text if isinstance(text, str) else ','.join(items)!r}")
    return formats


def save_figure(fig, directory, name: str, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as ``directory/name.<format>`` for each format; return the paths.

    ``directory`` is a folder path or an :class:`engraft.outputs.FigureFolder`.
    A file engraft did not write is never overwritten (one-line
    :class:`~engraft.outputs.OutputError`). Each file is written under a
    temporary name and renamed, so a reader never sees half a figure.
    """
    import os

    from engraft.outputs import FigureFolder, share_like_umask

    folder = directory if isinstance(directory, FigureFolder) else FigureFolder(directory)
    folder.claim([f"{name}.{fmt}" for fmt in formats])
    paths = []
    with figure_style():
        for fmt in formats:
            path = folder.path(f"{name}.{fmt}")
            tmp = folder.folder / f".{name}.tmp.{fmt}"
            try:
                fig.savefig(tmp, format=fmt, dpi=RC_PARAMS["savefig.dpi"], bbox_inches="tight")
                share_like_umask(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            paths.append(path)
    return paths
