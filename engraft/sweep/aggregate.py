"""A sweep's aggregate table: one row per run, rebuilt from the run directories.

``SWEEP_DIR/aggregate.parquet`` has, per run, ``run_id``, one column per
swept key path (``infusions[0].dose_per_kg``, ...), ``replicate``, ``seed``,
``status`` (``done``, ``failed``, ``damaged`` (its files do not parse; run
again on resume) or ``missing``), ``error`` (failed and damaged runs),
``wall_seconds`` and every summary read-out of :func:`engraft.readouts.summarize`
(``final_factor_iu_dl``, ``final_severity``, ``threshold_day``,
``neutrophil_engraftment_day``, ``platelet_engraftment_day``, ``days_anc_below_500``,
``days_platelets_below_20``, ``anc_nadir``, ..., ``final_hsc_chimerism``, ``final_clones_alive``,
``final_joint_bleeds_per_year``, ...). Run ids, parameters and seeds come
from ``sweep.json``; read-outs from each run's ``summary.json``, so the table
can always be rebuilt (``engraft collect SWEEP_DIR``).
"""

from __future__ import annotations

import io
import json
import numbers
import os
import re
from pathlib import Path

from engraft.config.load import ConfigError
from engraft.errors import one_line
from engraft.results import atomic_write_bytes, run_dir_problem
from engraft.sweep.executors import STATUS_DAMAGED, STATUS_DONE, STATUS_FAILED, error_path, run_status

AGGREGATE_FILE = "aggregate.parquet"
SPEC_FILE = "sweep.json"
#: the id of a run in a sweep (r00017, a0-p00012): a plain file name, never a path
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class SweepDirError(ConfigError):
    """A sweep directory is missing, unreadable or holds another sweep (one line, exit status 2)."""


def read_spec(out: str | os.PathLike) -> dict:
    """Read and check ``SWEEP_DIR/sweep.json``; one line if it is missing or not an engraft sweep file."""
    path = Path(out) / SPEC_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SweepDirError(f"{out}: not a sweep directory (no {SPEC_FILE})") from None
    except IsADirectoryError:
        raise SweepDirError(f"{path}: is a directory, not a sweep file") from None
    except OSError as err:
        raise SweepDirError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SweepDirError(f"{path}: not a sweep file engraft can read (binary, not JSON text); it was "
                            "left as it is: choose another directory") from None
    except ValueError as err:
        raise SweepDirError(f"{path}: not a sweep file engraft can read (invalid JSON: {one_line(err, 80)}); "
                            "it was left as it is: choose another directory") from None
    problem = spec_problem(data)
    if problem:
        raise SweepDirError(f"{path}: not a sweep file engraft can read ({problem}); it was left as it is: "
                            "choose another directory")
    return data


def spec_problem(data) -> str | None:
    """What makes ``data`` no sweep.json engraft wrote (None if it is one)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key in ("digest", "engraft_version", "runs"):
        if key not in data:
            return f"no {key!r} entry"
    if not isinstance(data["runs"], list):
        return "'runs' is not a list"
    for i, run in enumerate(data["runs"]):
        if not (isinstance(run, dict) and isinstance(run.get("run_id"), str)
                and RUN_ID.fullmatch(run["run_id"]) and isinstance(run.get("params"), dict)
                and isinstance(run.get("replicate"), int) and isinstance(run.get("seed"), int)):
            return f"runs[{i}] is not a run entry (run_id, params, replicate, seed)"
    return None


def run_row(out: Path, run: dict) -> dict:
    """One row of the table: the run's id, values, replicate, seed, status and read-outs."""
    row = {"run_id": run["run_id"], **run["params"], "replicate": run["replicate"], "seed": run["seed"]}
    path = out / "runs" / run["run_id"]
    row["status"] = run_status(path)
    if row["status"] == STATUS_DONE:
        provenance = json.loads((path / "provenance.json").read_text(encoding="utf-8"))
        row["wall_seconds"] = provenance.get("wall_seconds")
        row.update(json.loads((path / "summary.json").read_text(encoding="utf-8")))
    elif row["status"] == STATUS_FAILED:
        try:
            record = json.loads(error_path(path).read_bytes().decode("utf-8"))
            row["error"] = record.get("error") if isinstance(record, dict) else None
        except (OSError, ValueError):
            row["error"] = "its error record does not parse"
    elif row["status"] == STATUS_DAMAGED:
        row["error"] = run_dir_problem(path)
    return row


def _column(values: list) -> list:
    """Values Parquet can hold in one column: numbers (or bools, or strings) as they are, else JSON text."""
    present = [v for v in values if v is not None]
    kinds = {bool if isinstance(v, bool) else numbers.Number if isinstance(v, numbers.Number)
             else str if isinstance(v, str) else object for v in present}
    if len(kinds) <= 1 and object not in kinds:
        return values
    return [None if v is None else json.dumps(v, sort_keys=True) for v in values]


def collect(out: str | os.PathLike) -> Path:
    """(Re)build ``SWEEP_DIR/aggregate.parquet`` from ``sweep.json`` and the run directories.

    Parameters
    ----------
    out : a sweep directory written by :func:`engraft.sweep.run_sweep`.

    Returns
    -------
    Path
        The table, written atomically (a reader never sees half of it).

    Raises
    ------
    SweepDirError
        ``out`` holds no readable ``sweep.json``.
    """
    import pandas as pd

    out = Path(out)
    spec = read_spec(out)
    rows = [run_row(out, run) for run in spec["runs"]]
    columns: dict[str, list] = {}
    for i, row in enumerate(rows):
        for key in row:
            columns.setdefault(key, [None] * i)
        for key, values in columns.items():
            values.append(row.get(key))
    table = pd.DataFrame({key: _column(values) for key, values in columns.items()})
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    target = out / AGGREGATE_FILE
    atomic_write_bytes(target, buffer.getvalue())
    return target
