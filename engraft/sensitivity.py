"""Global sensitivity of engraft's read-outs: Sobol indices (Saltelli sampling) and Morris screening.

A ``sensitivity:`` section names parameters with ranges and the read-outs
to explain::

    sensitivity:
      method: sobol                 # sobol (first-order and total indices) | morris (screening)
      samples: 64                   # sobol: base samples N (N (k + 2) runs); morris: trajectories (r (k + 1) runs)
      levels: 4                     # morris grid levels
      root_seed: 7
      bootstrap: 1000               # resamples for the 95 % intervals (SALib)
      noise_replicates: 8           # runs at the centre of the ranges with new seeds: the noise floor
      overrides: {time.duration_days: 730}
      parameters:                   # key path (or a name with paths/apply, as in a cohort) -> range
        infusions[0].dose_per_kg: {low: 2.0e6, high: 8.0e6}
        infusions[0].transduction: {low: 0.3, high: 0.9}
        homing_factor: {low: 0.5, high: 1.5, apply: multiply, paths: ["infusions[0].homing"]}
      readouts: [year1_mean_factor_iu_dl, engraftment_day, largest_clone_share]

Parameters vary uniformly over their ranges (SALib's ``problem``). The
design is sampled by SALib (``SALib.sample.sobol`` -- Saltelli's scheme --
or ``SALib.sample.morris``) and run on the sweep machinery (local processes,
Dask, resume after a kill); each design point gets its own seed from the
root seed. Read-outs:

- ``year1_mean_factor_iu_dl``: the mean daily factor level over days 1-365;
- ``engraftment_day``: the run's ``neutrophil_engraftment_day`` where the
  model writes it, else its ``recovery_day`` (myeloid recovery; the report
  says which); a run without the event gets the end of follow-up, and a
  run whose ANC never fell below 0.5e9/L gets day 0 (the summary's
  convention: over ranges that reach such mild conditioning, name
  ``days_anc_below_500``, the days of severe neutropenia, instead);
- ``largest_clone_share``: the largest clone's share of graft lattice cells
  at the end (``final_top_clone_share``);
- any numeric key of the run's ``summary.json``.

The noise floor: the runs are stochastic, so part of each read-out's
variance over the design is seed noise. ``noise_replicates`` runs at the
centre of the ranges estimate the noise variance; divided by the
read-out's variance over the design it is the share of variance no
parameter can explain. First-order indices (and Morris mu*, scaled by the
read-out's SD) below the floor are not read as effects.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engraft.config.load import (
    ConfigError,
    available_memory_bytes,
    load_yaml,
    parse_override,
    resolve_bases,
    set_path,
    split_key_path,
    validate,
)
from engraft.errors import brief
from engraft.readouts import DAYS_BELOW_KEY, fell_below
from engraft.results import atomic_write_text, to_json
from engraft.sweep.design import DesignSweep
from engraft.sweep.spec import MAX_RUNS, Run, run_seeds

#: bytes per sample and resample that SALib's bootstrap holds at once (its index array and about five
#: resampled arrays of 8-byte numbers: an upper estimate), and the share of free memory it may take
BOOTSTRAP_BYTES = 48
BOOTSTRAP_MEMORY_FRACTION = 0.5
#: the most Morris grid levels accepted
MAX_LEVELS = 1000
#: read-outs of the recovery after conditioning, which the model has without cytokine feedback
COUNT_KINETICS_READOUTS = ("engraftment_day", "neutrophil_engraftment_day", "platelet_engraftment_day",
                           "days_anc_below_500", "days_platelets_below_20")
COUNT_KINETICS_CAUTION = (
    "Caution: the shipped parameter sets have no cytokine feedback (G-CSF, thrombopoietin; "
    "maturation.<lineage>.feedback_exponent 0), so the recovery after conditioning "
    "is calibrated at the trial's dose and depends on the homed dose (dose, homing) more steeply than "
    "patients' recovery does: the indices of those parameters on this read-out are the model's, larger "
    "than a patient's would be (docs/model.md sec. 6).")
#: engraftment-day read-outs -> the summary key of days below their level (a run with none reads day 0,
#: the summary's convention: :data:`engraft.readouts.DAYS_BELOW_KEY`)
ENGRAFTMENT_BELOW_KEYS = {"engraftment_day": DAYS_BELOW_KEY["neutrophil_engraftment_day"], **DAYS_BELOW_KEY}
SENSITIVITY_KEYS = ("method", "samples", "levels", "root_seed", "bootstrap", "noise_replicates",
                    "overrides", "parameters", "readouts", "workers", "scheduler")
PARAMETER_KEYS = ("low", "high", "apply", "paths", "source")
METHODS = ("sobol", "morris")
DERIVED_READOUTS = ("year1_mean_factor_iu_dl", "engraftment_day", "largest_clone_share")
RESULT_FILE = "sensitivity.json"
REPORT_FILE = "sensitivity_report.md"


@dataclass(frozen=True)
class RangeParameter:
    name: str
    low: float
    high: float
    paths: tuple[str, ...]
    apply: str = "set"
    source: str | None = None


@dataclass
class SensitivitySpec:
    method: str
    samples: int
    levels: int
    root_seed: int
    bootstrap: int
    noise_replicates: int
    parameters: list[RangeParameter]
    readouts: list[str]

    @property
    def problem(self) -> dict:
        """SALib's problem definition (uniform ranges)."""
        return {"num_vars": len(self.parameters), "names": [p.name for p in self.parameters],
                "bounds": [[p.low, p.high] for p in self.parameters]}

    def to_json(self) -> dict:
        return {"kind": "sensitivity", "method": self.method, "samples": self.samples, "levels": self.levels,
                "root_seed": self.root_seed, "bootstrap": self.bootstrap,
                "noise_replicates": self.noise_replicates, "readouts": self.readouts,
                "parameters": {p.name: {"low": p.low, "high": p.high, "paths": list(p.paths),
                                        "apply": p.apply, "source": p.source} for p in self.parameters}}


@dataclass
class SensitivityDesign(DesignSweep):
    spec: SensitivitySpec | None = None
    matrix: np.ndarray | None = None  # the design's parameter values, one row per design point


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(where: str, value: Any) -> float:
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise _error(where, f"must be a finite number, got {brief(value)}")
    return float(number)


def parse_sensitivity_section(raw: Any, seed: int) -> SensitivitySpec:
    """Validate a ``sensitivity:`` mapping (one line naming the key on a mistake)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"sensitivity: must be a mapping with parameters and readouts, got {brief(raw)}")
    unknown = [k for k in raw if k not in SENSITIVITY_KEYS]
    if unknown:
        raise _error(f"sensitivity.{unknown[0]}", f"unknown key; allowed keys: {', '.join(SENSITIVITY_KEYS)}")
    method = raw.get("method", "sobol")
    if method not in METHODS:
        raise _error("sensitivity.method", f"must be one of {', '.join(METHODS)}, got {brief(method)}")
    ints = {}
    for key, default, least in (("samples", 64, 2), ("levels", 4, 2), ("root_seed", seed, 0),
                                ("bootstrap", 1000, 10), ("noise_replicates", 8, 0)):
        value = raw.get(key, default)
        if not _is_int(value) or value < least:
            raise _error(f"sensitivity.{key}", f"must be an integer >= {least}, got {brief(value)}")
        ints[key] = int(value)
    if ints["levels"] > MAX_LEVELS:  # SALib lays out the grid's levels in arrays
        raise _error("sensitivity.levels", f"must be <= {MAX_LEVELS} (Morris grids use 4-10), got {ints['levels']:,}")
    if ints["noise_replicates"] == 1:
        raise _error("sensitivity.noise_replicates", "must be 0 (no noise floor) or >= 2 (a variance needs two)")
    params = raw.get("parameters")
    if not isinstance(params, dict) or len(params) < 2:
        raise _error("sensitivity.parameters", f"must map at least two parameters to ranges, got {brief(params)}")
    parameters = []
    for name, spec in params.items():
        where = f"sensitivity.parameters.{name}"
        if not isinstance(spec, dict):
            raise _error(where, f"must be a mapping with low and high, got {brief(spec)}")
        for key in spec:
            if key not in PARAMETER_KEYS:
                raise _error(f"{where}.{key}", f"unknown key; allowed keys: {', '.join(PARAMETER_KEYS)}")
        for key in ("low", "high"):
            if key not in spec:
                raise _error(f"{where}.{key}", "required key is missing")
        low, high = _number(f"{where}.low", spec["low"]), _number(f"{where}.high", spec["high"])
        if high <= low:
            raise _error(where, f"high must be > low, got low={low:g}, high={high:g}")
        apply = spec.get("apply", "set")
        if apply not in ("set", "multiply", "log_kill"):
            raise _error(f"{where}.apply", f"must be one of set, multiply, log_kill, got {brief(apply)}")
        paths = spec.get("paths", [name])
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise _error(f"{where}.paths", f"must be a non-empty list of config key paths, got {brief(paths)}")
        if apply != "set" and name in paths:
            raise _error(where, f"apply: {apply} makes the value a factor: give it a name of its own and "
                                f"paths: [{name}]")
        parameters.append(RangeParameter(str(name), low, high, tuple(paths), apply, spec.get("source")))
    # refused before SALib samples: the design's runs, and the bootstrap's arrays in the analysis
    k = len(parameters)
    n_runs = ints["samples"] * (k + 2 if method == "sobol" else k + 1) + ints["noise_replicates"]
    if n_runs > MAX_RUNS:
        raise _error("sensitivity.samples", f"{ints['samples']:,} {'base samples' if method == 'sobol' else 'trajectories'}"
                                            f" of {k} parameters make {n_runs:,} runs, more than one design may hold "
                                            f"({MAX_RUNS:,}); use fewer")
    need = BOOTSTRAP_BYTES * ints["samples"] * ints["bootstrap"]
    have = available_memory_bytes()
    if need > BOOTSTRAP_MEMORY_FRACTION * have:
        raise _error("sensitivity.bootstrap", f"{ints['bootstrap']:,} resamples of {ints['samples']:,} samples need "
                                              f"about {need / 2**30:.1f} GiB in the analysis, more than half of the "
                                              f"{have / 2**30:.1f} GiB available; use fewer resamples")
    readouts = raw.get("readouts", list(DERIVED_READOUTS))
    if not isinstance(readouts, list) or not readouts or not all(isinstance(r, str) for r in readouts):
        raise _error("sensitivity.readouts", f"must be a non-empty list of read-out names, got {brief(readouts)}")
    from engraft.trial import NEUTROPHIL_KEY

    known = set(DERIVED_READOUTS) | set(SUMMARY_READOUTS) | {NEUTROPHIL_KEY}
    for i, name in enumerate(readouts):
        if name not in known:
            raise _error(f"sensitivity.readouts[{i}]", f"unknown read-out {brief(name)}; allowed: "
                                                       f"{', '.join(sorted(known))}")
    return SensitivitySpec(method=method, samples=ints["samples"], levels=ints["levels"],
                           root_seed=ints["root_seed"], bootstrap=ints["bootstrap"],
                           noise_replicates=ints["noise_replicates"], parameters=parameters, readouts=readouts)


#: numeric keys of a run's summary.json (engraft.readouts.summarize) that can be read out
SUMMARY_READOUTS = ("final_factor_iu_dl", "threshold_day", "first_threshold_day", "mean_factor_last_year_iu_dl",
                    "final_hsc_chimerism", "final_hsc_vcn", "final_clones_alive", "final_shannon_diversity",
                    "final_top_clone_share", "final_joint_bleeds_per_year", "recovery_day",
                    # the clinical read-outs of the blood counts (engraft.readouts.CLINICAL_KEYS)
                    "platelet_engraftment_day", "days_anc_below_500", "days_platelets_below_20", "anc_nadir",
                    "platelet_nadir")


def design_matrix(spec: SensitivitySpec) -> np.ndarray:
    """The design's points (SALib): Saltelli's scheme for Sobol indices, or Morris trajectories."""
    if spec.method == "sobol":
        from SALib.sample import sobol

        return sobol.sample(spec.problem, spec.samples, calc_second_order=False, seed=spec.root_seed)
    from SALib.sample import morris

    return morris.sample(spec.problem, spec.samples, num_levels=spec.levels, seed=spec.root_seed)


def _values(spec: SensitivitySpec, row, base: dict) -> dict:
    values = {}
    for p, x in zip(spec.parameters, row, strict=True):
        for path in p.paths:
            if p.apply == "set":
                values[path] = float(x)
                continue
            node = base
            try:
                for part in split_key_path(path):
                    node = node[part]
            except (KeyError, IndexError, TypeError):
                raise _error(f"sensitivity.parameters.{p.name}.paths", f"{path} is not in the experiment "
                                                                       f"(apply: {p.apply} needs its value)") from None
            values[path] = float(node) * float(x) if p.apply == "multiply" else 1.0 - (1.0 - float(node)) ** float(x)
    return values


def parse_sensitivity(data: dict, *, check_runs: bool = True) -> SensitivityDesign:
    """An experiment mapping with a ``sensitivity:`` section -> the design as a sweep of explicit runs."""
    data = copy.deepcopy(data)
    raw = data.pop("sensitivity", None)
    if raw is None:
        raise ConfigError("sensitivity: the file has no sensitivity section (parameters and readouts)")
    if isinstance(raw, dict) and raw.get("overrides") is not None:
        if not isinstance(raw["overrides"], dict):
            raise _error("sensitivity.overrides", f"must be a mapping of key path -> value, got {brief(raw['overrides'])}")
        for path, value in raw["overrides"].items():
            try:
                set_path(data, split_key_path(str(path)), copy.deepcopy(value))
            except ConfigError as err:
                raise _error(f"sensitivity.overrides.{path}", str(err)) from None
    spec = parse_sensitivity_section(raw, int(data.get("seed", 0) or 0))
    validate(copy.deepcopy(data))
    matrix = design_matrix(spec)
    centre = np.array([(p.low + p.high) / 2 for p in spec.parameters])
    config_paths = tuple(dict.fromkeys(path for p in spec.parameters for path in p.paths))
    design = SensitivityDesign(base=data, parameters=[], overrides=dict(raw.get("overrides") or {}), replicates=1,
                               root_seed=spec.root_seed, scheduler=raw.get("scheduler"), workers=raw.get("workers"),
                               config_paths=config_paths, design=spec.to_json(), record_key=None,
                               spec=spec, matrix=matrix)
    n = len(matrix) + spec.noise_replicates
    seeds = run_seeds(spec.root_seed, n)
    runs = []
    width = max(5, len(str(len(matrix) - 1)))
    checked: set = set()
    for i, row in enumerate([*matrix, *[centre] * spec.noise_replicates]):
        labels = {p.name: float(x) for p, x in zip(spec.parameters, row, strict=True)}
        params = {**labels, **_values(spec, row, data)}
        noise = i >= len(matrix)
        key = tuple(row)
        if check_runs and key not in checked:
            checked.add(key)
            try:
                validate(design.config_with(params))
            except ConfigError as err:
                raise ConfigError(f"sensitivity.parameters ({', '.join(f'{k}={v:g}' for k, v in labels.items())}): "
                                  f"{err}; narrow the ranges") from None
        run_id = f"n{i - len(matrix):03d}" if noise else f"s{i:0{width}d}"
        runs.append(Run(index=i, run_id=run_id, params={**params, "noise_run": noise}, replicate=0, seed=seeds[i]))
    design.runs = runs
    return design


def load_sensitivity(path: str | os.PathLike, overrides: list[str] | tuple = ()) -> SensitivityDesign:
    """Read a sensitivity file (an experiment with ``sensitivity:``; ``base:`` files merged)."""
    path = Path(path)
    data = resolve_bases(load_yaml(path), path.resolve())
    for key in ("sweep", "cohort"):
        if data.get(key) is not None:
            raise _error(key, "a sensitivity file varies parameters by its sensitivity section only; "
                              f"remove {key}:")
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value)
    return parse_sensitivity(data)


# ----------------------------------------------------------------------------------
# read-outs and indices
# ----------------------------------------------------------------------------------
def run_readouts(run_dir: Path, names: list[str]) -> tuple[dict, dict, set]:
    """A run's read-outs by name, which source each derived one used, and the engraftment-day read-outs
    whose count never fell below its level in this run (:data:`ENGRAFTMENT_BELOW_KEYS`)."""
    import pandas as pd

    from engraft.trial import NEUTROPHIL_KEY

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    out, used, never_below = {}, {}, set()
    for name in names:
        if name == "year1_mean_factor_iu_dl":
            ts = pd.read_csv(run_dir / "timeseries.csv", usecols=["day", "factor_iu_dl"])
            first_year = ts[(ts["day"] > 0) & (ts["day"] <= 365)]
            out[name] = float(first_year["factor_iu_dl"].mean()) if len(first_year) else float("nan")
        elif name == "engraftment_day":
            key = NEUTROPHIL_KEY if NEUTROPHIL_KEY in summary else "recovery_day"
            value = summary.get(key)
            out[name] = float(value) if value is not None else float(summary.get("final_day", float("nan")))
            used[name] = key
        elif name == "largest_clone_share":
            out[name] = _float(summary.get("final_top_clone_share"))
        else:
            out[name] = _float(summary.get(name))
        key = used.get(name, name)  # the summary key read (engraftment_day: the neutrophil one, or recovery_day)
        if key in DAYS_BELOW_KEY and fell_below(summary, key) is False:
            never_below.add(name)
    return out, used, never_below


def _float(value) -> float:
    return float(value) if value is not None else float("nan")


def analyze_sensitivity(out: str | os.PathLike) -> dict:
    """Indices of a finished sensitivity directory; writes ``sensitivity.json`` and ``sensitivity_report.md``."""
    from engraft.sweep.aggregate import SweepDirError, read_spec

    out = Path(out)
    spec_json = read_spec(out)
    design = spec_json.get("design") or {}
    if design.get("kind") != "sensitivity":
        raise SweepDirError(f"{out}: not a sensitivity directory (its sweep.json has no sensitivity design)")
    names = design["readouts"]
    params = list(design["parameters"])
    problem = {"num_vars": len(params), "names": params,
               "bounds": [[design["parameters"][p]["low"], design["parameters"][p]["high"]] for p in params]}
    rows, noise_rows, used = [], [], {}
    never_below = dict.fromkeys(names, 0)  # design runs (not noise runs) whose count never fell below its level
    for run in spec_json["runs"]:
        path = out / "runs" / run["run_id"]
        if not (path / "summary.json").is_file():
            raise SweepDirError(f"{out}: run {run['run_id']} is not done; rerun engraft sensitivity to finish it")
        values, sources, never = run_readouts(path, names)
        used.update(sources)
        if not run["params"].get("noise_run"):
            for name in never:
                never_below[name] += 1
        (noise_rows if run["params"].get("noise_run") else rows).append(
            ([run["params"][p] for p in params], [values[n] for n in names]))
    x = np.array([r[0] for r in rows], dtype=np.float64)
    y = np.array([r[1] for r in rows], dtype=np.float64)
    result: dict = {"method": design["method"], "runs": len(spec_json["runs"]), "design_points": int(len(rows)),
                    "parameters": params, "readout_sources": used, "readouts": {}}
    for j, name in enumerate(names):
        yj = y[:, j]
        entry: dict = {}
        if used.get(name, name) in DAYS_BELOW_KEY:
            entry["runs_never_below"] = never_below[name]
        if not np.isfinite(yj).all():
            entry["note"] = f"{int((~np.isfinite(yj)).sum())} runs have no value; indices not computed"
            result["readouts"][name] = entry
            continue
        variance = float(yj.var(ddof=1))
        entry["variance"] = variance
        if noise_rows:
            yn = np.array([r[1][j] for r in noise_rows], dtype=np.float64)
            noise = float(np.var(yn[np.isfinite(yn)], ddof=1)) if np.isfinite(yn).sum() > 1 else float("nan")
            entry["noise_variance"] = noise
            entry["noise_floor"] = noise / variance if variance > 0 else None
        if variance == 0:
            entry["note"] = "the read-out does not vary over the design"
            result["readouts"][name] = entry
            continue
        seed = int(design["root_seed"])
        if design["method"] == "sobol":
            from SALib.analyze import sobol

            si = sobol.analyze(problem, yj, calc_second_order=False, num_resamples=design["bootstrap"],
                               conf_level=0.95, seed=seed)
            entry["indices"] = [{"parameter": p, "S1": float(si["S1"][i]), "S1_conf": float(si["S1_conf"][i]),
                                 "ST": float(si["ST"][i]), "ST_conf": float(si["ST_conf"][i])}
                                for i, p in enumerate(params)]
        else:
            from SALib.analyze import morris

            si = morris.analyze(problem, x, yj, num_resamples=design["bootstrap"], conf_level=0.95,
                                num_levels=design["levels"], seed=seed)
            sd = math.sqrt(variance)
            entry["indices"] = [{"parameter": p, "mu_star": float(si["mu_star"][i]),
                                 "mu_star_conf": float(si["mu_star_conf"][i]), "sigma": float(si["sigma"][i]),
                                 "mu_star_scaled": float(si["mu_star"][i]) / sd}
                                for i, p in enumerate(params)]
        key = "ST" if design["method"] == "sobol" else "mu_star"
        entry["ranking"] = [e["parameter"] for e in sorted(entry["indices"], key=lambda e: -e[key])]
        floor = entry.get("noise_floor")
        if floor is not None and math.isfinite(floor):
            if design["method"] == "sobol":
                entry["below_noise_floor"] = [e["parameter"] for e in entry["indices"] if e["S1"] < floor]
            else:
                # an elementary effect is (y2 - y1) / delta with delta = p / (2 (p - 1)) of the normalised
                # range (SALib); from seed noise alone y2 - y1 ~ N(0, 2 s^2), so E|EE| = 2 s / (sqrt(pi) delta)
                delta = design["levels"] / (2 * (design["levels"] - 1))
                entry["mu_star_noise_floor"] = 2 * math.sqrt(entry["noise_variance"]) / (math.sqrt(math.pi) * delta)
                entry["below_noise_floor"] = [e["parameter"] for e in entry["indices"]
                                              if e["mu_star"] < entry["mu_star_noise_floor"]]
        result["readouts"][name] = entry
    atomic_write_text(out / RESULT_FILE, to_json(result))
    atomic_write_text(out / REPORT_FILE, report_markdown(result, design))
    return result


def report_markdown(result: dict, design: dict) -> str:
    sobol = result["method"] == "sobol"
    lines = [f"# Global sensitivity ({'Sobol indices, Saltelli sampling' if sobol else 'Morris screening'})", "",
             f"{result['design_points']} design points over {len(result['parameters'])} parameters "
             f"(uniform over their ranges); 95 % bootstrap intervals ({design['bootstrap']} resamples).", "",
             "| parameter | low | high | sets | source |", "|---|---|---|---|---|"]
    for name, p in design["parameters"].items():
        sets = ", ".join(p["paths"]) + ("" if p["apply"] == "set" else f" ({p['apply']})")
        lines.append(f"| {name} | {p['low']:g} | {p['high']:g} | {sets} | {p.get('source') or 'not given'} |")
    for name, entry in result["readouts"].items():
        lines += ["", f"## {name}", ""]
        if name in result.get("readout_sources", {}):
            lines.append(f"Read from the runs' `{result['readout_sources'][name]}`.")
            lines.append("")
        if name in COUNT_KINETICS_READOUTS:
            lines += [COUNT_KINETICS_CAUTION, ""]
        if entry.get("runs_never_below"):
            below = ENGRAFTMENT_BELOW_KEYS[name]
            lines += [f"Caution: in {entry['runs_never_below']} of {result['design_points']} design runs the count "
                      f"never fell below its level, and their engraftment day is the summary's convention, day 0, "
                      f"not a recovery. The indices then mix whether a run falls below the level at all with when "
                      f"it recovers; `{below}` is defined for every run.", ""]
        if "indices" not in entry:
            lines.append(entry.get("note", "not computed"))
            continue
        floor = entry.get("noise_floor")
        if floor is not None and sobol:
            lines.append(f"Noise floor: seed noise is {100 * floor:.1f} % of this read-out's variance over the "
                         "design (replicates at the centre of the ranges). First-order indices below it are not "
                         "read as effects; every total index includes it (runs with new seeds differ by noise "
                         "alone).")
        elif floor is not None:
            lines.append(f"Noise floor: seed noise is {100 * floor:.1f} % of this read-out's variance over the "
                         f"design; from noise alone mu* would be {entry['mu_star_noise_floor']:.4g} "
                         "(2 s / (sqrt(pi) delta)): mu* below it is not read as an effect.")
        else:
            lines.append("No replicates at the centre: the noise floor is not estimated.")
        lines.append("")
        if sobol:
            lines += ["| parameter | S1 (95 % CI) | ST (95 % CI) |", "|---|---|---|"]
            for e in sorted(entry["indices"], key=lambda e: -e["ST"]):
                flag = " (below noise floor)" if e["parameter"] in entry.get("below_noise_floor", []) else ""
                lines.append(f"| {e['parameter']} | {e['S1']:.3f} +/- {e['S1_conf']:.3f}{flag} | "
                             f"{e['ST']:.3f} +/- {e['ST_conf']:.3f} |")
        else:
            lines += ["| parameter | mu* (95 % CI) | mu* / SD | sigma |", "|---|---|---|---|"]
            for e in sorted(entry["indices"], key=lambda e: -e["mu_star"]):
                flag = " (below noise floor)" if e["parameter"] in entry.get("below_noise_floor", []) else ""
                lines.append(f"| {e['parameter']} | {e['mu_star']:.4g} +/- {e['mu_star_conf']:.2g} | "
                             f"{e['mu_star_scaled']:.3f}{flag} | {e['sigma']:.4g} |")
    lines += ["", "![indices](figures/sensitivity_indices.png)", ""]
    return "\n".join(lines)


def plot_sensitivity(out: str | os.PathLike, formats=("png",)) -> list[Path]:
    """Bar chart of the indices per read-out, with 95 % intervals and the noise floor."""
    import matplotlib.pyplot as plt

    from engraft.plots.style import figure_style, save_figure, series_colour

    out = Path(out)
    result = json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))
    entries = [(n, e) for n, e in result["readouts"].items() if "indices" in e]
    sobol = result["method"] == "sobol"
    with figure_style():
        fig, axes = plt.subplots(1, max(1, len(entries)), figsize=(4.4 * max(1, len(entries)), 3.4), squeeze=False)
        for ax, (name, entry) in zip(axes[0], entries, strict=False):
            params = [e["parameter"] for e in entry["indices"]]
            pos = np.arange(len(params))
            if sobol:
                for k, (key, label) in enumerate((("S1", "first order"), ("ST", "total"))):
                    ax.bar(pos + (k - 0.5) * 0.38, [e[key] for e in entry["indices"]], width=0.38,
                           yerr=[e[f"{key}_conf"] for e in entry["indices"]], color=series_colour(k),
                           label=label, capsize=2)
                ax.set_ylabel("Sobol index")
            else:
                ax.bar(pos, [e["mu_star_scaled"] for e in entry["indices"]],
                       yerr=[e["mu_star_conf"] / math.sqrt(entry["variance"]) for e in entry["indices"]],
                       color=series_colour(0), capsize=2, label="mu* / SD")
                ax.set_ylabel("Morris mu* / SD of the read-out")
            floor = entry.get("noise_floor") if sobol else (
                entry["mu_star_noise_floor"] / math.sqrt(entry["variance"]) if "mu_star_noise_floor" in entry
                else None)
            if floor is not None and math.isfinite(floor):
                ax.axhline(floor, color="#888888", ls="--", lw=1, label="noise floor")
            ax.set_xticks(pos, params, rotation=30, ha="right", fontsize=7)
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=7, frameon=False)
        paths = save_figure(fig, out / "figures", "sensitivity_indices", formats)
        plt.close(fig)
    return paths


def run_sensitivity(design: SensitivityDesign | str | os.PathLike, out: str | os.PathLike, *,
                    workers: int | None = None, scheduler: str | None = None, dask_local: bool = False,
                    progress=None, figures: bool = True):
    """Run a sensitivity design on the sweep runner (resumable), then compute and plot the indices."""
    from engraft.sweep.runner import run_sweep

    if not isinstance(design, SensitivityDesign):
        design = load_sensitivity(design)
    outcome = run_sweep(design, out, workers=workers, scheduler=scheduler, dask_local=dask_local,
                        progress=progress)
    if not outcome.failed:
        analyze_sensitivity(outcome.out)
        if figures:
            plot_sensitivity(outcome.out)
    return outcome
