"""Reading configs: safe YAML, base files, ``--set`` overrides, scoped errors.

Every problem with a user's config becomes one :class:`ConfigError` whose
message is a single line naming the key path, the value and what is allowed;
the command line prints it and exits with status 2.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from engraft.config.safe_yaml import YAMLInputError, YAMLSyntaxError, parse, read_yaml_file
from engraft.config.schema import Experiment, ScopedError
from engraft.errors import UserError, brief
from engraft.kernel.layout import STATE_BYTES_PER_SITE
from engraft.rates import check_time_step

#: longest chain of ``base:`` files
MAX_BASE_DEPTH = 16


class ConfigError(UserError, ValueError):
    """A user's config is wrong. ``str(err)`` is the one-line explanation."""


def load_yaml(path: str | os.PathLike) -> dict:
    """Read one YAML mapping safely and within limits (see :mod:`engraft.config.safe_yaml`)."""
    path = Path(path)
    try:
        data = read_yaml_file(path)
    except YAMLInputError as err:
        raise ConfigError(str(err)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def resolve_bases(data: dict, source: Path, _seen: tuple = ()) -> dict:
    """Merge ``base:`` files (a path or a list, relative to the including file).

    Later bases override earlier ones, and the file's own keys override all;
    mappings merge recursively, anything else (lists included) is replaced.
    """
    data = dict(data)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"base: must be a file path or a list of paths, got {brief(bases)}")
    if len(_seen) >= MAX_BASE_DEPTH:
        raise ConfigError(f"base: more than {MAX_BASE_DEPTH} base files deep (through {source})")
    merged: dict = {}
    for base in bases:
        base_path = (source.parent / base).resolve()
        if base_path in _seen:
            raise ConfigError(f"base: {brief(base)} includes itself (cycle through {source})")
        base_data = resolve_bases(load_yaml(base_path), base_path, (*_seen, base_path))
        merged = deep_merge(merged, base_data)
    return deep_merge(merged, data)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``a.b[0].c=value`` -> (['a', 'b', 0, 'c'], value parsed as YAML, with the loader's limits)."""
    if "=" not in text:
        raise ConfigError(f"--set {brief(text)}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    path = split_key_path(key.strip())
    try:
        value = parse(raw, f"--set {format_path(path)}") if raw.strip() else None
    except YAMLSyntaxError:
        value = raw  # not YAML: the text itself (e.g. a name with a colon)
    except YAMLInputError as err:
        raise ConfigError(str(err)) from None
    return path, value


_NAME = r"[^.\[\]=\s]+"
_KEY_PIECE = re.compile(rf"(?P<name>{_NAME})|\[(?P<index>[^\]]*)\]|(?P<dot>\.)")


def split_key_path(key: str) -> list[str | int]:
    """``infusions[0].dose_per_kg`` -> ['infusions', 0, 'dose_per_kg'].

    A key path is names separated by dots, each optionally followed by list
    indices in brackets; anything else is a one-line :class:`ConfigError`.
    """
    shown = brief(key)
    if not key:
        raise ConfigError("'': empty key path")
    parts: list[str | int] = []
    pos, expect_name = 0, True
    while pos < len(key):
        match = _KEY_PIECE.match(key, pos)
        if match is None:
            if key[pos] == "[":
                raise ConfigError(f"{shown}: unclosed '[' in the key path (write e.g. infusions[0].dose_per_kg)")
            raise ConfigError(f"{shown}: unexpected {key[pos]!r} at position {pos + 1} of the key path "
                              "(write names separated by dots, list items as [0])")
        if match.group("name") is not None:
            if not expect_name:
                raise ConfigError(f"{shown}: put a dot between ']' and the next name")
            parts.append(match.group("name"))
            expect_name = False
        elif match.group("index") is not None:
            index = match.group("index")
            if expect_name:
                raise ConfigError(f"{shown}: a list index [{brief(index)[1:-1]}] must follow a name")
            try:
                parts.append(int(index))
            except ValueError:
                raise ConfigError(f"{shown}: list index must be an integer, got [{brief(index)[1:-1]}]") from None
            expect_name = False
        else:  # a dot
            if expect_name:
                raise ConfigError(f"{shown}: empty name in the key path (two dots, or a leading dot)")
            expect_name = True
        pos = match.end()
    if expect_name:
        raise ConfigError(f"{shown}: the key path ends with a dot" if parts else f"{shown}: empty key path")
    return parts


def set_path(data: dict, path: list[str | int], value: Any) -> None:
    """Set ``value`` at ``path`` inside nested dicts/lists, creating mappings."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise ConfigError(f"{format_path(path[: i + 1])}: no such list item")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{format_path(path[: i + 1])}: parent is not a mapping")
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"{format_path(path)}: no such list item")
    elif not isinstance(node, dict):
        raise ConfigError(f"{format_path(path)}: parent is not a mapping")
    node[last] = value


def format_path(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _allowed_keys(model: type[BaseModel], path: tuple) -> list[str] | None:
    """Field names of the model that ``path`` points into (None if not a model)."""
    node: Any = model
    for part in path:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return None
            node = _model_of(field.annotation)
        elif node is None:
            return None
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return None


def _model_of(annotation) -> Any:
    """The BaseModel inside an annotation such as ``X | None``, ``dict[str, X]``, ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _describe_error(err: dict, data: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic tags union members ("int", "float", ...) and validators in loc: drop them
    clean: list = []
    node: Any = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            if not isinstance(part, str):  # a number, date or null where a name goes
                where = format_path(clean) or "(top level)"
                return f"{where}: key {brief(part)} is not a name; keys are names such as 'lattice' or 'HSC'"
            clean.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            clean.append(part)
            node = node[part]
        elif err["type"] in ("missing", "extra_forbidden") and part == loc[-1]:
            clean.append(part)
    path = format_path([p if not isinstance(p, str) or len(p) <= 40 else p[:37] + "..." for p in clean]) \
        or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(clean[-1] if clean else loc[-1])[:200]
        allowed = _allowed_keys(Experiment, tuple(p for p in clean[:-1] if isinstance(p, str)
                                                  and not _is_mapping_key(clean, p)))
        hint = ""
        if allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return f"{path}: unknown key{hint}; allowed keys: {', '.join(allowed)}"
        return f"{path}: unknown key"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # a model validator's own "field: message" -> scope it
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head:
            value = node.get(head) if isinstance(node, dict) else None
            got = f", got {brief(value)}" if value is not None and "got" not in rest else ""
            return f"{format_path([*clean, head])}: {rest}{got}"
        return f"{path}: {msg}"
    value = err.get("input")
    msg = msg[0].lower() + msg[1:]
    return f"{path}: {msg}, got {brief(value)}"


def _is_mapping_key(path: list, part) -> bool:
    """True for keys of free-form mappings (cell type names etc.), not schema fields."""
    idx = path.index(part)
    return idx > 0 and path[idx - 1] in ("cell_types", "mature", "myeloablation", "composition",
                                         "differentiation", "probabilities")


def validate(data: dict) -> Experiment:
    """Validate a plain mapping into an :class:`Experiment` or raise :class:`ConfigError`."""
    try:
        exp = Experiment.model_validate(data)
        check_time_step(exp)
        return exp
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise ConfigError(_describe_error(errors[0], data)) from None
    except ScopedError as exc:  # check_time_step's (pydantic wraps the schema's own)
        raise ConfigError(str(exc)) from None


def load_config(path: str | os.PathLike, overrides: list[str] | tuple = (),
                seed: int | None = None) -> Experiment:
    """Load, merge bases, apply ``--set`` overrides and validate a config file.

    Parameters
    ----------
    path : path to a YAML experiment file.
    overrides : ``"key.path=value"`` strings, applied after base merging.
    seed : if given, replaces the config's ``seed``.
    """
    path = Path(path)
    data = resolve_bases(load_yaml(path), path.resolve())
    for text in overrides:
        key, value = parse_override(text)
        set_path(data, key, value)
    if seed is not None:
        data["seed"] = seed
    exp = validate(data)
    check_memory(exp)
    return exp


def available_memory_bytes() -> int:
    """Physical memory the machine has (the bound for up-front refusals)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


#: peak bytes of one time-series record: about 4.6 kB as the run's dict of read-outs and 13.7 kB more
#: while the records become a DataFrame (measured with tracemalloc on the tiny experiment: 50 columns)
RECORD_BYTES = 20_000


def memory_parts(exp: Experiment) -> dict[str, float]:
    """Peak memory of a kernel run by what needs it (bytes): ``lattice`` (state, kernel arrays and
    pool), ``snapshots`` and ``records`` (the time series). The infused cells are
    :func:`engraft.scaling.check_infusions`' (a dose's cells depend on the scales)."""
    n = exp.lattice.n_sites
    # + the kernel's own arrays: the int32 visit order (sequential), or 1-byte marks and
    # pending blood slots for half the lattice, 8 bytes each (parallel)
    per_site = STATE_BYTES_PER_SITE + 5
    pool = 2 * n * 12  # up to ~2n slots after an infusion: 8 bytes of cell + 4 of visit order
    t = exp.time
    interval = t.snapshot_interval_days or t.duration_days
    n_snapshots = t.duration_days / interval + 2
    # records: one per interval, and daily while blood counts are low (at most daily throughout)
    every = t.record_interval_days if exp.blood_counts is None else min(t.record_interval_days, 1.0)
    n_records = t.duration_days / every + 2
    return {"lattice": float(n * per_site + pool), "snapshots": n_snapshots * n * 7.0,
            "records": n_records * RECORD_BYTES}


def estimate_memory_bytes(exp: Experiment) -> int:
    """Peak memory of a kernel run: state, order/scratch arrays, pool, snapshots and records."""
    total = sum(memory_parts(exp).values())
    return int(min(total, 2.0**62))


def check_memory(exp: Experiment, limit_fraction: float = 0.8) -> None:
    """Refuse up front a run whose estimate exceeds ``limit_fraction`` of memory, naming what needs it."""
    parts = memory_parts(exp)
    need = sum(parts.values())
    have = available_memory_bytes()
    if need <= limit_fraction * have:
        return
    than = f"more than {limit_fraction:.0%} of this machine's {have / 2**30:.1f} GiB"
    gib = f"{need / 2**30:.1f} GiB"
    t = exp.time
    largest = max(parts, key=parts.get)
    if largest == "records":
        raise ConfigError(
            f"time.duration_days: {t.duration_days:g} days with records every {t.record_interval_days:g} days "
            f"(daily while counts are low): the run needs about {gib}, {than}; use a shorter follow-up or a longer "
            f"time.record_interval_days"
        )
    if largest == "snapshots" and t.snapshot_interval_days:
        raise ConfigError(
            f"time.snapshot_interval_days: {t.snapshot_interval_days:g} over {t.duration_days:g} days makes "
            f"about {parts['snapshots'] / (7 * exp.lattice.n_sites):.3g} snapshots of {exp.lattice.n_sites:,} "
            f"sites: the run needs about {gib}, {than}; use a longer interval or a shorter follow-up"
        )
    raise ConfigError(
        f"lattice.size: {exp.lattice.size} ({exp.lattice.dims}D, {exp.lattice.n_sites:,} sites) "
        f"needs about {gib} with its snapshots, {than}; use a smaller lattice "
        f"or a longer time.snapshot_interval_days"
    )


def dump_config(exp: Experiment) -> str:
    """The resolved config as YAML (what a run directory stores)."""
    # libyaml's emitter where PyYAML has it: the same text, and a cohort writes thousands of these
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(exp.model_dump(mode="json"), Dumper=dumper, sort_keys=False)
