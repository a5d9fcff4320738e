"""The one-page summary figure written with every run."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from engraft.plots.style import (
    FACTOR_COLOUR,
    ORIGIN_COLOURS,
    THRESHOLD_COLOUR,
    lineage_colour,
    severity_bands,
)


def _lineages(ts) -> list[str]:
    return [c[: -len("_chimerism")] for c in ts.columns
            if c.endswith("_chimerism") and not c.startswith("hsc") and f"{c[:-10]}_cells" in ts]


def summary_figure(timeseries, summary: dict, path: str | Path, title: str = "") -> Path:
    """Factor level with severity bands and threshold; chimerism; lineage sizes.

    Returns the path written (PNG, or any format matplotlib infers from the suffix).
    """
    from engraft.plots.data import fill_record_gaps

    ts = fill_record_gaps(timeseries)
    days = ts["day"].to_numpy()
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 9), sharex=True, constrained_layout=True)

    ax = axes[0]
    level = ts["factor_iu_dl"].to_numpy()
    ymax = max(50.0, float(np.nanmax(level)) * 1.15) if len(level) else 50.0
    severity_bands(ax, ymax)
    ax.plot(days, level, color=FACTOR_COLOUR, lw=2, label="factor level")
    ax.axhline(summary["threshold_iu_dl"], color=THRESHOLD_COLOUR, ls="--", lw=1.5,
               label=f"threshold {summary['threshold_iu_dl']:g} IU/dL")
    ax.set_ylim(0, ymax)
    ax.set_ylabel("factor activity (IU/dL = % of normal)")
    ax.set_title(title or "engraft run")
    ax.legend(loc="upper left", fontsize=8, ncol=2)

    ax = axes[1]
    ax.plot(days, ts["hsc_chimerism"], color=ORIGIN_COLOURS["graft"], lw=2, label="HSC")
    for i, lin in enumerate(_lineages(ts)):
        ax.plot(days, ts[f"{lin}_chimerism"], color=lineage_colour(lin, i), lw=1.2, label=lin)
    if "hsc_transduced_fraction" in ts:
        ax.plot(days, ts["hsc_transduced_fraction"], color=ORIGIN_COLOURS["graft_transduced"], ls=":",
                lw=1.5, label="HSC transduced")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("donor chimerism (fraction)")
    ax.legend(loc="lower right", fontsize=8, ncol=3)

    ax = axes[2]
    for i, lin in enumerate(_lineages(ts)):
        ax.plot(days, ts[f"{lin}_cells"].clip(lower=1.0), color=lineage_colour(lin, i), lw=1.5, label=lin)
    ax.set_yscale("log")
    ax.set_ylabel("mature cells, whole body")
    ax.set_xlabel("days after infusion")
    ax.legend(loc="lower right", fontsize=8, ncol=2)

    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
