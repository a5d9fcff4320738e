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
        infusions[0].transduction: {values: [0.3, 0.6], group: product}
        infusions[0].vcn.mean: {values: [1.0, 2.0], group: product}   # zipped with the line above

Parameters sharing a ``group`` vary together (zipped; equal lengths); groups
and ungrouped parameters form a full factorial product. ``range`` takes
``start``, ``stop``, ``num`` and ``scale: linear | log``. Every run's seed comes
from ``numpy.random.SeedSequence(root_seed).spawn(n_runs)`` and is recorded, so
any run can be re-created alone from its own ``config.yaml``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engraft.config.load import (
    ConfigError,
    format_path,
    load_yaml,
    resolve_bases,
    set_path,
    split_key_path,
    validate,
)
from engraft.config.schema import Experiment

SWEEP_KEYS = ("parameters", "replicates", "root_seed", "overrides", "scheduler", "workers")
PARAMETER_KEYS = ("values", "range", "group")
RANGE_KEYS = ("start", "stop", "num", "scale")


@dataclass(frozen=True)
class Parameter:
    path: str
    values: tuple
    group: str | None


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
    """A validated sweep: the base experiment (as data) and its runs."""

    base: dict  # the experiment mapping, bases resolved, without ``sweep``
    parameters: list[Parameter]
    overrides: dict
    replicates: int
    root_seed: int
    scheduler: str | None
    workers: int | None
    runs: list[Run]

    def run_config(self, run: Run) -> dict:
        """The experiment mapping of one run (overrides, parameter values, seed)."""
        data = copy.deepcopy(self.base)
        for path, value in {**self.overrides, **run.params}.items():
            set_path(data, split_key_path(path), copy.deepcopy(value))
        data["seed"] = run.seed
        return data

    def run_experiment(self, run: Run) -> Experiment:
        return validate(self.run_config(run))

    def spec_json(self) -> dict:
        """What sweep.json records: enough to re-create every run, and to refuse a changed sweep."""
        return {
            "base_config": self.base,
            "parameters": {p.path: {"values": list(p.values), "group": p.group} for p in self.parameters},
            "overrides": self.overrides,
            "replicates": self.replicates,
            "root_seed": self.root_seed,
            "runs": [{"run_id": r.run_id, "params": r.params, "replicate": r.replicate, "seed": r.seed}
                     for r in self.runs],
        }

    def digest(self) -> str:
        text = json.dumps(self.spec_json(), sort_keys=True, default=float)
        return hashlib.sha256(text.encode()).hexdigest()


def _err(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _values(path: str, spec) -> tuple:
    where = f"sweep.parameters.{path}"
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise _err(where, f"give {{values: [...]}} or {{range: {{start, stop, num}}}}, got {spec!r}")
    unknown = [k for k in spec if k not in PARAMETER_KEYS]
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"unknown key; allowed keys: {', '.join(PARAMETER_KEYS)}")
    if ("values" in spec) == ("range" in spec):
        raise _err(where, "give exactly one of values or range")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _err(f"{where}.values", f"must be a non-empty list, got {values!r}")
        return tuple(values)
    rng = spec["range"]
    if not isinstance(rng, dict):
        raise _err(f"{where}.range", f"must be a mapping with start, stop, num, got {rng!r}")
    unknown = [k for k in rng if k not in RANGE_KEYS]
    if unknown:
        raise _err(f"{where}.range.{unknown[0]}", f"unknown key; allowed keys: {', '.join(RANGE_KEYS)}")
    try:
        start, stop, num = float(rng["start"]), float(rng["stop"]), rng["num"]
    except KeyError as err:
        raise _err(f"{where}.range.{err.args[0]}", "required key is missing") from None
    except (TypeError, ValueError):
        raise _err(f"{where}.range", f"start and stop must be numbers, got {rng!r}") from None
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise _err(f"{where}.range.num", f"must be an integer >= 1 (an empty range runs nothing), got {num!r}")
    scale = rng.get("scale", "linear")
    if scale == "linear":
        grid = np.linspace(start, stop, num)
    elif scale == "log":
        if start <= 0 or stop <= 0:
            raise _err(f"{where}.range", f"a log range needs start and stop > 0, got {start:g}, {stop:g}")
        grid = np.geomspace(start, stop, num)
    else:
        raise _err(f"{where}.range.scale", f"must be 'linear' or 'log', got {scale!r}")
    return tuple(float(v) for v in grid)


def _check_path(base: dict, path: str) -> None:
    """A swept key path must name a config field (or a mapping entry) that exists."""
    parts = split_key_path(path)
    node = base
    for i, part in enumerate(parts):
        here = format_path(parts[: i + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise _err(f"sweep.parameters.{path}", f"{here} is no list item of the experiment")
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and i == len(parts) - 1:
            return  # a new entry of a mapping (e.g. a default field): validation decides
        else:
            raise _err(f"sweep.parameters.{path}", f"unknown key path ({here} is not in the experiment)")


def run_seeds(root_seed: int, n: int) -> list[int]:
    """One 63-bit seed per run from ``SeedSequence(root_seed).spawn(n)``."""
    out = []
    for child in np.random.SeedSequence(root_seed).spawn(n):
        hi, lo = child.generate_state(2, dtype=np.uint32)
        out.append(int((int(hi) << 32 | int(lo)) & (2**63 - 1)))
    return out


def parse_sweep(data: dict, *, check_runs: bool = True) -> Sweep:
    """Validate an experiment mapping with a ``sweep`` section into a :class:`Sweep`.

    Every run's experiment is validated here, before anything runs, so a bad key
    path, an empty range, ``replicates < 1`` or an out-of-range value fails up
    front with the key named.
    """
    data = copy.deepcopy(data)
    spec = data.pop("sweep", None)
    if not isinstance(spec, dict):
        raise ConfigError("sweep: the file has no sweep section (a mapping with parameters, replicates)")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise _err(f"sweep.{unknown[0]}", f"unknown key; allowed keys: {', '.join(SWEEP_KEYS)}")
    replicates = spec.get("replicates", 1)
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
        raise _err("sweep.replicates", f"must be an integer >= 1, got {replicates!r}")
    root_seed = spec.get("root_seed", data.get("seed", 0))
    if not isinstance(root_seed, int) or root_seed < 0:
        raise _err("sweep.root_seed", f"must be an integer >= 0, got {root_seed!r}")
    workers = spec.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise _err("sweep.workers", f"must be an integer >= 1, got {workers!r}")
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _err("sweep.overrides", f"must be a mapping of key path -> value, got {overrides!r}")
    for path, value in overrides.items():
        try:
            set_path(data, split_key_path(path), copy.deepcopy(value))
        except ConfigError as err:
            raise _err(f"sweep.overrides.{path}", str(err)) from None
    raw = spec.get("parameters") or {}
    if not isinstance(raw, dict) or not raw:
        raise _err("sweep.parameters", "must map at least one key path to its values")
    parameters = []
    for path, pspec in raw.items():
        _check_path(data, path)
        group = pspec.get("group") if isinstance(pspec, dict) else None
        parameters.append(Parameter(path=path, values=_values(path, pspec), group=group))

    # groups (zipped) and single parameters, then their product
    axes: list[list[Parameter]] = []
    seen: dict[str, list[Parameter]] = {}
    for p in parameters:
        if p.group is None:
            axes.append([p])
        elif p.group in seen:
            seen[p.group].append(p)
        else:
            seen[p.group] = [p]
            axes.append(seen[p.group])
    for members in seen.values():
        lengths = {len(m.values) for m in members}
        if len(lengths) > 1:
            detail = ", ".join(f"{m.path} has {len(m.values)}" for m in members)
            raise _err(f"sweep.parameters.{members[0].path}.group",
                       f"parameters zipped in group {members[0].group!r} need equal lengths: {detail}")
    combos = []
    for choice in itertools.product(*[range(len(axis[0].values)) for axis in axes]):
        params = {}
        for axis, k in zip(axes, choice, strict=True):
            for p in axis:
                params[p.path] = p.values[k]
        combos.append(params)
    n = len(combos) * replicates
    seeds = run_seeds(root_seed, n)
    runs = [Run(index=i, run_id=f"r{i:05d}", params=combos[i // replicates], replicate=i % replicates,
                seed=seeds[i]) for i in range(n)]
    sweep = Sweep(base=data, parameters=parameters, overrides=overrides, replicates=replicates,
                  root_seed=root_seed, scheduler=spec.get("scheduler"), workers=workers, runs=runs)
    if check_runs:
        check_all_runs(sweep)
    return sweep


def check_all_runs(sweep: Sweep) -> None:
    """Validate every run's experiment; name the swept key and run on failure."""
    from engraft.config.load import check_memory
    from engraft.simulation import check_infusions

    checked: set[str] = set()
    for run in sweep.runs:
        key = json.dumps(run.params, sort_keys=True, default=float)
        if key in checked:  # replicates differ only in their seed
            continue
        checked.add(key)
        try:
            exp = sweep.run_experiment(run)
            check_memory(exp)
            check_infusions(exp)
        except ConfigError as err:
            text = str(err)
            for path in run.params:
                if text.startswith(f"{path}:"):  # the swept value itself is wrong
                    raise ConfigError(f"sweep.parameters.{text}") from None
            where = ", ".join(f"{k}={v!r}" for k, v in run.params.items())
            raise ConfigError(f"sweep run {run.run_id} ({where}): {text}") from None


def load_sweep(path: str | Path, overrides: list[str] | tuple = ()) -> Sweep:
    """Read a sweep file: an experiment with ``sweep:``, or ``experiment: FILE`` plus ``sweep:``."""
    from engraft.config.load import parse_override

    path = Path(path)
    raw = load_yaml(path)
    if "experiment" in raw:
        extra = [k for k in raw if k not in ("experiment", "sweep")]
        if extra:
            raise _err(extra[0], "unknown key; a sweep file holds experiment and sweep")
        experiment = (path.parent / str(raw["experiment"])).resolve()
        data = resolve_bases(load_yaml(experiment), experiment)
        data["sweep"] = raw.get("sweep")
    else:
        data = resolve_bases(raw, path.resolve())
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value)
    return parse_sweep(data)
