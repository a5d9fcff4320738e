"""Figures of a sweep: dose-response with replicate bands, threshold probability, time to threshold.

Each function takes a :class:`engraft.plots.data.SweepTable` (from
:func:`engraft.plots.data.read_sweep`) and returns a matplotlib Figure;
:func:`plot_sweep` builds them all and writes the files.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from engraft.outputs import FigureFolder
from engraft.plots.data import PlotInputError, SweepTable, read_sweep
from engraft.plots.style import (
    FACTOR_LABEL,
    PROBABILITY_CMAP,
    THRESHOLD_COLOUR,
    figure_style,
    label_severity_bands,
    save_figure,
    series_colour,
    severity_bands,
)

#: replicate band of the dose-response curves (quantiles of the final level)
BAND = (0.10, 0.90)
SWEEP_FIGURES = ("dose_response", "threshold_probability", "time_to_threshold")
#: most curves in one dose-response panel before the other parameters are pooled
MAX_SERIES = 8

#: units of config fields, by the last part of the key path (style guide: units in names)
_FIELD_UNITS = {
    "dose_per_kg": "CD34+ cells/kg",
    "transduction": "fraction of cells",
    "homing": "fraction of cells",
    "self_renewal": "probability",
    "mean": "vector copies",
    "expression_per_vcn": "IU/day per 10^9 cells per copy",
    "size": "sites per side",
    "niche_fraction": "fraction of sites",
    "hsc_count": "cells",
    "progenitor_count": "cells",
    "max_divisions": "divisions",
    "amplification": "mature cells per exit",
    "seed": "",
}
_SUFFIX_UNITS = (("_per_kg", "per kg"), ("_kg", "kg"), ("_days", "days"), ("_rate", "per day"),
                 ("_iu_dl", "IU/dL"), ("_minutes", "minutes"), ("_fraction", "fraction"),
                 ("_ml_per_kg", "mL/kg"))


def parameter_unit(path: str) -> str:
    """The unit of a swept config key path, e.g. ``infusions[0].dose_per_kg`` -> CD34+ cells/kg."""
    field = re.split(r"[.\[\]]+", path.strip("]"))[-1]
    if field in _FIELD_UNITS:
        return _FIELD_UNITS[field]
    if ".myeloablation." in f".{path}." or path.startswith("conditioning.myeloablation"):
        return "probability of killing a host cell"
    for suffix, unit in _SUFFIX_UNITS:
        if field.endswith(suffix):
            return unit
    return "config units"


def parameter_label(path: str) -> str:
    unit = parameter_unit(path)
    return f"{path} ({unit})" if unit else path


def _format_level(value) -> str:
    return f"{value:.3g}" if isinstance(value, (float, np.floating)) else str(value)


def _log_x(levels: Sequence[float]) -> bool:
    levels = np.asarray(levels, dtype=float)
    return bool(levels.size > 1 and (levels > 0).all() and levels.max() / levels.min() >= 10)


def _grid(n: int, width: float, height: float):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             constrained_layout=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _series(sweep: SweepTable, parameter: str) -> list[tuple[str, object]]:
    """(label, rows) per setting of the other swept parameters; pooled if there are too many."""
    frame = sweep.frame
    others = [p for p in sweep.parameters if p != parameter]
    if not others:
        return [("", frame)]
    groups = list(frame.groupby(others, dropna=False, sort=True))
    if len(groups) > MAX_SERIES:
        return [(f"{len(groups)} settings of the other parameters pooled", frame)]
    out = []
    for key, rows in groups:
        key = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(f"{p.rsplit('.', 1)[-1]}={_format_level(v)}" for p, v in zip(others, key,
                                                                                              strict=True)),
                    rows))
    return out


def dose_response_figure(sweep: SweepTable, parameters: Sequence[str] | None = None) -> Figure:
    """Final factor level against each numeric swept parameter: median and 10-90 % band.

    One panel per parameter; one curve per setting of the other swept
    parameters (pooled when there are more than :data:`MAX_SERIES`), the band
    spanning the replicates. Severity bands and the threshold behind.
    """
    parameters = list(parameters or sweep.numeric_parameters)
    if not parameters:
        raise PlotInputError(f"{sweep.path}: no numeric swept parameter for a dose-response curve "
                             f"(swept: {', '.join(sweep.parameters)})")
    threshold = sweep.threshold_iu_dl
    level = sweep.frame["final_factor_iu_dl"].to_numpy(float)
    ymax = max(50.0, float(np.nanmax(level)) * 1.15, threshold * 1.3 if math.isfinite(threshold) else 0)
    with figure_style():
        fig, axes = _grid(len(parameters), 4.2, 3.5)
        for ax, parameter in zip(axes, parameters, strict=True):
            severity_bands(ax, ymax)
            for i, (label, rows) in enumerate(_series(sweep, parameter)):
                stats = rows.groupby(parameter)["final_factor_iu_dl"]
                x = np.asarray(sorted(stats.groups), dtype=float)
                median = stats.median().reindex(x).to_numpy(float)
                lo = stats.quantile(BAND[0]).reindex(x).to_numpy(float)
                hi = stats.quantile(BAND[1]).reindex(x).to_numpy(float)
                colour = series_colour(i)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.22, lw=0)
                ax.plot(x, median, color=colour, marker="o", ms=3.5, lw=1.8,
                        label=label or "median of replicates")
            if math.isfinite(threshold):
                ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1.3,
                           label=f"threshold {threshold:g} IU/dL")
            if _log_x(sweep.levels(parameter)):
                ax.set_xscale("log")
            ax.set_ylim(0, ymax)
            ax.set_xlabel(parameter_label(parameter))
            ax.set_ylabel(f"final {FACTOR_LABEL}")
            label_severity_bands(ax)
            ax.legend(handles=ax.get_lines(), loc="upper left", fontsize=6.5)
        fig.suptitle(f"{sweep.path.name}: dose-response (median, {BAND[0]:.0%}-{BAND[1]:.0%} of "
                     f"replicates; {len(sweep.frame)} runs)")
    return fig


def _pair(sweep: SweepTable, x: str | None, y: str | None) -> tuple[str, str | None]:
    params = sweep.parameters
    for name in (x, y):
        if name is not None and name not in params:
            raise PlotInputError(f"{name!r}: not a swept parameter; swept: {', '.join(params)}")
    x = x or params[0]
    if y is None:
        y = next((p for p in params if p != x), None)
    return x, y


def threshold_probability(sweep: SweepTable, x: str, y: str | None) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(x levels, y levels, probability (y, x), runs (y, x)) of reaching the threshold.

    A run reached the threshold when its ``threshold_day`` is not NaN; other
    swept parameters and replicates are pooled.
    """
    frame = sweep.frame
    xs = sweep.levels(x)
    ys = sweep.levels(y) if y else [None]
    prob = np.full((len(ys), len(xs)), np.nan)
    runs = np.zeros((len(ys), len(xs)), dtype=int)
    reached = frame["threshold_day"].notna()
    for (i, yv), (j, xv) in itertools.product(enumerate(ys), enumerate(xs)):
        mask = frame[x] == xv
        if y:
            mask &= frame[y] == yv
        runs[i, j] = int(mask.sum())
        if runs[i, j]:
            prob[i, j] = float(reached[mask].mean())
    return xs, ys, prob, runs


def threshold_probability_figure(sweep: SweepTable, x: str | None = None, y: str | None = None) -> Figure:
    """Heatmap of the probability of reaching the threshold over two swept parameters.

    With one swept parameter the heatmap has one row.
    """
    x, y = _pair(sweep, x, y)
    xs, ys, prob, runs = threshold_probability(sweep, x, y)
    with figure_style():
        fig, ax = plt.subplots(figsize=(1.1 * len(xs) + 3.2, 0.75 * len(ys) + 2.4), constrained_layout=True)
        image = ax.imshow(prob, origin="lower", cmap=PROBABILITY_CMAP, vmin=0.0, vmax=1.0, aspect="auto")
        for i, j in itertools.product(range(len(ys)), range(len(xs))):
            if runs[i, j]:
                p = prob[i, j]
                r, g, b, _ = image.cmap(image.norm(p))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # the cell's luminance
                ax.text(j, i, f"{p:.2f}\n(n={runs[i, j]})", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(xs)), [_format_level(v) for v in xs])
        ax.set_xlabel(parameter_label(x))
        if y:
            ax.set_yticks(range(len(ys)), [_format_level(v) for v in ys])
            ax.set_ylabel(parameter_label(y))
        else:
            ax.set_yticks([0], ["all runs"])
            ax.set_ylabel("runs (pooled)")
        ax.spines[["top", "right"]].set_visible(True)
        bar = fig.colorbar(image, ax=ax)
        bar.set_label("probability of reaching the threshold (fraction of runs)")
        threshold = sweep.threshold_iu_dl
        held = f"≥ {threshold:g} IU/dL held" if math.isfinite(threshold) else "threshold held"
        ax.set_title(f"{sweep.path.name}: P({held})")
    return fig


def time_to_threshold_figure(sweep: SweepTable, parameters: Sequence[str] | None = None) -> Figure:
    """Box plots of the day the threshold was reached (and held), per level of each swept parameter.

    Runs that never reached it are not in the boxes; the count reached / run
    stands above each level.
    """
    parameters = list(parameters or sweep.parameters)
    frame = sweep.frame
    with figure_style():
        fig, axes = _grid(len(parameters), 4.2, 3.5)
        for ax, parameter in zip(axes, parameters, strict=True):
            levels = sweep.levels(parameter)
            days = [frame.loc[frame[parameter] == v, "threshold_day"].dropna().to_numpy(float)
                    for v in levels]
            totals = [int((frame[parameter] == v).sum()) for v in levels]
            positions = [i for i, d in enumerate(days) if d.size]
            if positions:
                ax.boxplot([days[i] for i in positions], positions=positions, widths=0.55,
                           patch_artist=True, boxprops={"facecolor": THRESHOLD_COLOUR, "alpha": 0.35},
                           medianprops={"color": THRESHOLD_COLOUR, "lw": 2}, flierprops={"ms": 3})
            top = max((float(d.max()) for d in days if d.size), default=1.0)
            for i, (d, n) in enumerate(zip(days, totals, strict=True)):
                ax.text(i, top * 1.08, f"{d.size}/{n}", ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(levels)), [_format_level(v) for v in levels])
            ax.set_xlim(-0.6, len(levels) - 0.4)
            ax.set_ylim(0, top * 1.22)
            ax.set_xlabel(parameter_label(parameter))
            ax.set_ylabel("time to threshold (days after infusion)")
        fig.suptitle(f"{sweep.path.name}: time to reach and hold the threshold "
                     "(runs that reached it / runs)")
    return fig


def sweep_figures(sweep: SweepTable) -> dict[str, Figure]:
    """Every figure of a sweep, by file name (see :data:`SWEEP_FIGURES`)."""
    figures = {}
    if sweep.numeric_parameters:
        figures["dose_response"] = dose_response_figure(sweep)
    figures["threshold_probability"] = threshold_probability_figure(sweep)
    figures["time_to_threshold"] = time_to_threshold_figure(sweep)
    return figures


def plot_sweep(path: str | os.PathLike, out: str | os.PathLike | None = None,
               formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write every figure of the sweep directory ``path`` into ``out`` (default ``path/figures``)."""
    sweep = read_sweep(path)
    folder = FigureFolder(Path(out) if out is not None else Path(path) / "figures")
    written: list[Path] = []
    for name, fig in sweep_figures(sweep).items():
        try:
            written += save_figure(fig, folder, name, formats)
        finally:
            plt.close(fig)
    return written
