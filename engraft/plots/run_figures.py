"""Figures of one run: factor level, chimerism, lineages by origin, VCN, clones, lattice.

Every function takes a :class:`engraft.results.RunData` and returns a
matplotlib :class:`~matplotlib.figure.Figure` (not yet saved), so callers and
tests can inspect it; :func:`plot_run` builds them all and writes the files.
Colours and labels come from :mod:`engraft.plots.style`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from engraft.outputs import FigureFolder
from engraft.plots import data
from engraft.plots.lattice_image import LEGEND_CLONES, clone_ranks, lattice_legend, lattice_rgba
from engraft.plots.style import (
    CHIMERISM_LABEL,
    CLONE_COUNT_COLOUR,
    DAY_LABEL,
    DIVERSITY_COLOUR,
    FACTOR_COLOUR,
    FACTOR_LABEL,
    HSC_COLOUR,
    LATTICE_X_LABEL,
    LATTICE_Y_LABEL,
    ORIGIN_COLOURS,
    ORIGIN_LABELS,
    OTHER_CLONES_COLOUR,
    THRESHOLD_COLOUR,
    VCN_LABEL,
    clone_colour,
    figure_style,
    lineage_colour,
    save_figure,
    severity_bands,
)
from engraft.readouts import THRESHOLD_WINDOW_DAYS, rolling_mean

#: clones drawn one by one in the Muller plot (the rest pooled)
MULLER_CLONES = 18
#: most lattice snapshots in one snapshot figure
MAX_SNAPSHOT_PANELS = 6
RUN_FIGURES = ("factor_level", "blood_counts", "chimerism", "lineage_origin", "vcn", "clonal_dynamics",
               "lattice_type", "lattice_origin", "lattice_clone")


def _title(run, what: str) -> str:
    name = run.config.get("name") or Path(run.path).name
    return f"{name}: {what}"


def draw_factor_level(ax, days: np.ndarray, level: np.ndarray, threshold: float,
                      threshold_day: float = float("nan"), mean_window_days: float | None = None) -> None:
    """Factor level over time on severity bands, with the therapeutic threshold.

    Used by the run figure and the browser view. ``mean_window_days`` adds the
    trailing mean that decides whether the threshold is held.
    """
    finite = level[np.isfinite(level)]
    top = float(finite.max()) if finite.size else 0.0
    ymax = max(50.0, top * 1.15, (threshold * 1.3) if math.isfinite(threshold) else 0.0)
    severity_bands(ax, ymax)
    ax.plot(days, level, color=FACTOR_COLOUR, lw=1.0 if mean_window_days else 1.8,
            alpha=0.55 if mean_window_days else 1.0, label="factor level")
    if mean_window_days and len(days):
        ax.plot(days, rolling_mean(days, level, mean_window_days), color=FACTOR_COLOUR, lw=2.0,
                label=f"{mean_window_days:g}-day mean")
    if math.isfinite(threshold):
        ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1.4,
                   label=f"threshold {threshold:g} IU/dL")
    if math.isfinite(threshold_day):
        ax.axvline(threshold_day, color=THRESHOLD_COLOUR, ls=":", lw=1.2,
                   label=f"held from day {threshold_day:g}")
    ax.set_ylim(0, ymax)
    ax.set_ylabel(FACTOR_LABEL)
    ax.set_xlabel(DAY_LABEL)


def factor_level_figure(run) -> Figure:
    """Plasma factor level (IU/dL) with severity bands (<1, 1-5, 5-40, >=40) and the threshold.

    With a platelet-stored transgene the plasma level stays endogenous; a second
    panel then shows the FVIII stored per 10^8 platelets.
    """
    ts = run.timeseries
    days = ts["day"].to_numpy(float)
    platelet = "platelet_factor_iu_per_1e8" in ts
    with figure_style():
        fig, axes = plt.subplots(2 if platelet else 1, 1, figsize=(7.0, 6.5 if platelet else 3.8),
                                 sharex=True, squeeze=False, constrained_layout=True)
        ax = axes[0, 0]
        draw_factor_level(ax, days, ts["factor_iu_dl"].to_numpy(float), data.threshold_iu_dl(run),
                          float(run.summary.get("threshold_day") or float("nan")),
                          mean_window_days=THRESHOLD_WINDOW_DAYS)
        ax.set_title(_title(run, "plasma factor level"))
        ax.legend(loc="upper left", ncol=3, frameon=True, framealpha=0.9)
        if platelet:
            ax.set_xlabel("")
            ax = axes[1, 0]
            ax.plot(days, ts["platelet_factor_iu_per_1e8"], color=lineage_colour("platelets"), lw=1.8,
                    label="FVIII stored in platelets")
            ax.set_ylabel("platelet FVIII (IU per 10^8 platelets)")
            ax.set_xlabel(DAY_LABEL)
            ax.legend(loc="lower right")
    return fig


def blood_counts_figure(run) -> Figure:
    """ANC and platelets (log axis, 1e9/L) with the engraftment levels and days marked; hemoglobin.

    The first 100 days after infusion (the regimen's days before it included).
    """
    from engraft.plots.summary import draw_blood_counts

    with figure_style():
        fig, ax = plt.subplots(figsize=(7.0, 4.2), constrained_layout=True)
        draw_blood_counts(ax, run.timeseries, run.summary)
        ax.set_title(_title(run, "blood counts"))
    return fig


def chimerism_figure(run) -> Figure:
    """Donor chimerism and transduced fraction of HSCs and of each mature lineage."""
    ts = run.timeseries
    days = ts["day"].to_numpy(float)
    lineages = data.lineage_names(ts)
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharex=True, sharey=True,
                                 constrained_layout=True)
        for ax, suffix, ylabel in ((axes[0], "chimerism", CHIMERISM_LABEL),
                                   (axes[1], "transduced_fraction", "transduced fraction (cells with ≥1 copy)")):
            ax.plot(days, ts[f"hsc_{suffix}"], color=HSC_COLOUR, lw=2.0, label="HSC (marrow)")
            for i, lin in enumerate(lineages):
                ax.plot(days, ts[f"{lin}_{suffix}"], color=lineage_colour(lin, i), lw=1.3,
                        label=f"{lin} (blood)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(ylabel)
            ax.set_xlabel(DAY_LABEL)
        axes[0].set_title("donor (graft) chimerism")
        axes[1].set_title("vector-marked cells")
        axes[1].tick_params(labelleft=True)
        axes[0].legend(loc="lower right", ncol=1)
        fig.suptitle(_title(run, "chimerism per lineage"))
    return fig


def _power_of_ten(values: np.ndarray) -> int:
    """Exponent that brings the largest of ``values`` into [1, 10) (0 for small counts)."""
    top = float(np.nanmax(values)) if np.size(values) else 0.0
    return int(math.floor(math.log10(top))) if top >= 1e4 else 0


def _stack(ax, days, host, untransduced, transduced, unit: str, title: str) -> None:
    """Stacked host / graft untransduced / graft transduced cells, y in ``unit`` (x 10^k)."""
    exponent = _power_of_ten(np.asarray(host) + untransduced + transduced)
    scale = 10.0**-exponent
    ax.stackplot(days, np.asarray(host) * scale, np.asarray(untransduced) * scale,
                 np.asarray(transduced) * scale,
                 colors=[ORIGIN_COLOURS[k] for k in ("host", "graft_untransduced", "graft_transduced")],
                 labels=[ORIGIN_LABELS[k] for k in ("host", "graft_untransduced", "graft_transduced")],
                 lw=0)
    ax.set_ylabel(f"{unit} (×10^{exponent})" if exponent else unit)
    ax.set_title(title)
    ax.set_ylim(bottom=0)


def lineage_origin_figure(run) -> Figure:
    """Cells by origin (host, graft untransduced, graft transduced), stacked.

    Marrow HSCs from the lattice counts and the HSC transduced fraction;
    marrow progenitors from the lattice counts (host, graft); each mature
    lineage, whole body, from ``<lineage>_cells``, ``_chimerism`` and
    ``_transduced_fraction`` (host cells never carry the vector).
    """
    ts = run.timeseries
    days = ts["day"].to_numpy(float)
    types = data.type_names(ts)
    hsc = data.hsc_type(run)
    lineages = data.lineage_names(ts)
    n_panels = 2 + len(lineages)
    ncols = 3 if n_panels > 4 else 2
    nrows = math.ceil(n_panels / ncols)
    with figure_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.7 * nrows), sharex=True,
                                 squeeze=False, constrained_layout=True)
        flat = list(axes.flat)
        n_hsc = (ts[f"{hsc}_host"] + ts[f"{hsc}_graft"]).to_numpy(float)
        transduced = np.nan_to_num(ts["hsc_transduced_fraction"].to_numpy(float)) * n_hsc
        graft = ts[f"{hsc}_graft"].to_numpy(float)
        _stack(flat[0], days, ts[f"{hsc}_host"].to_numpy(float), np.maximum(graft - transduced, 0.0),
               transduced, "HSCs (lattice cells)", f"{hsc} in the marrow")
        others = [t for t in types if t != hsc]
        host = ts[[f"{t}_host" for t in others]].sum(axis=1).to_numpy(float)
        graft = ts[[f"{t}_graft" for t in others]].sum(axis=1).to_numpy(float)
        ax = flat[1]
        ax.stackplot(days, host, graft, colors=[ORIGIN_COLOURS["host"], ORIGIN_COLOURS["graft"]],
                     labels=[ORIGIN_LABELS["host"], "graft (all)"], lw=0)
        ax.set_ylabel("progenitors (lattice cells)")
        ax.set_title("progenitors in the marrow")
        ax.set_ylim(bottom=0)
        for ax, lin in zip(flat[2:], lineages, strict=False):
            cells = ts[f"{lin}_cells"].to_numpy(float)
            chim = np.nan_to_num(ts[f"{lin}_chimerism"].to_numpy(float))
            tfrac = np.nan_to_num(ts[f"{lin}_transduced_fraction"].to_numpy(float))
            graft_cells = cells * chim
            marked = np.minimum(cells * tfrac, graft_cells)
            _stack(ax, days, cells - graft_cells, graft_cells - marked, marked,
                   "cells, whole body", f"{lin} (blood)")
        for i, ax in enumerate(flat):
            if i >= n_panels:
                ax.set_visible(False)
            elif i + ncols >= n_panels:  # nothing below it: the bottom of its column
                ax.set_xlabel(DAY_LABEL)
                ax.tick_params(labelbottom=True)
        handles, labels = flat[0].get_legend_handles_labels()
        handles2, labels2 = flat[1].get_legend_handles_labels()
        fig.legend(handles + handles2[1:], labels + labels2[1:], loc="outside lower center", ncol=4)
        fig.suptitle(_title(run, "cells by origin"))
    return fig


def vcn_figure(run) -> Figure:
    """Mean vector copy number of HSCs and of each lineage: per cell and per transduced cell."""
    ts = run.timeseries
    days = ts["day"].to_numpy(float)
    lineages = data.lineage_names(ts)
    series = [("hsc", "HSC (marrow)", HSC_COLOUR, 2.0)]
    series += [(lin, f"{lin} (blood)", lineage_colour(lin, i), 1.3) for i, lin in enumerate(lineages)]
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharex=True, constrained_layout=True)
        for key, label, colour, lw in series:
            vcn = ts[f"{key}_vcn"].to_numpy(float)
            frac = ts[f"{key}_transduced_fraction"].to_numpy(float)
            axes[0].plot(days, vcn, color=colour, lw=lw, label=label)
            per_marked = np.divide(vcn, frac, out=np.full_like(vcn, np.nan), where=frac > 0)
            axes[1].plot(days, per_marked, color=colour, lw=lw, label=label)
        axes[0].set_ylabel(VCN_LABEL)
        axes[0].set_title("bulk VCN (all cells, as ddPCR reports it)")
        axes[1].set_ylabel("VCN per transduced cell (copies)")
        axes[1].set_title("copies per vector-marked cell")
        for ax in axes:
            ax.set_xlabel(DAY_LABEL)
            ax.set_ylim(bottom=0)
        axes[0].legend(loc="lower right")
        fig.suptitle(_title(run, "vector copy number"))
    return fig


def clonal_figure(run, n_clones: int = MULLER_CLONES) -> Figure:
    """Muller plot of the largest clones (rest pooled), clone counts and Shannon diversity.

    Clone shares come from the lattice snapshots (graft cells grouped by clone
    id); counts and diversity from the daily records.
    """
    ts = run.timeseries
    days = ts["day"].to_numpy(float)
    snap_days = data.snapshot_days(run)
    sizes = data.clone_size_matrix(run)
    top = data.top_clones(sizes, n_clones)
    totals = sizes.sum(axis=1).astype(float)
    shares = np.divide(sizes, totals[:, None], out=np.zeros(sizes.shape), where=totals[:, None] > 0)
    top_shares = shares[:, top].T if top.size else np.zeros((0, len(snap_days)))
    rest = np.where(totals > 0, 1.0 - top_shares.sum(axis=0), 0.0)
    with figure_style():
        fig, axes = plt.subplots(3, 1, figsize=(7.0, 8.0), sharex=True, constrained_layout=True,
                                 gridspec_kw={"height_ratios": [2.2, 1, 1]})
        ax = axes[0]
        colours = [clone_colour(r) for r in range(top.size)] + [OTHER_CLONES_COLOUR]
        n_other = int((sizes[-1] > 0).sum()) - int((sizes[-1, top] > 0).sum())
        labels = [f"clone {int(c)}" for c in top] + [f"other clones ({n_other} at the end)"]
        ax.stackplot(snap_days, *top_shares, rest, colors=colours, labels=labels, lw=0.3,
                     edgecolor="white")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of graft lattice cells (fraction)")
        ax.set_title(f"largest {top.size} clones from {len(snap_days)} lattice snapshots")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6.5, ncol=1)
        ax = axes[1]
        alive = ts["clones_alive"].to_numpy(float)
        ax.plot(days, np.where(alive > 0, alive, np.nan), color=CLONE_COUNT_COLOUR, lw=2.6,
                label="all graft clones")
        if "hsc_clones_alive" in ts:
            hsc_alive = ts["hsc_clones_alive"].to_numpy(float)
            ax.plot(days, np.where(hsc_alive > 0, hsc_alive, np.nan), color=HSC_COLOUR, lw=1.3,
                    ls="--", label="clones with HSCs")
        ax.set_yscale("log")
        ax.set_ylabel("clones alive (count)")
        ax.legend(loc="upper right")
        ax = axes[2]
        ax.plot(days, ts["shannon_diversity"], color=DIVERSITY_COLOUR, lw=1.6, label="Shannon H")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("Shannon diversity H (nats)")
        ax.set_xlabel(DAY_LABEL)
        ax.legend(loc="upper right")
        fig.suptitle(_title(run, "clonal dynamics"))
    return fig


def snapshot_indices(n_snapshots: int, max_panels: int = MAX_SNAPSHOT_PANELS) -> list[int]:
    """Up to ``max_panels`` snapshot indices spread evenly, first and last included."""
    if n_snapshots <= max_panels:
        return list(range(n_snapshots))
    return sorted({int(round(x)) for x in np.linspace(0, n_snapshots - 1, max_panels)})


def lattice_figure(run, by: str = "type", indices: Sequence[int] | None = None) -> Figure:
    """Lattice snapshots coloured by cell type, origin or clone (a mid-plane slice in 3D).

    In ``by="clone"`` the largest clones have their Muller-plot colours.
    """
    geometry = data.LatticeGeometry.of(run)
    types = data.type_names(run.timeseries)
    days = data.snapshot_days(run)
    indices = list(indices) if indices is not None else snapshot_indices(len(days))
    top = data.top_clones(data.clone_size_matrix(run), LEGEND_CLONES) if by == "clone" else np.zeros(0, int)
    ranks = clone_ranks(top) if by == "clone" else None
    ncols = min(3, len(indices))
    nrows = math.ceil(len(indices) / ncols)
    with figure_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols + 1.9, 2.75 * nrows + 0.5),
                                 squeeze=False, constrained_layout=True)
        extent = (0, geometry.size, 0, geometry.size)
        for ax, i in zip(axes.flat, indices, strict=False):
            image = lattice_rgba(data.snapshot(run, i), geometry, by, len(types), ranks)
            ax.imshow(image, origin="lower", extent=extent, interpolation="nearest")
            ax.set_title(f"day {days[i]:g}: {data.level_at(run, days[i]):.1f} IU/dL", fontsize=8.5)
            ax.set_xlabel(LATTICE_X_LABEL)
            ax.set_ylabel(LATTICE_Y_LABEL)
            ax.spines[["top", "right"]].set_visible(True)
        for ax in list(axes.flat)[len(indices):]:
            ax.set_visible(False)
        fig.legend(handles=lattice_legend(by, types, top), loc="outside right upper", frameon=False)
        slice_note = f" ({geometry.slice_note})" if geometry.slice_note else ""
        fig.suptitle(_title(run, f"marrow lattice by {by}{slice_note}"))
    return fig


def run_figures(run, lattice_by: Sequence[str] = ("type", "origin", "clone")) -> dict[str, Figure]:
    """Every figure of a run, by file name (see :data:`RUN_FIGURES`; blood counts only with counts)."""
    figures = {"factor_level": factor_level_figure(run)}
    if "anc_1e9_per_L" in run.timeseries:
        figures["blood_counts"] = blood_counts_figure(run)
    figures |= {
        "chimerism": chimerism_figure(run),
        "lineage_origin": lineage_origin_figure(run),
        "vcn": vcn_figure(run),
        "clonal_dynamics": clonal_figure(run),
    }
    for by in lattice_by:
        figures[f"lattice_{by}"] = lattice_figure(run, by)
    return figures


def plot_run(path: str | os.PathLike, out: str | os.PathLike | None = None,
             formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write every figure of the run directory ``path`` into ``out`` (default ``path/figures``).

    Returns the files written. Raises FileNotFoundError for a directory that
    is not a run directory.
    """
    from engraft.results import read_run

    run = read_run(path)
    run.timeseries = data.fill_record_gaps(run.timeseries)
    folder = FigureFolder(Path(out) if out is not None else Path(path) / "figures")
    written: list[Path] = []
    for name, fig in run_figures(run).items():
        try:
            written += save_figure(fig, folder, name, formats)
        finally:
            plt.close(fig)
    return written
