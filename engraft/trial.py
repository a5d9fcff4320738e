"""Trial read-outs of a virtual patient cohort: responders with exact CIs, Kaplan-Meier, milestones.

Given a finished cohort directory (``engraft cohort``), :func:`analyze_cohort`
builds, per design arm:

- the **responder table**: at each named day and threshold, the patients
  whose level is at or above the threshold (``at``), and those whose level
  stays at or above it from that day to the end of follow-up (``held``),
  with exact Clopper-Pearson 95 % intervals. A level is the trailing 28-day
  mean of the daily level (:data:`engraft.readouts.THRESHOLD_WINDOW_DAYS`),
  as the run's own ``threshold_day`` reads it: daily levels fluctuate with
  the clonal output of a finite marrow sample, as measured levels do
  between visits;
- **Kaplan-Meier** curves (lifelines) for the time to a sustained threshold
  (``threshold_day``: from then on the 28-day mean stays above it), for
  neutrophil engraftment (``neutrophil_engraftment_day`` of the run's
  summary, where the model writes it) and for myeloid recovery
  (``recovery_day``), censored at the end of follow-up, with the median
  time and its 95 % interval. Engraftment is timed for the patients whose
  ANC fell below the engraftment level (``days_anc_below_500`` > 0): one
  whose ANC never did had no aplasia to recover from, so it is counted
  beside the curve (``never_neutropenic``), not put in it at day 0, the
  convention of a single run's summary. Mixing those day-0 entries in made
  the median engraftment day of a milder regimen 0;
- the **cytopenias**: days of ANC < 0.5e9/L and of platelets < 20e9/L,
  median, IQR and 5-95 %, and how many patients had any;
- the **factor level at milestones**: median, IQR and 5-95 % range;
- **joint bleeds**: the expected annualized joint-bleed rate in the last
  year of follow-up from the model's bleeding read-out, its cohort mean
  (95 % bootstrap interval), median and the expected share of patients
  free of joint bleeds in that year;
- **noise beside biology**: for the patients run several times with new
  seeds (``cohort.noise``), the within-patient SD of each outcome beside the
  SD across patients, and the share of the cohort's variance that is
  stochastic noise rather than patient-to-patient differences.

Everything goes into ``trial.json`` and ``patients.parquet`` (one row per
patient and arm) and a short ``trial_report.md`` linking the figures.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from engraft.readouts import DAYS_BELOW_KEY, THRESHOLD_WINDOW_DAYS, rolling_mean, threshold_day
from engraft.results import atomic_write_bytes, atomic_write_text, to_json
from engraft.sweep.aggregate import SweepDirError, read_spec

PATIENTS_FILE = "patients.parquet"
TRIAL_FILE = "trial.json"
REPORT_FILE = "trial_report.md"
#: the clinical neutrophil engraftment day (3 days with ANC >= 0.5e9/L), where a run's summary has it
NEUTROPHIL_KEY = "neutrophil_engraftment_day"
#: the days of severe neutropenia (ANC < 0.5e9/L) and of platelets < 20e9/L, where a run's summary has them
NEUTROPHIL_BELOW_KEY = DAYS_BELOW_KEY[NEUTROPHIL_KEY]
PLATELET_BELOW_KEY = DAYS_BELOW_KEY["platelet_engraftment_day"]
#: the bootstrap's resamples for the mean joint-bleed rate
BOOTSTRAP = 2000
CONFIDENCE = 0.95


# ----------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k/n (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def kaplan_meier(durations: np.ndarray, events: np.ndarray, label: str) -> dict:
    """Kaplan-Meier estimate of the time to an event (lifelines), with the median and its 95 % CI.

    Returns the curve as the fraction *with* the event by each time
    (``1 - S(t)``, what a time-to-engraftment figure shows) and its
    pointwise 95 % band (lifelines' exponential Greenwood interval).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    durations = np.asarray(durations, dtype=np.float64)
    events = np.asarray(events, dtype=bool)
    if durations.size == 0:
        return {"label": label, "n": 0, "events": 0}
    kmf = KaplanMeierFitter(alpha=1 - CONFIDENCE).fit(durations, events, label=label)
    median = float(kmf.median_survival_time_)
    ci = median_survival_times(kmf.confidence_interval_)
    low, high = (float(v) for v in np.asarray(ci).ravel()[:2])
    surv = kmf.survival_function_.iloc[:, 0]
    band = kmf.confidence_interval_
    return {
        "label": label, "n": int(durations.size), "events": int(events.sum()),
        "median_days": _finite(median), "median_ci_days": [_finite(low), _finite(high)],
        "timeline": [float(t) for t in surv.index],
        "with_event": [float(1 - s) for s in surv.to_numpy()],
        "with_event_low": [float(1 - s) for s in band.iloc[:, 1].to_numpy()],
        "with_event_high": [float(1 - s) for s in band.iloc[:, 0].to_numpy()],
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _quantiles(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": int(v.size), "median": float(q[2]), "q25": float(q[1]), "q75": float(q[3]),
            "q05": float(q[0]), "q95": float(q[4]), "mean": float(v.mean())}


def _bootstrap_mean(values: np.ndarray, seed: int) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(BOOTSTRAP, v.size), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------
# per-patient outcomes
# ----------------------------------------------------------------------------------
def _level_at(days: np.ndarray, smooth: np.ndarray, day: float) -> float:
    """The 28-day mean level at the last record on or before ``day`` (NaN before the first)."""
    i = np.searchsorted(days, day, side="right") - 1
    return float(smooth[i]) if i >= 0 else float("nan")


def patient_outcomes(timeseries, summary: dict, days: tuple, thresholds: tuple) -> dict:
    """One patient's read-outs from its time series and summary (see the module docstring)."""
    from engraft.tally import severity

    t = timeseries["day"].to_numpy(dtype=np.float64)
    level = timeseries["factor_iu_dl"].to_numpy(dtype=np.float64)
    after = t > 0
    t, level = t[after], level[after]
    smooth = rolling_mean(t, level, THRESHOLD_WINDOW_DAYS)
    final = float(t[-1]) if t.size else float("nan")
    out: dict = {"final_day": final}
    for d in days:
        out[f"level_day{d:g}"] = _level_at(t, smooth, d)
    for thr in thresholds:
        for d in days:
            i = np.searchsorted(t, d, side="right") - 1
            out[f"at_{thr:g}_day{d:g}"] = bool(i >= 0 and smooth[i] >= thr)
            out[f"held_{thr:g}_day{d:g}"] = bool(i >= 0 and (smooth[i:] >= thr).all())
        reached = threshold_day(t, level, thr)
        out[f"time_to_{thr:g}_days"] = reached if math.isfinite(reached) else final
        out[f"reached_{thr:g}"] = bool(math.isfinite(reached))
    year1 = t <= 365
    out["year1_mean_factor_iu_dl"] = float(level[year1].mean()) if year1.any() else float("nan")
    last = t > final - 365
    out["last_year_mean_factor_iu_dl"] = float(level[last].mean()) if last.any() else float("nan")
    out["last_year_severity"] = severity(out["last_year_mean_factor_iu_dl"])
    if "joint_bleeds_per_year" in timeseries:
        rate = timeseries["joint_bleeds_per_year"].to_numpy(dtype=np.float64)[after]
        out["last_year_joint_bleeds_per_year"] = float(rate[last].mean()) if last.any() else float("nan")
        # the expected chance of no joint bleed in the last year (Poisson bleeding at the modelled rate)
        out["last_year_bleed_free_probability"] = float(math.exp(-out["last_year_joint_bleeds_per_year"]))
    neutrophil = summary.get(NEUTROPHIL_KEY, "absent")
    below = summary.get(NEUTROPHIL_BELOW_KEY)
    if neutrophil is None and below is None:  # a model without blood counts writes the keys as None
        neutrophil = "absent"
    if neutrophil != "absent":
        hit = neutrophil is not None and math.isfinite(float(neutrophil))
        # only a count that fell below the level has an engraftment to time; one that never did
        # (a milder conditioning) has none, though its summary gives day 0 by convention
        neutropenic = not hit or below is None or below > 0
        out["neutropenic"] = bool(neutropenic)
        out["neutrophil_engraftment_days"] = (float(neutrophil) if hit else final) if neutropenic else float("nan")
        out["neutrophil_engrafted"] = bool(hit and neutropenic)
    for key in (NEUTROPHIL_BELOW_KEY, PLATELET_BELOW_KEY):
        if summary.get(key) is not None:
            out[key] = float(summary[key])
    if "recovery_day" in summary:  # older models: myeloid recovery instead of clinical counts
        recovery = summary["recovery_day"]
        hit = recovery is not None and math.isfinite(float(recovery))
        out["myeloid_recovery_days"] = float(recovery) if hit else final
        out["myeloid_recovered"] = bool(hit)
    for key in ("final_top_clone_share", "final_hsc_chimerism", "final_clones_alive", "final_hsc_vcn"):
        if key in summary:
            out[key] = summary[key]
    return out


def patient_table(out: Path, spec: dict, days: tuple, thresholds: tuple):
    """One row per done run: its labels, drawn values and read-outs (noise replicates included)."""
    import pandas as pd

    rows = []
    columns = ("day", "factor_iu_dl", "joint_bleeds_per_year")
    for run in spec["runs"]:
        path = out / "runs" / run["run_id"]
        if not (path / "summary.json").is_file() or not (path / "provenance.json").is_file():
            continue
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        ts = pd.read_csv(path / "timeseries.csv", usecols=lambda c: c in columns)
        row = {"run_id": run["run_id"], **run["params"], "replicate": run["replicate"], "seed": run["seed"]}
        row.update(patient_outcomes(ts, summary, days, thresholds))
        row["has_neutrophil_key"] = "neutropenic" in row
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------
# the cohort's tables
# ----------------------------------------------------------------------------------
def drawn_columns(spec: dict) -> list[str]:
    """The table's columns holding what was drawn per patient (named draws and drawn key paths)."""
    design = spec.get("design") or {}
    columns = []
    for name, p in (design.get("parameters") or {}).items():
        if p.get("apply", "set") != "set":  # the draw itself (a factor or exposure), not the values it sets
            columns.append(name)
        else:
            columns.extend(path for path in p.get("paths", []) if path not in columns)
    return columns


def _noise(table, outcome: str, arm: int) -> dict:
    """Within-patient (seed) SD beside the SD across patients, for one outcome in one arm."""
    rows = table[table["arm"] == arm]
    main = rows[rows["replicate"] == 0][outcome].to_numpy(dtype=np.float64)
    groups = [g[outcome].to_numpy(dtype=np.float64) for _, g in rows.groupby("patient") if len(g) > 1]
    groups = [g[np.isfinite(g)] for g in groups]
    groups = [g for g in groups if g.size > 1]
    total = float(np.nanvar(main, ddof=1)) if np.isfinite(main).sum() > 1 else float("nan")
    if not groups:
        return {"outcome": outcome, "patients": 0, "sd_across_patients": math.sqrt(total)
                if math.isfinite(total) else None}
    within = float(np.mean([g.var(ddof=1) for g in groups]))  # pooled one-way ANOVA within-group variance
    share = within / total if total > 0 else float("nan")
    return {"outcome": outcome, "patients": len(groups), "replicates": int(max(g.size for g in groups)),
            "sd_within_patient": math.sqrt(within), "sd_across_patients": math.sqrt(total),
            "noise_share_of_variance": min(share, 1.0) if math.isfinite(share) else None}


def _influence(table, columns: list[str], outcome: str) -> list[dict]:
    """Spearman rank correlation of each drawn quantity with an outcome (all arms' main runs)."""
    from scipy.stats import spearmanr

    main = table[table["replicate"] == 0]
    found = []
    for c in columns:
        if c not in main or main[c].dtype == object or main[c].nunique() < 2:
            continue
        x, y = main[c].to_numpy(dtype=np.float64), main[outcome].to_numpy(dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        rho = float(spearmanr(x[ok], y[ok]).statistic)
        found.append({"parameter": c, "spearman_rho": rho})
    return sorted(found, key=lambda r: -abs(r["spearman_rho"]) if math.isfinite(r["spearman_rho"]) else 0)


def analyze_cohort(out: str | os.PathLike) -> dict:
    """Trial read-outs of a cohort directory; writes ``patients.parquet``, ``trial.json``, ``trial_report.md``.

    Returns
    -------
    dict
        What ``trial.json`` holds: per arm the responder table, Kaplan-Meier
        estimates, milestone levels, joint bleeds and noise; the most
        influential drawn quantities.
    """
    import io

    out = Path(out)
    spec = read_spec(out)
    design = spec.get("design") or {}
    if design.get("kind") != "cohort":
        raise SweepDirError(f"{out}: not a cohort directory (its sweep.json has no cohort design)")
    days = tuple(design["readouts"]["days"])
    thresholds = tuple(design["readouts"]["thresholds"])
    table = patient_table(out, spec, days, thresholds)
    n_runs = len(spec["runs"])
    if table.empty:
        raise SweepDirError(f"{out}: no finished runs yet (0 of {n_runs}); run the cohort first")
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(out / PATIENTS_FILE, buffer.getvalue())

    arm_names = {}
    for run in spec["runs"]:
        arm_names.setdefault(run["params"]["arm"], run["params"].get("arm_name", str(run["params"]["arm"])))
    has_neutrophil = bool(table["has_neutrophil_key"].any())
    neutrophil_everywhere = bool(table["has_neutrophil_key"].all())
    result: dict = {"cohort_dir": str(out), "runs": n_runs, "runs_done": int(len(table)),
                    "patients_per_arm": design["patients"], "days": list(days), "thresholds": list(thresholds),
                    "follow_up_days": float(table["final_day"].max()),
                    "neutrophil_engraftment": (
                        "present" if neutrophil_everywhere else "partial" if has_neutrophil else "absent"),
                    "arms": []}
    outcomes_for_noise = ["last_year_mean_factor_iu_dl", "year1_mean_factor_iu_dl",
                          *[f"time_to_{t:g}_days" for t in thresholds],
                          "neutrophil_engraftment_days" if neutrophil_everywhere else "myeloid_recovery_days",
                          NEUTROPHIL_BELOW_KEY, PLATELET_BELOW_KEY]
    outcomes_for_noise = [o for o in outcomes_for_noise if o in table]
    for arm in sorted(arm_names):
        rows = table[(table["arm"] == arm) & (table["replicate"] == 0)]
        n = int(len(rows))
        entry: dict = {"arm": int(arm), "name": arm_names[arm], "patients": n, "responders": [],
                       "kaplan_meier": {}, "milestones": [], "noise": []}
        for thr in thresholds:
            for d in days:
                for kind in ("at", "held"):
                    k = int(rows[f"{kind}_{thr:g}_day{d:g}"].sum())
                    low, high = clopper_pearson(k, n)
                    entry["responders"].append({"threshold_iu_dl": thr, "day": d, "kind": kind, "n": n,
                                                "responders": k, "fraction": k / n if n else None,
                                                "ci_low": low, "ci_high": high})
            entry["kaplan_meier"][f"time_to_{thr:g}"] = kaplan_meier(
                rows[f"time_to_{thr:g}_days"], rows[f"reached_{thr:g}"],
                f"sustained {thr:g} IU/dL")
        if neutrophil_everywhere and n:
            # the time to engraftment of the patients whose ANC fell below the level: one that
            # never did has no aplasia to recover from (counted beside the curve, not in it)
            neutropenic = rows[rows["neutropenic"].astype(bool)]
            entry["never_neutropenic"] = int(n - len(neutropenic))
            if len(neutropenic):
                entry["kaplan_meier"]["neutrophil_engraftment"] = kaplan_meier(
                    neutropenic["neutrophil_engraftment_days"], neutropenic["neutrophil_engrafted"].astype(bool),
                    "neutrophil engraftment")
        for key in (NEUTROPHIL_BELOW_KEY, PLATELET_BELOW_KEY):
            if key in rows and rows[key].notna().all():
                days_below = rows[key].to_numpy(dtype=np.float64)
                entry.setdefault("cytopenias", {})[key] = {**_quantiles(days_below),
                                                           "patients_below": int((days_below > 0).sum())}
        if "myeloid_recovery_days" in rows and rows["myeloid_recovery_days"].notna().all():
            entry["kaplan_meier"]["myeloid_recovery"] = kaplan_meier(
                rows["myeloid_recovery_days"], rows["myeloid_recovered"].astype(bool), "myeloid recovery")
        for d in days:
            entry["milestones"].append({"day": d, **_quantiles(rows[f"level_day{d:g}"])})
        if "last_year_joint_bleeds_per_year" in rows:
            rate = rows["last_year_joint_bleeds_per_year"].to_numpy(dtype=np.float64)
            low, high = _bootstrap_mean(rate, seed=int(spec.get("root_seed", 0)) + arm)
            entry["joint_bleeds"] = {**_quantiles(rate), "mean_ci": [low, high],
                                     "bleed_free_share": float(rows["last_year_bleed_free_probability"].mean()),
                                     "share_below_1_per_year": float((rate < 1).mean())}
        severity = rows["last_year_severity"].value_counts().to_dict()
        entry["last_year_severity"] = {k: int(v) for k, v in severity.items()}
        all_rows = table[table["arm"] == arm]
        for outcome in outcomes_for_noise:
            entry["noise"].append(_noise(table, outcome, arm) if len(all_rows) else {"outcome": outcome})
        result["arms"].append(entry)
    result["influence_on_last_year_level"] = _influence(table, drawn_columns(spec),
                                                        "last_year_mean_factor_iu_dl")
    atomic_write_text(out / TRIAL_FILE, to_json(result))
    atomic_write_text(out / REPORT_FILE, report_markdown(result, design))
    return result


# ----------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------
FIGURES = (("cohort_factor_bands", "Factor level over time: cohort percentile bands and a few patients"),
           ("cohort_kaplan_meier", "Kaplan-Meier curves per arm"),
           ("cohort_waterfall", "Each patient's last-year mean level, coloured by severity class"),
           ("cohort_engraftment_days", "Distribution of engraftment days"),
           ("cohort_influence", "Outcome against the most influential drawn quantity"))


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.0f} %"


def _num(x, fmt: str = ".1f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def report_markdown(result: dict, design: dict, figures_dir: str = "figures") -> str:
    """The short trial report (Markdown): design, responders, KM medians, milestones, bleeds, noise."""
    lines = [f"# Virtual trial report: {Path(result['cohort_dir']).name}", ""]
    lines += [f"{result['patients_per_arm']} virtual patients per arm, {len(result['arms'])} arm(s); "
              f"{result['runs_done']} of {result['runs']} runs done. Levels are 28-day trailing means of "
              "the daily plasma level; intervals are 95 % (exact Clopper-Pearson for proportions).", ""]
    dropped = design["readouts"].get("days_after_follow_up") or []
    if dropped:
        lines += [f"Days after the end of follow-up, left out: {', '.join(f'{d:g}' for d in dropped)}.", ""]
    lines += ["## Drawn per patient", "", "| quantity | distribution | sets | source |", "|---|---|---|---|"]
    for name, p in design["parameters"].items():
        sets = ", ".join(p["paths"]) + ("" if p["apply"] == "set" else f" ({p['apply']})")
        lines.append(f"| {name} | {p['distribution']} | {sets} | {p.get('source') or 'not given'} |")
    if design.get("correlation"):
        c = design["correlation"]
        lines += ["", f"Gaussian copula over {', '.join(c['parameters'])}: correlation matrix {c['matrix']}."]
    lines += ["", "## Responders", "",
              "`at`: level >= threshold on that day; `held`: level >= threshold from that day to the end "
              "of follow-up.", "",
              "| arm | threshold (IU/dL) | day | kind | responders | fraction | 95 % CI |",
              "|---|---|---|---|---|---|---|"]
    for arm in result["arms"]:
        for r in arm["responders"]:
            lines.append(f"| {arm['name']} | {r['threshold_iu_dl']:g} | {r['day']:g} | {r['kind']} | "
                         f"{r['responders']}/{r['n']} | {_pct(r['fraction'])} | "
                         f"{_pct(r['ci_low'])}-{_pct(r['ci_high'])} |")
    lines += ["", "## Time to event (Kaplan-Meier, censored at the end of follow-up)", "",
              "| arm | event | events/n | median (days) | 95 % CI |", "|---|---|---|---|---|"]
    for arm in result["arms"]:
        for km in arm["kaplan_meier"].values():
            ci = km.get("median_ci_days") or [None, None]
            lines.append(f"| {arm['name']} | {km['label']} | {km['events']}/{km['n']} | "
                         f"{_num(km.get('median_days'), '.0f')} | {_num(ci[0], '.0f')}-{_num(ci[1], '.0f')} |")
    if any("neutrophil_engraftment" in arm["kaplan_meier"] for arm in result["arms"]):
        lines += ["", "Caution: the shipped parameter sets have no cytokine feedback (G-CSF, thrombopoietin; "
                      "maturation.<lineage>.feedback_exponent 0), so their recovery after conditioning is calibrated at the trial's dose (5.0-6.1e6 CD34+/kg, homing 0.3) "
                      "and depends on the homed dose more steeply than patients' recovery does. A patient "
                      "whose homed dose is well below the calibrated one engrafts weeks late in the model "
                      "(docs/model.md sec. 6)."]
    never = [(arm["name"], arm["never_neutropenic"], arm["patients"]) for arm in result["arms"]
             if arm.get("never_neutropenic")]
    if never:
        lines += ["", "Neutrophil engraftment is timed only for the patients whose ANC fell below "
                      "0.5e9/L: " + "; ".join(f"in {name}, {k} of {n} never did" for name, k, n in never)
                  + ". They have no aplasia to recover from, so they are not in the engraftment curve "
                    "(their runs' summaries give engraftment day 0 by convention); the cytopenia table "
                    "below counts them with 0 days."]
    if result["neutrophil_engraftment"] == "absent":
        lines += ["", "Neutrophil engraftment (3 days with ANC >= 0.5e9/L) is not estimated: these runs' "
                      f"summaries have no `{NEUTROPHIL_KEY}` value (engraft writes one where the experiment "
                      "has `blood_counts`). The myeloid recovery curve is the model's `recovery_day` read-out (the "
                      "myeloid compartment back to `readouts.recovery_fraction` of its baseline), not the "
                      "clinical definition."]
    elif result["neutrophil_engraftment"] == "partial":
        lines += ["", f"Some runs lack `{NEUTROPHIL_KEY}` (older model): neutrophil engraftment is not "
                      "estimated for an arm unless all its runs have it."]
    cyto = [(arm["name"], arm["patients"], arm["cytopenias"]) for arm in result["arms"] if arm.get("cytopenias")]
    if cyto:
        lines += ["", "## Cytopenias after conditioning (days below the level; no transfusions or growth "
                      "factors modelled)", "",
                  "| arm | count | patients below | median days | IQR | 5-95 % |", "|---|---|---|---|---|---|"]
        names = {NEUTROPHIL_BELOW_KEY: "ANC < 0.5e9/L", PLATELET_BELOW_KEY: "platelets < 20e9/L"}
        for name, n, table in cyto:
            for key, q in table.items():
                lines.append(f"| {name} | {names[key]} | {q['patients_below']}/{n} | {q['median']:.0f} | "
                             f"{q['q25']:.0f}-{q['q75']:.0f} | {q['q05']:.0f}-{q['q95']:.0f} |")
    lines += ["", "## Factor level at milestones (IU/dL)", "",
              "| arm | day | n | median | IQR | 5-95 % |", "|---|---|---|---|---|---|"]
    for arm in result["arms"]:
        for m in arm["milestones"]:
            if m.get("n"):
                lines.append(f"| {arm['name']} | {m['day']:g} | {m['n']} | {m['median']:.1f} | "
                             f"{m['q25']:.1f}-{m['q75']:.1f} | {m['q05']:.1f}-{m['q95']:.1f} |")
    lines += ["", "## Joint bleeds in the last year (expected, from the model's bleeding read-out)", "",
              "| arm | mean ABR (95 % CI) | median | IQR | share < 1/yr | expected share bleed-free |",
              "|---|---|---|---|---|---|"]
    for arm in result["arms"]:
        b = arm.get("joint_bleeds")
        if b and b.get("n"):
            lines.append(f"| {arm['name']} | {b['mean']:.2f} ({_num(b['mean_ci'][0], '.2f')}-"
                         f"{_num(b['mean_ci'][1], '.2f')}) | {b['median']:.2f} | {b['q25']:.2f}-{b['q75']:.2f} | "
                         f"{_pct(b['share_below_1_per_year'])} | {_pct(b['bleed_free_share'])} |")
    lines += ["", "## Stochastic noise beside patient-to-patient spread", "",
              "Patients run again with new seeds (same drawn values) give the within-patient SD; the SD "
              "across patients includes both. The noise share is within-patient variance / total variance.",
              "", "| arm | outcome | patients x runs | SD within patient | SD across patients | noise share |",
              "|---|---|---|---|---|---|"]
    for arm in result["arms"]:
        for z in arm["noise"]:
            if z.get("patients"):
                lines.append(f"| {arm['name']} | {z['outcome']} | {z['patients']} x {z['replicates']} | "
                             f"{_num(z['sd_within_patient'], '.3g')} | {_num(z['sd_across_patients'], '.3g')} | "
                             f"{_pct(z['noise_share_of_variance'])} |")
    if not any(z.get("patients") for arm in result["arms"] for z in arm["noise"]):
        lines.append("| - | no patient was run more than once (cohort.noise): noise is not separated | | | | |")
    infl = result.get("influence_on_last_year_level") or []
    if infl:
        lines += ["", "## What drives the last-year level (Spearman rank correlation, all arms)", "",
                  "| drawn quantity | rho |", "|---|---|"]
        lines += [f"| {r['parameter']} | {r['spearman_rho']:+.2f} |" for r in infl]
    lines += ["", "## Figures", ""]
    lines += [f"- [{title}]({figures_dir}/{stem}.png)" for stem, title in FIGURES]
    return "\n".join(lines) + "\n"
