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


#: days after infusion shown in the blood-counts panel
COUNTS_WINDOW_DAYS = 100.0


def draw_blood_counts(ax, timeseries, summary: dict, window_days: float = COUNTS_WINDOW_DAYS) -> None:
    """ANC and platelets (log axis) with the engraftment levels and days; hemoglobin on a twin axis."""
    ts = timeseries[timeseries["day"] <= window_days]
    days = ts["day"].to_numpy()
    anc = ts["anc_1e9_per_L"].clip(lower=1e-3)
    plt_count = ts["platelets_1e9_per_L"].clip(lower=1e-3)
    ax.plot(days, anc, color=lineage_colour("myeloid", 0), lw=1.8, label="ANC")
    ax.plot(days, plt_count, color=lineage_colour("platelets", 1), lw=1.8, label="platelets")
    ax.axhline(0.5, color=lineage_colour("myeloid", 0), ls="--", lw=1, label="ANC 0.5")
    ax.axhline(20.0, color=lineage_colour("platelets", 1), ls="--", lw=1, label="platelets 20")
    for key, below, colour, name, height in (
            ("neutrophil_engraftment_day", "days_anc_below_500", lineage_colour("myeloid", 0), "neutrophils",
             0.98),
            ("platelet_engraftment_day", "days_platelets_below_20", lineage_colour("platelets", 1), "platelets",
             0.55)):
        day = summary.get(key)
        if day is not None and day <= window_days and summary.get(below):  # marked after a cytopenia
            ax.axvline(day, color=colour, ls=":", lw=1.5)
            ax.annotate(f"{name} engrafted, day {day:g}", (day, height), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color=colour)
    ax.set_yscale("log")
    ax.set_ylim(max(1e-2, float(min(anc.min(), plt_count.min())) / 2), None)
    ax.set_ylabel("count (1e9/L)")
    ax.set_xlabel("days after infusion (no transfusions modelled)")
    hb_ax = ax.twinx()
    hb_ax.plot(days, ts["hemoglobin_g_per_dL"], color=lineage_colour("erythroid", 2), lw=1.5, ls="-.",
               label="hemoglobin")
    hb_ax.set_ylabel("hemoglobin (g/dL)")
    hb_ax.set_ylim(0, max(18.0, float(ts["hemoglobin_g_per_dL"].max()) * 1.1))
    lines = ax.get_legend_handles_labels()
    more = hb_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=7, ncol=3)


def summary_figure(timeseries, summary: dict, path: str | Path, title: str = "") -> Path:
    """Factor level with severity bands and threshold; chimerism; lineage sizes; blood counts.

    Returns the path written (PNG, or any format matplotlib infers from the suffix).
    """
    from engraft.plots.data import fill_record_gaps

    ts = fill_record_gaps(timeseries)
    days = ts["day"].to_numpy()
    counts = "anc_1e9_per_L" in ts
    fig = plt.figure(figsize=(7.5, 12 if counts else 9), constrained_layout=True)
    grid = fig.add_gridspec(4 if counts else 3, 1)
    first = fig.add_subplot(grid[0])
    axes = [first] + [fig.add_subplot(grid[i], sharex=first) for i in (1, 2)]

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
    for top in axes[:2]:
        top.tick_params(labelbottom=False)
    if counts:
        draw_blood_counts(fig.add_subplot(grid[3]), ts, summary)

    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
