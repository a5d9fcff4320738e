"""One colour scheme and the axis conventions for every engraft figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files

#: severity bands (ISTH, White et al. 2001): (lower, upper, label, colour)
SEVERITY_BANDS = (
    (0.0, 1.0, "severe (<1)", "#f4cccc"),
    (1.0, 5.0, "moderate (1-5)", "#fce5cd"),
    (5.0, 40.0, "mild (5-40)", "#fff2cc"),
    (40.0, 200.0, "normal (≥40)", "#d9ead3"),
)
ORIGIN_COLOURS = {"host": "#7f7f7f", "graft": "#1f77b4", "graft_transduced": "#d62728",
                  "graft_untransduced": "#9ecae1"}
LINEAGE_COLOURS = {"myeloid": "#ff7f0e", "platelets": "#9467bd", "erythroid": "#d62728",
                   "lymphoid": "#2ca02c"}
TYPE_COLOURS = ("#1f77b4", "#17becf", "#ff7f0e", "#9467bd", "#d62728", "#2ca02c", "#8c564b",
                "#e377c2", "#bcbd22", "#7f7f7f")
FACTOR_COLOUR = "#08306b"
THRESHOLD_COLOUR = "#238b45"


def lineage_colour(name: str, index: int = 0) -> str:
    return LINEAGE_COLOURS.get(name, TYPE_COLOURS[index % len(TYPE_COLOURS)])


def severity_bands(ax, ymax: float) -> None:
    """Shade the severity classes behind a factor-level axis."""
    for lo, hi, label, colour in SEVERITY_BANDS:
        if lo < ymax:
            ax.axhspan(lo, min(hi, ymax), color=colour, zorder=0, label=label, lw=0)
