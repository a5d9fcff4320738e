"""Sweep specifications: parameters by key path, products, zipped groups, replicates, seeds.

A sweep is a ``sweep:`` section of an experiment file (or a file holding
``experiment: path.yaml`` and ``sweep:``)::

    sweep:
      replicates: 10                 # runs per parameter combination
      root_seed: 7                   # default: the experiment's seed
      overrides:                     # fixed changes for every run
        time.duration_days: 730
      parameters:                    # key path -> values; full factorial product
        infusions[0].dose_per_kg: {values: [2.0e6, 5.0e6, 8.0e6]}
        conditioning.myeloablation.HSC: {range: {start: 0.5, stop: 0.99, num: 4}}
        infusions[0].transduction: {values: [0.3, 0.6]}
        infusions[0].vcn.mean: {values: [1.0, 2.0]}
      zip:                           # these vary together (equal lengths)
        - ["infusions[0].transduction", "infusions[0].vcn.mean"]   # quoted: [0] inside [...]

Key paths use the ``--set`` syntax. Parameters in one ``zip`` list, or with
the same ``group:`` name, vary together (zipped; equal lengths); groups and
the other parameters form a full factorial product, times ``replicates``.
``range`` takes ``start``, ``stop``, ``num`` and ``scale: linear | log``.

Seeds: ``numpy.random.SeedSequence(root_seed).spawn(n_runs)`` gives one child
per run; two 32-bit words of its state make a 63-bit integer seed. The seed is
recorded in ``sweep.json`` and in the run's own ``config.yaml``, so any run can
be re-created alone with ``engraft run RUN_DIR/config.yaml``. Child ``i``
depends only on ``root_seed`` and ``i``, not on how many runs there are.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engraft.config.load import (
    ConfigError,
    load_yaml,
    parse_override,
    resolve_bases,
    set_path,
    split_key_path,
    validate,
)
from engraft.config.schema import Experiment
from engraft.errors import brief

#: keys of the ``sweep:`` section
SWEEP_KEYS = ("parameters", "zip", "replicates", "root_seed", "overrides", "scheduler", "workers")
#: keys of one swept parameter
PARAMETER_KEYS = ("values", "range", "group")
#: keys of a ``range``
RANGE_KEYS = ("start", "stop", "num", "scale")
#: most runs in one sweep (its sweep.json lists every run)
MAX_RUNS = 1_000_000
#: keys of a file that points at an experiment instead of being one
POINTER_KEYS = ("experiment", "sweep")


@dataclass(frozen=True)
class Parameter:
    """One swept config field: its key path, its values and its zip group (if any)."""

    path: str
    values: tuple
    group: str | None = None


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its id, parameter values, replicate and seed."""

    index: int
    run_id: str
    params: dict
    replicate: int
    seed: int


@dataclass
class Sweep:
    """A validated sweep: the base experiment (as plain data) and its runs.

    Attributes
    ----------
    base : the experiment mapping with bases merged and ``sweep.overrides``
        applied, without the ``sweep`` section.
    parameters : the swept fields, in file order.
    overrides : fixed ``key path -> value`` changes applied to every run.
    replicates : runs per parameter combination (differing only in seed).
    root_seed : the seed the per-run seeds are spawned from.
    scheduler : a Dask scheduler address from the file, or None.
    workers : local worker processes from the file, or None.
    runs : every run, in order; run ``i`` is ``runs[i]``.
    """

    base: dict
    parameters: list[Parameter]
    overrides: dict
    replicates: int
    root_seed: int
    scheduler: str | None
    workers: int | None
    runs: list[Run] = field(default_factory=list)

    def config_with(self, params: dict) -> dict:
        """The base experiment mapping with ``key path -> value`` parameter values set (a copy)."""
        data = copy.deepcopy(self.base)
        for path, value in params.items():
            set_path(data, split_key_path(path), copy.deepcopy(value))
        return data

    def run_config(self, run: Run) -> dict:
        """The experiment mapping of one run: the base, its parameter values and its seed."""
        data = self.config_with(run.params)
        data["seed"] = run.seed
        return data

    def run_experiment(self, run: Run) -> Experiment:
        """The validated :class:`~engraft.config.schema.Experiment` of one run."""
        return validate(self.run_config(run))

    def base_digest(self) -> str:
        """SHA-256 of the resolved base config (canonical JSON)."""
        return _sha256(self.base)

    def spec_json(self) -> dict:
        """What ``sweep.json`` records: enough to re-create every run and to refuse a changed sweep."""
        return {
            "base_config_sha256": self.base_digest(),
            "base_config": self.base,
            "parameters": {p.path: {"values": list(p.values), "group": p.group} for p in self.parameters},
            "overrides": self.overrides,
            "replicates": self.replicates,
            "root_seed": self.root_seed,
            "n_runs": len(self.runs),
            "runs": [{"run_id": r.run_id, "params": r.params, "replicate": r.replicate, "seed": r.seed}
                     for r in self.runs],
        }

    def digest(self) -> str:
        """SHA-256 of :meth:`spec_json`: equal digests mean the same runs with the same configs."""
        return _sha256(self.spec_json())


def _sha256(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=float, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def apply_overrides(data: dict, overrides: Any, where: str) -> None:
    """Set each ``key.path: value`` of ``overrides`` in ``data``; errors are scoped to ``where``."""
    if not isinstance(overrides, dict):
        raise _error(where, f"must be a mapping of key path -> value, got {brief(overrides)}")
    for path, value in overrides.items():
        try:
            set_path(data, split_key_path(str(path)), copy.deepcopy(value))
        except ConfigError as err:
            raise _error(f"{where}.{path}", str(err)) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _values(path: str, spec: Any) -> tuple:
    """The values of one parameter from ``{values: [...]}`` or ``{range: {...}}``."""
    where = f"sweep.parameters.{path}"
    if isinstance(spec, list):  # shorthand: key.path: [v1, v2]
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise _error(where, f"give {{values: [...]}} or {{range: {{start, stop, num}}}}, got {brief(spec)}")
    unknown = [k for k in spec if k not in PARAMETER_KEYS]
    if unknown:
        raise _error(f"{where}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(PARAMETER_KEYS)}")
    if ("values" in spec) == ("range" in spec):
        raise _error(where, "give exactly one of values or range")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _error(f"{where}.values", f"must be a non-empty list, got {brief(values)}")
        return tuple(values)
    rng = spec["range"]
    if not isinstance(rng, dict):
        raise _error(f"{where}.range", f"must be a mapping with start, stop, num, got {brief(rng)}")
    unknown = [k for k in rng if k not in RANGE_KEYS]
    if unknown:
        raise _error(f"{where}.range.{unknown[0]}", f"unknown key; allowed keys: {', '.join(RANGE_KEYS)}")
    for key in ("start", "stop", "num"):
        if key not in rng:
            raise _error(f"{where}.range.{key}", "required key is missing")
    bounds = []
    for key in ("start", "stop"):
        value = rng[key]
        try:  # YAML 1.1 reads 1.0e6 (no sign in the exponent) as a string
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not np.isfinite(number):
            raise _error(f"{where}.range.{key}", f"must be a finite number, got {brief(value)}")
        bounds.append(float(number))
    start, stop = bounds
    num = rng["num"]
    if not _is_int(num) or num < 1:
        raise _error(f"{where}.range.num",
                     f"must be an integer >= 1 (an empty range runs nothing), got {brief(num)}")
    if num > MAX_RUNS:  # before the grid is made: it alone would hold more values than a sweep may run
        raise _error(f"{where}.range.num", f"must be <= {MAX_RUNS:,} (the most runs one sweep may hold), got {num:,}")
    scale = rng.get("scale", "linear")
    if scale == "linear":
        grid = np.linspace(start, stop, int(num))
    elif scale == "log":
        if start <= 0 or stop <= 0:
            raise _error(f"{where}.range",
                         f"a log range needs start and stop > 0, got {start:g} and {stop:g}")
        grid = np.geomspace(start, stop, int(num))
    else:
        raise _error(f"{where}.range.scale", f"must be 'linear' or 'log', got {brief(scale)}")
    return tuple(float(v) for v in grid)


def _zip_groups(spec: Any, paths: list[str]) -> dict[str, str]:
    """``zip: [[a, b], [c, d]]`` -> {a: 'zip[0]', b: 'zip[0]', c: 'zip[1]', d: 'zip[1]'}."""
    if spec is None:
        return {}
    if not isinstance(spec, list) or not all(isinstance(g, list) for g in spec):
        raise _error("sweep.zip", f"must be a list of lists of swept key paths, got {brief(spec)}")
    groups: dict[str, str] = {}
    for i, members in enumerate(spec):
        if len(members) < 2:
            raise _error(f"sweep.zip[{i}]", f"zip at least two swept key paths together, got {brief(members)}")
        for j, path in enumerate(members):
            if path not in paths:
                raise _error(f"sweep.zip[{i}][{j}]", f"{brief(path)} is not a key of sweep.parameters "
                                                     f"({', '.join(paths)})")
            if path in groups:
                raise _error(f"sweep.zip[{i}][{j}]", f"{brief(path)} is already zipped in {groups[path]}")
            groups[path] = f"zip[{i}]"
    return groups


def _axes(parameters: list[Parameter]) -> list[list[Parameter]]:
    """Zip groups and single parameters, in file order: the axes of the product."""
    axes: list[list[Parameter]] = []
    by_group: dict[str, list[Parameter]] = {}
    for p in parameters:
        if p.group is None:
            axes.append([p])
        elif p.group in by_group:
            by_group[p.group].append(p)
        else:
            by_group[p.group] = [p]
            axes.append(by_group[p.group])
    for members in by_group.values():
        if len({len(m.values) for m in members}) > 1:
            detail = ", ".join(f"{m.path} has {len(m.values)}" for m in members)
            where = (f"sweep.{members[0].group}" if members[0].group.startswith("zip[")
                     else f"sweep.parameters.{members[0].path}.group")
            raise _error(where, f"parameters zipped together need equal numbers of values: {detail}")
    return axes


def run_seeds(root_seed: int, n: int) -> list[int]:
    """One 63-bit seed per run from ``numpy.random.SeedSequence(root_seed).spawn(n)``.

    Parameters
    ----------
    root_seed : the sweep's root seed (>= 0).
    n : number of runs.

    Returns
    -------
    list of int
        ``seeds[i]`` depends only on ``root_seed`` and ``i``.
    """
    seeds = []
    for child in np.random.SeedSequence(root_seed).spawn(n):
        hi, lo = child.generate_state(2, dtype=np.uint32)
        seeds.append((int(hi) << 32 | int(lo)) & (2**63 - 1))
    return seeds


def parse_sweep(data: dict, *, check_runs: bool = True) -> Sweep:
    """Validate an experiment mapping with a ``sweep`` section into a :class:`Sweep`.

    Parameters
    ----------
    data : an experiment mapping (bases already merged) with a ``sweep`` key.
    check_runs : validate every run's experiment now (default), so a bad key
        path, an empty range, ``replicates < 1`` or an out-of-range value fails
        before anything runs, with the key named.

    Raises
    ------
    ConfigError
        One line naming the key path, e.g.
        ``sweep.parameters.infusions[0].transduction: input should be less than or equal to 1, got 1.5``.
    """
    data = copy.deepcopy(data)
    if data.get("cohort") is not None:
        raise ConfigError("cohort: this file describes a virtual patient cohort; run it with "
                          "engraft cohort FILE (its sweep section gives the design arms)")
    spec = data.pop("sweep", None)
    if not isinstance(spec, dict):
        raise ConfigError("sweep: the file has no sweep section (a mapping with parameters and replicates)")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise _error(f"sweep.{unknown[0]}", f"unknown key; allowed keys: {', '.join(SWEEP_KEYS)}")
    replicates = spec.get("replicates", 1)
    if not _is_int(replicates) or replicates < 1:
        raise _error("sweep.replicates", f"must be an integer >= 1, got {brief(replicates)}")
    root_seed = spec.get("root_seed", data.get("seed", 0))
    if not _is_int(root_seed) or root_seed < 0:
        raise _error("sweep.root_seed", f"must be an integer >= 0, got {brief(root_seed)}")
    workers = spec.get("workers")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise _error("sweep.workers", f"must be an integer >= 1, got {brief(workers)}")
    scheduler = spec.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise _error("sweep.scheduler", f"must be a Dask scheduler address such as tcp://host:8786, "
                                        f"got {brief(scheduler)}")
    overrides = spec.get("overrides") or {}
    apply_overrides(data, overrides, "sweep.overrides")

    raw = spec.get("parameters")
    if raw is None:  # replicates alone: the same design, new seeds
        raw = {}
        if replicates < 2:
            raise _error("sweep", "give parameters to vary, or replicates >= 2 (the same design with new seeds)")
    if not isinstance(raw, dict):
        raise _error("sweep.parameters", f"must map key paths to their values, got {brief(raw)}")
    zipped = _zip_groups(spec.get("zip"), [str(p) for p in raw])
    parameters = []
    for path, pspec in raw.items():
        path = str(path)
        values = _values(path, pspec)
        group = pspec.get("group") if isinstance(pspec, dict) else None
        if group is not None and not isinstance(group, str):
            raise _error(f"sweep.parameters.{path}.group", f"must be a name, got {brief(group)}")
        if group is not None and path in zipped:
            raise _error(f"sweep.parameters.{path}.group", f"is also zipped in sweep.{zipped[path]}: "
                                                           "use one of group and zip")
        try:  # a structurally impossible path (a list index out of range, a scalar parent)
            set_path(copy.deepcopy(data), split_key_path(path), values[0])
        except ConfigError as err:
            raise _error(f"sweep.parameters.{path}", str(err)) from None
        parameters.append(Parameter(path=path, values=values, group=group or zipped.get(path)))

    combos, indices = [], []  # each combination's values, and each parameter's value index
    axes = _axes(parameters)
    n_runs = math.prod(len(axis[0].values) for axis in axes) * replicates
    if n_runs > MAX_RUNS:
        sizes = " x ".join(str(len(axis[0].values)) for axis in axes) or "1"
        raise _error("sweep", f"{sizes} combinations x {replicates} replicates is {n_runs:,} runs, more than "
                              f"one sweep may hold ({MAX_RUNS:,}); split it into several sweeps")
    for choice in itertools.product(*[range(len(axis[0].values)) for axis in axes]):
        index = {p.path: k for axis, k in zip(axes, choice, strict=True) for p in axis}
        indices.append(index)
        combos.append({p.path: p.values[index[p.path]] for p in parameters})  # file order
    sweep = Sweep(base=data, parameters=parameters, overrides=overrides, replicates=replicates,
                  root_seed=int(root_seed), scheduler=scheduler, workers=workers)
    if check_runs:
        combos = [check_combination(sweep, params) for params in combos]
        # record each parameter's values as validated (1.5e8 is a string to YAML 1.1)
        validated = {p.path: list(p.values) for p in parameters}
        for index, params in zip(indices, combos, strict=True):
            for path, k in index.items():
                validated[path][k] = params[path]
        sweep.parameters = [Parameter(p.path, tuple(validated[p.path]), p.group) for p in parameters]
    n = len(combos) * replicates
    width = max(5, len(str(n - 1)))
    seeds = run_seeds(root_seed, n)
    sweep.runs = [Run(index=i, run_id=f"r{i:0{width}d}", params=combos[i // replicates],
                      replicate=i % replicates, seed=seeds[i]) for i in range(n)]
    return sweep


def _scope(text: str, sweep: Sweep, params: dict) -> str:
    """Name the sweep key behind a run's config error (a swept value or an override)."""
    head = text.split(": ", 1)[0]
    for path in params:
        if head == path or head.startswith((f"{path}.", f"{path}[")):
            return f"sweep.parameters.{text}"
        if path.startswith((f"{head}.", f"{head}[")):  # e.g. an unknown key on the way to the path
            return f"sweep.parameters.{path}: {text}"
    for path in sweep.overrides:
        if head == path or head.startswith((f"{path}.", f"{path}[")):
            return f"sweep.overrides.{text}"
        if str(path).startswith((f"{head}.", f"{head}[")):
            return f"sweep.overrides.{path}: {text}"
    where = ", ".join(f"{k}={brief(v)}" for k, v in params.items())
    return f"sweep ({where}): {text}"


def _get_path(data: Any, parts: list) -> Any:
    for part in parts:
        data = data[part]
    return data


def check_combination(sweep: Sweep, params: dict) -> dict:
    """Validate the experiment of one parameter combination; return its values as validated.

    Besides the schema this applies the checks a run makes before it starts
    (:func:`engraft.engines.preflight`: memory, infused cells per type, the
    Mesa engine's limits). The returned values are read
    back from the validated config, so ``1.5e8`` (a string to YAML 1.1) is
    recorded as the number the run used.

    Raises
    ------
    ConfigError
        Naming the swept key (``sweep.parameters.<path>: ...``) or the override.
    """
    from engraft.engines import preflight

    try:
        exp = validate(sweep.config_with(params))
        preflight(exp)
    except ConfigError as err:
        raise ConfigError(_scope(str(err), sweep, params)) from None
    dumped = exp.model_dump(mode="json")
    canonical = {}
    for path, value in params.items():
        try:
            canonical[path] = _get_path(dumped, split_key_path(path))
        except (KeyError, IndexError, TypeError):  # pragma: no cover - a validated path is in the dump
            canonical[path] = value
    return canonical


def load_sweep(path: str | os.PathLike, overrides: list[str] | tuple = ()) -> Sweep:
    """Read and validate a sweep file.

    Parameters
    ----------
    path : an experiment file with a ``sweep:`` section (``base:`` files are
        merged), or a file holding ``experiment: FILE`` (relative to it) and
        ``sweep:``.
    overrides : ``"key.path=value"`` strings (as ``--set``) applied to the
        base experiment before the sweep.

    Returns
    -------
    Sweep
        Every run listed and validated.
    """
    path = Path(path)
    raw = load_yaml(path)
    if "experiment" in raw:
        extra = [k for k in raw if k not in POINTER_KEYS]
        if extra:
            raise _error(str(extra[0]), f"unknown key; a sweep file that names an experiment holds only "
                                        f"{' and '.join(POINTER_KEYS)}")
        if not isinstance(raw["experiment"], str):
            raise _error("experiment", f"must be the path of an experiment file, got {brief(raw['experiment'])}")
        experiment = (path.parent / raw["experiment"]).resolve()
        data = resolve_bases(load_yaml(experiment), experiment)
        data["sweep"] = raw.get("sweep")
    else:
        data = resolve_bases(raw, path.resolve())
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value)
    return parse_sweep(data)
