"""Run directories: tables, snapshots, provenance; written atomically.

A run directory holds::

    config.yaml        the resolved config (bases merged, overrides applied, seed set)
    provenance.json    engraft version, seed, engine, environment, wall time, command
    timeseries.csv     one row per recorded day (see engraft.readouts.record_row)
    clones.csv         graft clones alive at the end, largest first
    snapshots.npz      lattice state (ctype, flags, vcn, clone) at snapshot days, niche map
    summary.json       end-of-run read-outs (final level, class, threshold day, ...)
    summary.png        the summary figure

Everything is written into a temporary sibling directory which is then
renamed into place, so a reader never sees half a run and an interrupted
write leaves the previous run (if any) intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engraft._version import __version__
from engraft.config.load import dump_config

RUN_FILES = ("config.yaml", "provenance.json", "timeseries.csv", "clones.csv", "snapshots.npz",
             "summary.json")


def environment() -> dict:
    """Versions of Python, the platform and the libraries that shape results."""
    import numba
    import pandas

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "pandas": pandas.__version__,
        "numba_threads": numba.get_num_threads(),
    }
    try:
        import mesa

        env["mesa"] = mesa.__version__
    except Exception:  # pragma: no cover - mesa is a dependency; keep provenance robust
        env["mesa"] = None
    return env


def config_digest(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


def provenance(result, command: list[str] | None = None) -> dict:
    cfg = dump_config(result.config)
    return {
        "engraft_version": __version__,
        "seed": result.seed,
        "engine": result.engine,
        "config_sha256": config_digest(cfg),
        "wall_seconds": result.wall_seconds,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command if command is not None else sys.argv,
        "kernel": result.extra.get("kernel"),
        "scales_body_cells_per_lattice_cell": result.extra.get("scales"),
        "hsc_scale": result.summary.get("hsc_scale"),
        "clone_readouts_body_equivalent": result.summary.get("clone_readouts_body_equivalent"),
        "hsc_scale_warning": result.summary.get("hsc_scale_warning"),
        "environment": environment(),
    }


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def to_json(data: dict) -> str:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(json.loads(json.dumps(data, default=_json_default))), indent=2)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file (UTF-8) via a temporary name in the same directory, then rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file via a temporary name in the same directory, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_directory(tmp_dir: Path, out_dir: Path) -> None:
    """Move a finished ``tmp_dir`` to ``out_dir``, replacing any previous one."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(out_dir, trash)
        os.replace(tmp_dir, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, out_dir)


def write_run(result, out_dir: str | os.PathLike, command: list[str] | None = None,
              figure: bool = True) -> Path:
    """Write a run directory atomically and return its path."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "config.yaml").write_text(dump_config(result.config), encoding="utf-8")
        (tmp / "provenance.json").write_text(to_json(provenance(result, command)), encoding="utf-8")
        result.timeseries.to_csv(tmp / "timeseries.csv", index=False)
        result.clones.to_csv(tmp / "clones.csv", index=False)
        np.savez_compressed(tmp / "snapshots.npz", **result.snapshots)
        (tmp / "summary.json").write_text(to_json(result.summary), encoding="utf-8")
        if figure:
            from engraft.plots.summary import summary_figure

            summary_figure(result.timeseries, result.summary, tmp / "summary.png",
                           title=result.config.name)
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@dataclass
class RunData:
    """A run directory read back from disk."""

    path: Path
    config: dict
    provenance: dict
    timeseries: object
    clones: object
    snapshots: dict
    summary: dict


def is_run_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return all((path / name).is_file() for name in RUN_FILES)


def read_run(path: str | os.PathLike) -> RunData:
    """Read a run directory written by :func:`write_run`."""
    import pandas as pd
    import yaml

    path = Path(path)
    if not is_run_dir(path):
        missing = [n for n in RUN_FILES if not (path / n).is_file()]
        raise FileNotFoundError(f"{path}: not an engraft run directory (missing {', '.join(missing)})")
    with np.load(path / "snapshots.npz") as npz:
        snapshots = {k: npz[k] for k in npz.files}
    return RunData(
        path=path,
        config=yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")),
        provenance=json.loads((path / "provenance.json").read_text(encoding="utf-8")),
        timeseries=pd.read_csv(path / "timeseries.csv"),
        clones=pd.read_csv(path / "clones.csv"),
        snapshots=snapshots,
        summary=json.loads((path / "summary.json").read_text(encoding="utf-8")),
    )
