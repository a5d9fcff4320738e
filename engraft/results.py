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
write leaves the previous run (if any) intact. What may be replaced follows
the one rule of :mod:`engraft.outputs`: only a directory engraft wrote, and
an earlier run only with ``force``.
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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engraft._version import __version__
from engraft.config.load import dump_config
from engraft.errors import UserError
from engraft.outputs import (
    RUN_FILES,
    check_run_dir,
    commit_dir,
    disk_full_failure,
    is_disk_full,
    share_like_umask,
    stage_dir,
)


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
        "calibrated_dims": result.summary.get("calibrated_dims"),
        "calibration_warning": result.summary.get("calibration_warning"),
        "calibration_note": result.summary.get("calibration_note"),
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
    """Write a file via a temporary name in the same directory, then rename (mode as the umask gives)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        share_like_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(result, out_dir: str | os.PathLike, command: list[str] | None = None,
              figure: bool = True, force: bool = False, staged: Path | None = None,
              owned: bool = False) -> Path:
    """Write a run directory atomically and return its path.

    Parameters
    ----------
    result : the :class:`~engraft.timeline.Result` to write.
    out_dir : the run directory. A new path, an empty directory, or (with
        ``force``) an earlier engraft run directory; anything else is refused
        (:class:`~engraft.outputs.OutputError`) and left as it is.
    command : the command line recorded in provenance.
    figure : also write ``summary.png``.
    force : replace an earlier engraft run directory at ``out_dir``.
    staged : a temporary directory from :func:`engraft.outputs.stage_dir`,
        made before the run so that an unwritable place fails before
        simulating; by default one is made now.
    owned : ``out_dir`` is a place engraft made for this run (a sweep's
        ``runs/<id>``): whatever is there is replaced.

    Raises
    ------
    OutputError
        ``out_dir`` may not or cannot be written (nothing is changed).
    RunFailed
        The disk filled up while writing (nothing of this run is kept).
    """
    out_dir = Path(out_dir)
    if staged is None:
        if not owned:
            check_run_dir(out_dir, force)
        tmp = stage_dir(out_dir)
    else:
        tmp = Path(staged)
    try:
        (tmp / "config.yaml").write_text(dump_config(result.config), encoding="utf-8")
        (tmp / "provenance.json").write_text(to_json(provenance(result, command)), encoding="utf-8")
        result.timeseries.to_csv(tmp / "timeseries.csv", index=False)
        result.clones.to_csv(tmp / "clones.csv", index=False)
        write_npz(tmp / "snapshots.npz", result.snapshots)
        (tmp / "summary.json").write_text(to_json(result.summary), encoding="utf-8")
        if figure:
            from engraft.plots.summary import summary_figure

            summary_figure(result.timeseries, result.summary, tmp / "summary.png",
                           title=result.config.name)
        commit_dir(tmp, out_dir, replace_run=force, owned=owned)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_failure(out_dir.parent, f"the run was not written to {out_dir}") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


#: zlib level of the snapshot archive: the 12 snapshots of the default experiment (1024^2, 5 years)
#: took 0.83 s at level 4 against 2.7 s at NumPy's level 6 (savez_compressed), for an archive 6 %
#: larger (1.03 against 0.97 bytes a site and snapshot; levels 1-3: 0.58-0.92 s, 1.14-1.24 bytes)
NPZ_COMPRESS_LEVEL = 4


def write_npz(path: Path, arrays: dict) -> None:
    """``arrays`` as a compressed ``.npz`` archive (what ``np.savez_compressed`` writes, read back by
    ``np.load``), deflated at :data:`NPZ_COMPRESS_LEVEL`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_COMPRESS_LEVEL) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


#: compressed snapshot bytes per site and snapshot, on the generous side: the shipped tiny, mouse and
#: human experiments measured 0.43-0.65 on sparser marrows, and the default experiment's denser
#: marrow 1.03 at NPZ_COMPRESS_LEVEL (marrow states compress 7-16x from 7 bytes a site)
SNAPSHOT_BYTES_PER_SITE = 1.5
#: bytes of one time-series row (about 60 columns of numbers as text)
ROW_BYTES = 1500


def estimate_run_bytes(exp) -> int:
    """About how many bytes a run directory of ``exp`` takes (snapshots, tables, figure)."""
    t = exp.time
    interval = t.snapshot_interval_days or t.duration_days
    n_snapshots = int(t.duration_days / interval) + 2
    rows = int(t.duration_days / t.record_interval_days) + 2
    snapshots = n_snapshots * exp.lattice.n_sites * SNAPSHOT_BYTES_PER_SITE + exp.lattice.n_sites / 8
    return int(snapshots + rows * ROW_BYTES + 400_000)  # + clones, provenance and the figure


def check_disk_space(exp, out: str | os.PathLike, runs: int = 1) -> None:
    """Refuse up front ``runs`` runs of ``exp`` whose files would not fit where ``out`` is, with the estimate."""
    from engraft.outputs import OutputError, free_bytes

    need = estimate_run_bytes(exp) * runs
    free = free_bytes(out)
    if free is not None and need > free:
        per = f" ({runs:,} runs of {need / runs / 2**20:.1f} MiB)" if runs > 1 else ""
        raise OutputError(f"{out}: the output needs about {need / 2**20:,.0f} MiB{per}, more than the "
                          f"{free / 2**20:,.0f} MiB free there; free some space, choose another --out, or "
                          "record less (time.snapshot_interval_days, time.record_interval_days)")


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


class RunDirError(UserError, FileNotFoundError):
    """A path that is not a complete, readable engraft run directory (one line, exit status 2)."""


def run_dir_problem(path: str | os.PathLike) -> str | None:
    """None if ``path`` is a complete run directory whose files parse; else what is wrong, in a few words.

    A sweep reuses a run only when this finds nothing, so a run directory
    damaged after it was written (a truncated file, a disk error) is run again.
    """
    import zipfile

    from engraft.config.safe_yaml import YAMLInputError, read_yaml_file

    path = Path(path)
    missing = [n for n in RUN_FILES if not (path / n).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    for name in ("provenance.json", "summary.json"):
        try:
            data = json.loads((path / name).read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return f"{name} does not parse"
        if not isinstance(data, dict):
            return f"{name} is not a JSON object"
    try:
        if not isinstance(read_yaml_file(path / "config.yaml"), dict):
            return "config.yaml is not a mapping"
    except YAMLInputError:
        return "config.yaml does not parse"
    for name in ("timeseries.csv", "clones.csv"):
        try:
            with open(path / name, "rb") as fh:
                header = fh.readline()
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0 or not header.endswith(b"\n"):
                    return f"{name} has no header line"
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    return f"{name} is cut short (no line end at its end)"
        except OSError:
            return f"{name} cannot be read"
    try:
        with zipfile.ZipFile(path / "snapshots.npz") as npz:
            if not npz.namelist():
                return "snapshots.npz is empty"
    except (OSError, zipfile.BadZipFile):
        return "snapshots.npz is not a complete archive"
    return None


def read_run(path: str | os.PathLike) -> RunData:
    """Read a run directory written by :func:`write_run`."""
    import pandas as pd
    import yaml

    path = Path(path)
    if not is_run_dir(path):
        missing = [n for n in RUN_FILES if not (path / n).is_file()]
        raise RunDirError(f"{path}: not an engraft run directory (missing {', '.join(missing)})")
    problem = run_dir_problem(path)
    if problem:
        raise RunDirError(f"{path}: a damaged engraft run directory ({problem}); run it again")
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
