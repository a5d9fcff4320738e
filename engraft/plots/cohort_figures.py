"""Figures of a virtual patient cohort (``engraft plot COHORT_DIR``).

- ``cohort_factor_bands``: factor level over time per arm, the cohort's
  median with 25-75 % and 5-95 % bands of the 28-day mean level, and a few
  individual patients' daily courses;
- ``cohort_kaplan_meier``: Kaplan-Meier curves per arm (time to the
  sustained threshold, neutrophil engraftment where the runs have it,
  myeloid recovery), with 95 % bands;
- ``cohort_waterfall``: each patient's last-year mean level, sorted,
  coloured by severity class;
- ``cohort_engraftment_days``: the distribution of engraftment days;
- ``cohort_influence``: the last-year level against the drawn quantity with
  the largest rank correlation.

They read ``trial.json`` and ``patients.parquet`` (written by
:func:`engraft.trial.analyze_cohort`, which this runs first if they are
missing) and the runs' ``timeseries.csv``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from engraft.plots.style import (
    DAY_LABEL,
    FACTOR_LABEL,
    SEVERITY_BANDS,
    THRESHOLD_COLOUR,
    figure_style,
    save_figure,
    series_colour,
    severity_bands,
)
from engraft.readouts import THRESHOLD_WINDOW_DAYS, rolling_mean

COHORT_FIGURES = ("cohort_factor_bands", "cohort_kaplan_meier", "cohort_waterfall", "cohort_engraftment_days",
                  "cohort_influence")
#: individual courses drawn over the bands, per arm
INDIVIDUAL_COURSES = 5
SEVERITY_COLOURS = {"severe": "#cb181d", "moderate": "#fd8d3c", "mild": "#fdd0a2", "normal": "#74c476"}


def is_cohort_dir(path) -> bool:
    """True for a sweep directory written by ``engraft cohort``."""
    spec = Path(path) / "sweep.json"
    if not spec.is_file():
        return False
    try:
        return (json.loads(spec.read_text(encoding="utf-8")).get("design") or {}).get("kind") == "cohort"
    except (OSError, json.JSONDecodeError):
        return False


def _read(out: Path):
    import pandas as pd

    from engraft.trial import PATIENTS_FILE, TRIAL_FILE, analyze_cohort

    if not (out / TRIAL_FILE).is_file() or not (out / PATIENTS_FILE).is_file():
        analyze_cohort(out)
    trial = json.loads((out / TRIAL_FILE).read_text(encoding="utf-8"))
    table = pd.read_parquet(out / PATIENTS_FILE)
    return trial, table


def factor_bands_figure(out: Path, trial: dict, table):
    """Cohort percentile bands of the 28-day mean level per arm, with a few patients' daily courses."""
    import pandas as pd

    arms = trial["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(5.2 * len(arms), 3.6), sharey=True, squeeze=False)
    threshold = trial["thresholds"][0]
    ymax = 1.0
    for ax, arm in zip(axes[0], arms, strict=True):
        rows = table[(table["arm"] == arm["arm"]) & (table["replicate"] == 0)].sort_values("patient")
        grid, curves = None, []
        for k, run_id in enumerate(rows["run_id"]):
            ts = pd.read_csv(out / "runs" / run_id / "timeseries.csv", usecols=["day", "factor_iu_dl"])
            ts = ts[ts["day"] > 0]
            days, level = ts["day"].to_numpy(), ts["factor_iu_dl"].to_numpy()
            if grid is None:
                grid = days
            curves.append(np.interp(grid, days, rolling_mean(days, level, THRESHOLD_WINDOW_DAYS)))
            if k < INDIVIDUAL_COURSES:
                ax.plot(days, level, lw=0.5, alpha=0.6, color=series_colour(k + 1),
                        label="individual patients (daily)" if k == 0 else None)
        curves = np.array(curves)
        q = np.nanquantile(curves, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ymax = max(ymax, float(np.nanmax(q[4])) * 1.15)
        ax.fill_between(grid, q[0], q[4], color="#9ecae1", alpha=0.45, lw=0, label="5-95 % of patients")
        ax.fill_between(grid, q[1], q[3], color="#4292c6", alpha=0.55, lw=0, label="25-75 %")
        ax.plot(grid, q[2], color="#08306b", lw=1.6, label="median (28-day mean)")
        ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1, label=f"{threshold:g} IU/dL")
        ax.set_title(f"{arm['name']} (n = {arm['patients']})")
        ax.set_xlabel(DAY_LABEL)
    for ax in axes[0]:
        ax.set_ylim(0, ymax)
        severity_bands(ax, ymax)
    axes[0][0].set_ylabel(FACTOR_LABEL)
    axes[0][-1].legend(loc="upper right", fontsize=7, frameon=False)
    return fig


def kaplan_meier_figure(trial: dict):
    """KM curves (fraction with the event by each day, 95 % bands) per endpoint, one colour per arm."""
    endpoints = list(dict.fromkeys(k for arm in trial["arms"] for k in arm["kaplan_meier"]))
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.2 * len(endpoints), 3.4), squeeze=False)
    for ax, key in zip(axes[0], endpoints, strict=True):
        last_event = 0.0  # the axis ends a little after the last event (not at the end of follow-up)
        for arm in trial["arms"]:
            km = arm["kaplan_meier"].get(key) or {}
            steps = [t for t, prev, now in zip(km.get("timeline", [])[1:], km.get("with_event", []),
                                               km.get("with_event", [])[1:], strict=False) if now > prev]
            last_event = max([last_event, *steps])
        for a, arm in enumerate(trial["arms"]):
            km = arm["kaplan_meier"].get(key)
            if not km or not km.get("n"):
                continue
            colour = series_colour(a)
            median = km.get("median_days")
            label = f"{arm['name']}: median {median:.0f} d" if median is not None else \
                f"{arm['name']}: median not reached"
            ax.step(km["timeline"], km["with_event"], where="post", color=colour, lw=1.4, label=label)
            ax.fill_between(km["timeline"], km["with_event_low"], km["with_event_high"], step="post",
                            color=colour, alpha=0.15, lw=0)
            ax.set_title(km["label"])
        ax.set_ylim(0, 1.02)
        if trial.get("follow_up_days"):
            ax.set_xlim(0, min(trial["follow_up_days"], max(14.0, 1.3 * last_event)))
        ax.set_xlabel(DAY_LABEL)
        ax.set_ylabel("fraction of patients with the event")
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    if trial.get("neutrophil_engraftment") == "absent":
        fig.text(0.01, -0.02, "Neutrophil engraftment not estimated: the runs' summaries have no "
                              "neutrophil_engraftment_day (model without clinical blood counts).",
                 fontsize=7, color="#555555")
    return fig


def waterfall_figure(table, trial: dict):
    """Each patient's last-year mean level, sorted within each arm, coloured by severity class."""
    arms = trial["arms"]
    fig, axes = plt.subplots(1, len(arms), figsize=(5.2 * len(arms), 3.4), sharey=True, squeeze=False)
    threshold = trial["thresholds"][0]
    for ax, arm in zip(axes[0], arms, strict=True):
        rows = table[(table["arm"] == arm["arm"]) & (table["replicate"] == 0)]
        rows = rows.sort_values("last_year_mean_factor_iu_dl", ascending=False)
        colours = [SEVERITY_COLOURS.get(s, "#999999") for s in rows["last_year_severity"]]
        ax.bar(np.arange(len(rows)), rows["last_year_mean_factor_iu_dl"], width=1.0, color=colours, lw=0)
        ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1)
        ax.set_title(arm["name"])
        ax.set_xlabel("patients, by last-year mean level")
        ax.set_xlim(-0.5, len(rows) - 0.5)
    axes[0][0].set_ylabel("last-year mean factor (IU/dL)")
    from matplotlib.patches import Patch

    handles = [Patch(color=SEVERITY_COLOURS[label.split(" ")[0]], label=label) for _, _, label, _ in SEVERITY_BANDS
               if label.split(" ")[0] in SEVERITY_COLOURS]
    axes[0][-1].legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    return fig


def engraftment_days_figure(table, trial: dict):
    """Histogram of engraftment days per arm (neutrophil engraftment where present, else myeloid recovery)."""
    neutrophil = "neutrophil_engraftment_days" in table and trial.get("neutrophil_engraftment") == "present"
    column, event = (("neutrophil_engraftment_days", "neutrophil_engrafted") if neutrophil
                     else ("myeloid_recovery_days", "myeloid_recovered"))
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    if column not in table or event not in table:  # runs without blood counts or recovery read-out
        ax.text(0.5, 0.5, "no engraftment read-out in these runs", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    main = table[table["replicate"] == 0]
    if neutrophil and "neutropenic" in main:  # engraftment is timed only where the ANC fell below the level
        never = main[~main["neutropenic"].astype(bool)].groupby("arm").size().to_dict()
        main = main[main["neutropenic"].astype(bool)]
    else:
        never = {}
    values = main.loc[main[event].astype(bool), column]
    bins = np.arange(math.floor(values.min()) - 0.5, math.ceil(values.max()) + 1.5) if len(values) else 10
    if len(values) and len(bins) > 60:
        bins = 40
    for a, arm in enumerate(trial["arms"]):
        rows = main[(main["arm"] == arm["arm"]) & main[event].astype(bool)]
        censored = int(((main["arm"] == arm["arm"]) & ~main[event].astype(bool)).sum())
        label = f"{arm['name']} ({censored} not engrafted by the end"
        if never.get(arm["arm"]):
            label += f"; {never[arm['arm']]} never below ANC 0.5e9/L"
        ax.hist(rows[column], bins=bins, alpha=0.6, color=series_colour(a), label=label + ")")
    ax.set_xlabel("neutrophil engraftment day" if neutrophil else
                  "myeloid recovery day (model read-out recovery_day)")
    ax.set_ylabel("patients")
    ax.legend(fontsize=7, frameon=False)
    return fig


def influence_figure(table, trial: dict):
    """The last-year level against the drawn quantity with the largest |Spearman rho|."""
    influence = trial.get("influence_on_last_year_level") or []
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    if not influence:
        ax.text(0.5, 0.5, "no numeric drawn quantity varies", ha="center", va="center", transform=ax.transAxes)
        return fig
    top = influence[0]["parameter"]
    main = table[table["replicate"] == 0]
    for a, arm in enumerate(trial["arms"]):
        rows = main[main["arm"] == arm["arm"]]
        ax.scatter(rows[top], rows["last_year_mean_factor_iu_dl"], s=9, alpha=0.7, color=series_colour(a),
                   label=arm["name"], lw=0)
    ax.axhline(trial["thresholds"][0], color=THRESHOLD_COLOUR, ls="--", lw=1)
    ax.set_xlabel(top)
    ax.set_ylabel("last-year mean factor (IU/dL)")
    ax.set_title(f"most influential drawn quantity (Spearman rho {influence[0]['spearman_rho']:+.2f})",
                 fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    return fig


def plot_cohort(out, figures_dir=None, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write every cohort figure into ``figures_dir`` (default ``COHORT_DIR/figures``); return the files."""
    out = Path(out)
    folder = Path(figures_dir) if figures_dir else out / "figures"
    trial, table = _read(out)
    written: list[Path] = []
    with figure_style():
        builders = {
            "cohort_factor_bands": lambda: factor_bands_figure(out, trial, table),
            "cohort_kaplan_meier": lambda: kaplan_meier_figure(trial),
            "cohort_waterfall": lambda: waterfall_figure(table, trial),
            "cohort_engraftment_days": lambda: engraftment_days_figure(table, trial),
            "cohort_influence": lambda: influence_figure(table, trial),
        }
        for name, build in builders.items():
            fig = build()
            try:
                written += save_figure(fig, folder, name, formats)
            finally:
                plt.close(fig)
    return written
