"""Virtual patient cohorts: a ``cohort:`` section, per-patient draws, design arms, runs.

A cohort is a sweep whose per-run parameters are drawn: each virtual patient
gets its own body weight, HSC pool, product and clearance from
distributions, and each design arm (the ``sweep:`` section's parameter
combinations, e.g. three doses or two conditioning regimens) treats every
patient::

    cohort:
      patients: 200                # virtual patients per arm
      root_seed: 20251201          # default: the experiment's seed
      sampling: random             # random | lhs | sobol
      parameters:                  # key path (--set syntax) -> distribution
        patient.weight_kg: {distribution: lognormal, median: 70, cv: 0.2, low: 45, high: 150}
        marrow.hsc_count: {distribution: loguniform, low: 5.0e4, high: 2.0e5}
        infusions[0].transduction: {distribution: beta, a: 14.4, b: 9.6}
        busulfan_exposure:          # a named draw applied to several key paths
          distribution: lognormal
          median: 1.0
          gsd: 1.14
          apply: log_kill           # kill = 1 - (1 - kill_of_the_arm) ** exposure
          paths: [conditioning.myeloablation.HSC, conditioning.myeloablation.MPP]
        covariates:                 # rows of a CSV of real patients
          distribution: empirical
          file: patients.csv
          columns: {patient.weight_kg: weight_kg}
          replace: true
      correlation:                  # Gaussian copula of the named parameters
        parameters: [infusions[0].transduction, infusions[0].vcn.mean]
        matrix: [[1.0, 0.5], [0.5, 1.0]]
      noise: {patients: 10, replicates: 3}   # the first 10 patients (all, if fewer) run 3 times (new seeds)
      arm_names: [myeloablative, reduced intensity]
      readouts: {days: [180, 365, 730], thresholds: [15]}

``apply`` is ``set`` (default: the draw is the value), ``multiply`` (the draw
multiplies the arm's value: a per-patient factor around each arm's nominal
value) or ``log_kill`` (a conditioning exposure ratio: with first-order
log-linear cell kill, a host cell's survival ``1 - kill`` is raised to the
power of the exposure relative to the nominal).

Seeds and draws. Patient ``i``'s draws come from
``SeedSequence(root_seed, spawn_key=(i, 0))`` and its simulation seed of
replicate ``k`` from ``spawn_key=(i, 1, k)``: a patient depends only on the
root seed and its index, so adding patients leaves the others unchanged,
and patient ``i`` is the same person (same draws, same seed) in every arm,
so arms are compared on paired patients. ``sampling: sobol`` (scrambled,
seeded by the root seed) keeps that prefix property (use a power of 2 of
patients for its balance); ``lhs`` does not: a Latin hypercube is stratified
over the whole cohort, so its points depend on the number of patients.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engraft.cohort.distributions import (
    Distribution,
    EmpiricalTable,
    parse_distribution,
    parse_empirical,
)
from engraft.config.load import (
    ConfigError,
    check_memory,
    load_yaml,
    parse_override,
    resolve_bases,
    set_path,
    split_key_path,
    validate,
)
from engraft.errors import brief
from engraft.sweep.design import DesignSweep
from engraft.sweep.spec import MAX_RUNS, Parameter, Run, apply_overrides, parse_sweep

#: keys of the ``cohort:`` section
COHORT_KEYS = ("patients", "root_seed", "sampling", "parameters", "correlation", "noise", "arm_names",
               "readouts", "overrides", "workers", "scheduler")
SAMPLING = ("random", "lhs", "sobol")
APPLY = ("set", "multiply", "log_kill")
#: the key of a run's config that records its arm, patient and draws (not read by the simulation)
RECORD_KEY = "virtual_patient"
#: days of the default responder table (kept to those within follow-up)
DEFAULT_DAYS = (90, 180, 365, 730, 1095, 1460, 1825)
#: spawn key of the permutation of an empirical table's rows drawn without replacement
_PERMUTATION_KEY = 1 << 40


@dataclass(frozen=True)
class CohortParameter:
    """One drawn quantity: its name, distribution (or table), the key paths it sets and how."""

    name: str
    paths: tuple[str, ...]
    apply: str = "set"
    distribution: Distribution | None = None
    table: EmpiricalTable | None = None
    source: str | None = None


@dataclass
class CohortSpec:
    """The parsed ``cohort:`` section (what is drawn, for how many patients, and what is read out)."""

    patients: int
    root_seed: int
    sampling: str
    parameters: list[CohortParameter]
    correlated: tuple[str, ...] = ()
    correlation: np.ndarray | None = None
    noise_patients: int = 0
    noise_replicates: int = 1
    arm_names: list[str] | None = None
    days: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()
    days_after_follow_up: tuple[float, ...] = ()

    def to_json(self) -> dict:
        """What ``sweep.json`` records of the cohort (a changed cohort is refused on resume)."""
        return {
            "kind": "cohort",
            "patients": self.patients,
            "root_seed": self.root_seed,
            "sampling": self.sampling,
            "parameters": {
                p.name: {"paths": list(p.paths), "apply": p.apply, "source": p.source,
                         "distribution": (p.distribution.describe() if p.distribution else
                                          f"empirical({p.table.file}, replace={p.table.replace})")}
                for p in self.parameters},
            "correlation": ({"parameters": list(self.correlated), "matrix": self.correlation.tolist()}
                            if self.correlation is not None else None),
            "noise": {"patients": self.noise_patients, "replicates": self.noise_replicates},
            "arm_names": self.arm_names,
            "readouts": {"days": list(self.days), "thresholds": list(self.thresholds),
                         "days_after_follow_up": list(self.days_after_follow_up)},
        }


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _get_path(data: Any, parts: list) -> Any:
    for part in parts:
        data = data[part]
    return data


def _seed63(seq: np.random.SeedSequence) -> int:
    hi, lo = seq.generate_state(2, dtype=np.uint32)
    return (int(hi) << 32 | int(lo)) & (2**63 - 1)


def patient_seed(root_seed: int, patient: int, replicate: int = 0) -> int:
    """The simulation seed of patient ``patient``, replicate ``replicate`` (63 bits)."""
    return _seed63(np.random.SeedSequence(root_seed, spawn_key=(patient, 1, replicate)))


# ----------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------
def _parse_parameter(name: str, spec: Any, base_dir: Path) -> CohortParameter:
    where = f"cohort.parameters.{name}"
    if not isinstance(spec, dict):
        raise _error(where, f"must be a mapping with a distribution, got {brief(spec)}")
    if "distribution" not in spec:
        raise _error(f"{where}.distribution", "required key is missing")
    apply = spec.get("apply", "set")
    if apply not in APPLY:
        raise _error(f"{where}.apply", f"must be one of {', '.join(APPLY)}, got {brief(apply)}")
    source = spec.get("source")
    if source is not None and not isinstance(source, str):
        raise _error(f"{where}.source", f"must be text (the citation), got {brief(source)}")
    if spec["distribution"] == "empirical":
        if "paths" in spec or apply != "set":
            raise _error(where, "an empirical table sets the key paths of its columns: no paths or apply")
        table = parse_empirical(where, {k: v for k, v in spec.items() if k != "source"}, base_dir)
        return CohortParameter(name=name, paths=tuple(k for k, _ in table.columns), table=table,
                               source=source)
    paths = spec.get("paths", [name])
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise _error(f"{where}.paths", f"must be a non-empty list of config key paths, got {brief(paths)}")
    if apply != "set" and name in paths:
        raise _error(where, f"apply: {apply} makes the draw a factor, not the value of {name}: name the "
                            f"draw (e.g. {name.split('.')[-1]}_factor) and give paths: [{name}]")
    dist = parse_distribution(where, spec)
    if apply != "set" and not dist.continuous:
        raise _error(f"{where}.apply", f"{apply} needs a continuous distribution, not {dist.kind}")
    if apply == "log_kill" and max(dist.low, float(dist.frozen.support()[0])) < 0:
        raise _error(where, "a log_kill exposure ratio must be >= 0: give low: 0 (or a positive distribution)")
    return CohortParameter(name=name, paths=tuple(paths), apply=apply, distribution=dist, source=source)


def _parse_correlation(spec: Any, parameters: list[CohortParameter]) -> tuple[tuple[str, ...], np.ndarray]:
    where = "cohort.correlation"
    if not isinstance(spec, dict) or set(spec) - {"parameters", "matrix"}:
        raise _error(where, f"must be a mapping with parameters and matrix, got {brief(spec)}")
    names = spec.get("parameters")
    if not isinstance(names, list) or len(names) < 2:
        raise _error(f"{where}.parameters", f"must list at least two cohort parameters, got {brief(names)}")
    by_name = {p.name: p for p in parameters}
    for i, name in enumerate(names):
        if name not in by_name:
            raise _error(f"{where}.parameters[{i}]", f"{brief(name)} is not a cohort parameter "
                                                     f"({', '.join(by_name)})")
        if by_name[name].table is not None:
            raise _error(f"{where}.parameters[{i}]", f"{brief(name)} is an empirical table: its columns keep "
                                                     "the correlation of the real patients")
    if len(set(names)) != len(names):
        raise _error(f"{where}.parameters", f"names a parameter twice: {brief(names)}")
    matrix = spec.get("matrix")
    k = len(names)
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape != (k, k) or not np.isfinite(m).all():
        raise _error(f"{where}.matrix", f"must be a {k} x {k} matrix of numbers, got {brief(matrix)}")
    if not np.allclose(np.diag(m), 1.0):
        raise _error(f"{where}.matrix", f"the diagonal must be 1 (a correlation matrix), got {np.diag(m).tolist()}")
    if not np.allclose(m, m.T):
        raise _error(f"{where}.matrix", "must be symmetric")
    if (np.abs(m) > 1).any():
        raise _error(f"{where}.matrix", "correlations must be in [-1, 1]")
    try:
        np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(m).min())
        raise _error(f"{where}.matrix", f"is not positive definite (smallest eigenvalue {smallest:.3g}); "
                                        "these correlations cannot hold together") from None
    return tuple(names), m


def parse_cohort_section(spec: Any, seed: int, duration_days: float, threshold: float,
                         base_dir: Path) -> CohortSpec:
    """Validate a ``cohort:`` mapping into a :class:`CohortSpec` (draws come later)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"cohort: must be a mapping with patients and parameters, got {brief(spec)}")
    unknown = [k for k in spec if k not in COHORT_KEYS]
    if unknown:
        raise _error(f"cohort.{unknown[0]}", f"unknown key; allowed keys: {', '.join(COHORT_KEYS)}")
    patients = spec.get("patients")
    if not _is_int(patients) or patients < 1:
        raise _error("cohort.patients", f"must be an integer >= 1 (virtual patients per arm), got {brief(patients)}")
    root_seed = spec.get("root_seed", seed)
    if not _is_int(root_seed) or root_seed < 0:
        raise _error("cohort.root_seed", f"must be an integer >= 0, got {brief(root_seed)}")
    sampling = spec.get("sampling", "random")
    if sampling not in SAMPLING:
        raise _error("cohort.sampling", f"must be one of {', '.join(SAMPLING)}, got {brief(sampling)}")
    raw = spec.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise _error("cohort.parameters", f"must map at least one key path to a distribution, got {brief(raw)}")
    parameters = [_parse_parameter(str(name), pspec, base_dir) for name, pspec in raw.items()]
    seen: dict[str, str] = {}
    for p in parameters:
        for path in p.paths:
            if path in seen:
                raise _error(f"cohort.parameters.{p.name}", f"sets {path}, which {seen[path]} already sets")
            seen[path] = f"cohort.parameters.{p.name}"
        if p.table is not None and not p.table.replace and len(p.table.rows) < patients:
            raise _error(f"cohort.parameters.{p.name}.replace",
                         f"false draws each of the {len(p.table.rows)} rows at most once, fewer than "
                         f"cohort.patients={patients}; use replace: true or fewer patients")
    correlated, correlation = ((), None)
    if spec.get("correlation") is not None:
        correlated, correlation = _parse_correlation(spec["correlation"], parameters)
    noise = spec.get("noise") or {}
    if not isinstance(noise, dict) or set(noise) - {"patients", "replicates"}:
        raise _error("cohort.noise", f"must be a mapping with patients and replicates, got {brief(noise)}")
    noise_patients = noise.get("patients", 0)
    noise_replicates = noise.get("replicates", 1)
    if not _is_int(noise_patients) or noise_patients < 0:
        raise _error("cohort.noise.patients", f"must be an integer >= 0, got {brief(noise_patients)}")
    noise_patients = min(noise_patients, patients)  # the first ones; all of them in a smaller cohort
    if not _is_int(noise_replicates) or noise_replicates < 1 or (noise_patients and noise_replicates < 2):
        raise _error("cohort.noise.replicates", f"must be an integer >= 2 (runs per patient, new seeds), "
                                                f"got {brief(noise_replicates)}")
    readouts = spec.get("readouts") or {}
    if not isinstance(readouts, dict) or set(readouts) - {"days", "thresholds"}:
        raise _error("cohort.readouts", f"must be a mapping with days and thresholds, got {brief(readouts)}")
    days = readouts.get("days", [d for d in DEFAULT_DAYS if d <= duration_days])
    if not isinstance(days, list) or not days:
        raise _error("cohort.readouts.days", f"must be a non-empty list of days, got {brief(days)}")
    days_all = tuple(_positive(f"cohort.readouts.days[{i}]", d) for i, d in enumerate(days))
    # days after the end of follow-up (a shortened run, --set time.duration_days=...) are left
    # out of the tables, and the report says which
    days_f = tuple(d for d in days_all if d <= duration_days)
    if not days_f:
        raise _error("cohort.readouts.days", f"every day is after the end of follow-up "
                                             f"(time.duration_days={duration_days:g}), got {brief(days)}")
    thresholds = readouts.get("thresholds", [threshold])
    if not isinstance(thresholds, list) or not thresholds:
        raise _error("cohort.readouts.thresholds", f"must be a non-empty list of IU/dL, got {brief(thresholds)}")
    thr = tuple(_positive(f"cohort.readouts.thresholds[{i}]", t) for i, t in enumerate(thresholds))
    arm_names = spec.get("arm_names")
    if arm_names is not None and (not isinstance(arm_names, list)
                                  or not all(isinstance(a, str) and a for a in arm_names)):
        raise _error("cohort.arm_names", f"must be a list of names, got {brief(arm_names)}")
    return CohortSpec(patients=int(patients), root_seed=int(root_seed), sampling=sampling,
                      parameters=parameters, correlated=correlated, correlation=correlation,
                      noise_patients=int(noise_patients), noise_replicates=int(noise_replicates),
                      arm_names=arm_names, days=days_f, thresholds=thr,
                      days_after_follow_up=tuple(d for d in days_all if d > duration_days))


def _positive(where: str, value: Any) -> float:
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
            or number <= 0:
        raise _error(where, f"must be a number > 0, got {brief(value)}")
    return float(number)


# ----------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------
def _dimensions(spec: CohortSpec) -> list[str]:
    """The uniform coordinates of one patient: one per parameter (a table's row draw is one)."""
    return [p.name for p in spec.parameters]


def uniforms(spec: CohortSpec, n: int | None = None) -> np.ndarray:
    """The (n, d) uniform numbers of the first ``n`` patients, before the copula.

    ``random``: patient ``i`` draws its ``d`` numbers from
    ``SeedSequence(root_seed, spawn_key=(i, 0))``; ``sobol``: the first ``n``
    points of a scrambled Sobol sequence seeded by the root seed; ``lhs``: a
    Latin hypercube of ``n`` points seeded by the root seed.
    """
    from scipy.stats import qmc

    n = spec.patients if n is None else n
    d = len(_dimensions(spec))
    if spec.sampling == "random":
        return np.array([np.random.default_rng(np.random.SeedSequence(spec.root_seed, spawn_key=(i, 0)))
                         .random(d) for i in range(n)]).reshape(n, d)
    if spec.sampling == "sobol":
        import warnings

        with warnings.catch_warnings():  # balance needs a power of 2; the prefix property does not
            warnings.simplefilter("ignore", UserWarning)
            return qmc.Sobol(d, scramble=True, seed=spec.root_seed).random(n)
    return qmc.LatinHypercube(d, seed=spec.root_seed).random(n)


def draw(spec: CohortSpec, n: int | None = None) -> list[dict]:
    """The draws of the first ``n`` patients: per patient, parameter name -> value.

    An empirical table's draw is the row index (``<name>`` -> row) with its
    columns by key path. The copula correlates the normal scores of the
    named parameters: ``z = L Phi^-1(u)`` with ``L L^T`` the correlation
    matrix, then ``u = Phi(z)`` goes through each marginal's quantile function.
    """
    from scipy.stats import norm

    n = spec.patients if n is None else n
    u = uniforms(spec, n)
    names = _dimensions(spec)
    if spec.correlation is not None and n:
        cols = [names.index(c) for c in spec.correlated]
        z = norm.ppf(np.clip(u[:, cols], 1e-15, 1 - 1e-15))
        u[:, cols] = norm.cdf(z @ np.linalg.cholesky(spec.correlation).T)
    patients: list[dict] = [{} for _ in range(n)]
    for j, p in enumerate(spec.parameters):
        if p.table is not None:
            rows = len(p.table.rows)
            if p.table.replace:
                index = np.minimum((u[:, j] * rows).astype(np.int64), rows - 1)
            else:  # one fixed permutation of the rows, patient i takes its i-th entry
                perm = np.random.default_rng(np.random.SeedSequence(
                    spec.root_seed, spawn_key=(_PERMUTATION_KEY, j))).permutation(rows)
                index = perm[:n]
            for i in range(n):
                patients[i][p.name] = int(index[i])
                for (path, _), value in zip(p.table.columns, p.table.rows[int(index[i])], strict=True):
                    patients[i][path] = value
        else:
            values = p.distribution.ppf(u[:, j])
            for i in range(n):
                value = values[i]
                patients[i][p.name] = float(value) if p.distribution.continuous else _plain(value)
    return patients


def _plain(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def patient_values(spec: CohortSpec, draws: dict, arm_config: dict) -> dict:
    """Key path -> the value one patient's config gets in one arm (after ``apply``)."""
    values = {}
    for p in spec.parameters:
        if p.table is not None:
            for path, _ in p.table.columns:
                values[path] = draws[path]
            continue
        x = draws[p.name]
        for path in p.paths:
            if p.apply == "set":
                values[path] = x
                continue
            try:
                base = _get_path(arm_config, split_key_path(path))
            except (KeyError, IndexError, TypeError):
                raise _error(f"cohort.parameters.{p.name}.paths", f"{path} is not in the experiment "
                                                                  f"(apply: {p.apply} needs its value)") from None
            if isinstance(base, bool) or not isinstance(base, (int, float)):
                raise _error(f"cohort.parameters.{p.name}.paths", f"{path} is {brief(base)}, not a number "
                                                                  f"(apply: {p.apply})")
            if p.apply == "multiply":
                values[path] = float(base) * x
            else:  # log_kill: survival (1 - kill) scales in the log with exposure
                values[path] = 1.0 - (1.0 - float(base)) ** x
    return values


# ----------------------------------------------------------------------------------
# the cohort as a sweep
# ----------------------------------------------------------------------------------
@dataclass
class Cohort(DesignSweep):
    """A cohort ready to run: every (arm, patient, replicate) as a run of the sweep machinery."""

    cohort: CohortSpec | None = None
    arms: list[dict] = field(default_factory=list)
    arm_labels: list[str] = field(default_factory=list)
    draws: list[dict] = field(default_factory=list)


def _arm_label(params: dict) -> str:
    return ", ".join(f"{path.split('.')[-1] if len(params) > 1 else path}={value:g}"
                     if isinstance(value, float) else f"{path}={value}" for path, value in params.items())


def parse_cohort(data: dict, base_dir: str | os.PathLike = ".", *, check_runs: bool = True) -> Cohort:
    """Validate an experiment mapping with a ``cohort:`` (and optional ``sweep:``) section.

    Parameters
    ----------
    data : the experiment mapping, bases merged.
    base_dir : the folder an empirical table's relative ``file`` is read from.
    check_runs : validate every patient's experiment in every arm now, so a
        drawn value out of a field's range fails before anything runs.

    Raises
    ------
    ConfigError
        One line naming the key, e.g. ``cohort.correlation.matrix: is not positive definite ...``.
    """
    data = copy.deepcopy(data)
    raw = data.pop("cohort", None)
    if raw is None:
        raise ConfigError("cohort: the file has no cohort section (patients and parameters)")
    spec_overrides = raw.get("overrides") if isinstance(raw, dict) else None
    if spec_overrides is not None:
        apply_overrides(data, spec_overrides, "cohort.overrides")
    sweep_section = data.get("sweep")
    if sweep_section is not None:
        if isinstance(sweep_section, dict) and "replicates" in sweep_section:
            raise _error("sweep.replicates", "a cohort treats each patient once per arm; use "
                                             "cohort.noise for repeated runs of the same patient")
        arms_sweep = parse_sweep(data, check_runs=check_runs)
        base, parameters = arms_sweep.base, arms_sweep.parameters
        overrides, arms = arms_sweep.overrides, [r.params for r in arms_sweep.runs]
        scheduler, workers = arms_sweep.scheduler, arms_sweep.workers
    else:
        base, parameters, overrides, arms = data, [], {}, [{}]
        scheduler = workers = None
    if isinstance(raw, dict):
        scheduler = raw.get("scheduler", scheduler)
        workers = raw.get("workers", workers)
        if workers is not None and (not _is_int(workers) or workers < 1):
            raise _error("cohort.workers", f"must be an integer >= 1, got {brief(workers)}")
        if scheduler is not None and not isinstance(scheduler, str):
            raise _error("cohort.scheduler", f"must be a Dask scheduler address, got {brief(scheduler)}")
        raw = {k: v for k, v in raw.items() if k not in ("overrides", "workers", "scheduler")}
    try:
        exp0 = validate(copy.deepcopy(base))
    except ConfigError as err:
        raise ConfigError(str(err)) from None
    spec = parse_cohort_section(raw, int(base.get("seed", 0) or 0), exp0.time.duration_days,
                                exp0.readouts.threshold_iu_dl, Path(base_dir))
    drawn_paths = {path: p for p in spec.parameters for path in p.paths}
    for param in parameters:
        p = drawn_paths.get(param.path)
        if p is not None and p.apply == "set":
            raise _error(f"cohort.parameters.{p.name}", f"{param.path} is also a design arm "
                                                        f"(sweep.parameters): draw a factor around the arm's "
                                                        f"value with apply: multiply instead")
    if spec.arm_names is not None and len(spec.arm_names) != len(arms):
        raise _error("cohort.arm_names", f"names {len(spec.arm_names)} arms, the sweep section has {len(arms)}")
    labels = spec.arm_names or ([_arm_label(a) for a in arms] if parameters else ["cohort"])
    for path in drawn_paths:  # a structurally impossible path fails here, naming the parameter
        try:
            set_path(copy.deepcopy(base), split_key_path(path), 0)
        except ConfigError as err:
            raise _error(f"cohort.parameters.{drawn_paths[path].name}", f"{path}: {err}") from None

    # refused before anything is drawn: the draws and the per-run checks grow with the runs
    n_runs = len(arms) * (spec.patients + spec.noise_patients * (spec.noise_replicates - 1))
    if n_runs > MAX_RUNS:
        raise _error("cohort.patients", f"{spec.patients:,} patients x {len(arms)} arm(s), with the noise "
                                        f"repeats, make {n_runs:,} runs, more than one cohort may hold "
                                        f"({MAX_RUNS:,}); use fewer patients")
    draws = draw(spec)
    config_paths = tuple(dict.fromkeys([p.path for p in parameters] + list(drawn_paths)))
    cohort = Cohort(base=base, parameters=parameters, overrides=overrides, replicates=1,
                    root_seed=spec.root_seed, scheduler=scheduler, workers=workers,
                    config_paths=config_paths, design=spec.to_json(), record_key=RECORD_KEY,
                    cohort=spec, arms=arms, arm_labels=labels, draws=draws)
    runs: list[Run] = []
    width = max(5, len(str(spec.patients - 1)))
    for a, arm in enumerate(arms):
        arm_config = copy.deepcopy(base)
        for path, value in arm.items():
            set_path(arm_config, split_key_path(path), copy.deepcopy(value))
        for i, d in enumerate(draws):
            values = patient_values(spec, d, arm_config)
            labels_i = {"arm": a, "arm_name": labels[a], "patient": i}
            labels_i.update({p.name: d[p.name] for p in spec.parameters if p.name not in values})
            params = {**labels_i, **arm, **values}
            if check_runs:
                _check_patient(cohort, params, spec, a, i)
            reps = spec.noise_replicates if i < spec.noise_patients else 1
            for k in range(reps):
                run_id = f"a{a}-p{i:0{width}d}" + (f"-r{k}" if k else "")
                runs.append(Run(index=len(runs), run_id=run_id, params=params, replicate=k,
                                seed=patient_seed(spec.root_seed, i, k)))
    cohort.runs = runs
    return cohort


def _check_patient(cohort: Cohort, params: dict, spec: CohortSpec, arm: int, patient: int) -> None:
    from engraft.scaling import check_infusions

    try:
        exp = validate(cohort.config_with(params))
        check_memory(exp)
        check_infusions(exp)
    except ConfigError as err:
        text = str(err)
        head = text.split(": ", 1)[0]
        for p in spec.parameters:
            if any(head == path or head.startswith((f"{path}.", f"{path}[")) for path in p.paths):
                if "unknown key" in text or "no such list item" in text:  # the path itself is wrong
                    raise ConfigError(f"cohort.parameters.{p.name}: {text}") from None
                row = params.get(p.name)
                if p.table is not None and isinstance(row, int):  # a row of real patients' values: fix the row
                    row += 1
                    raise ConfigError(f"cohort.parameters.{p.name}: patient {patient} (arm {arm}) drew row "
                                      f"{row} of {p.table.file} (the header not counted): {text}; correct "
                                      f"that row or remove it") from None
                value = params.get(p.name, params.get(head))
                raise ConfigError(f"cohort.parameters.{p.name}: patient {patient} (arm {arm}) drew "
                                  f"{brief(value)}: {text}; bound the distribution (low/high)") from None
        raise ConfigError(f"cohort (arm {arm}, patient {patient}): {text}") from None


def load_cohort(path: str | os.PathLike, overrides: list[str] | tuple = (), *,
                patients: int | None = None) -> Cohort:
    """Read and validate a cohort file (an experiment with ``cohort:``, or ``experiment: FILE`` + ``cohort:``).

    Parameters
    ----------
    path : the cohort file; ``base:`` files are merged.
    overrides : ``"key.path=value"`` strings applied to the base experiment first.
    patients : patients per arm instead of ``cohort.patients`` (the first
        patients are the same people either way).
    """
    path = Path(path)
    raw = load_yaml(path)
    if "experiment" in raw:
        extra = [k for k in raw if k not in ("experiment", "cohort", "sweep")]
        if extra:
            raise _error(str(extra[0]), "unknown key; a cohort file that names an experiment holds only "
                                        "experiment, sweep and cohort")
        if not isinstance(raw["experiment"], str):
            raise _error("experiment", f"must be the path of an experiment file, got {brief(raw['experiment'])}")
        experiment = (path.parent / raw["experiment"]).resolve()
        data = resolve_bases(load_yaml(experiment), experiment)
        data.pop("sweep", None)
        data.pop("cohort", None)
        for key in ("sweep", "cohort"):
            if key in raw:
                data[key] = raw[key]
    else:
        data = resolve_bases(raw, path.resolve())
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value)
    if patients is not None and isinstance(data.get("cohort"), dict):
        data["cohort"]["patients"] = int(patients)
    return parse_cohort(data, base_dir=path.parent)


def is_cohort_spec(spec: dict) -> bool:
    """True for a ``sweep.json`` written by a cohort."""
    return (spec.get("design") or {}).get("kind") == "cohort"


__all__ = ["APPLY", "COHORT_KEYS", "Cohort", "CohortParameter", "CohortSpec", "Parameter", "draw",
           "is_cohort_spec", "load_cohort", "parse_cohort", "patient_seed", "patient_values", "uniforms"]
