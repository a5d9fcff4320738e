"""What the figures read: run directories and sweep tables, with derived series.

Figures never parse files themselves; they take a :class:`engraft.results.RunData`
(from :func:`engraft.results.read_run`) or a :class:`SweepTable` (from
:func:`read_sweep`) and ask this module for what the tables do not hold
directly: the cell types and lineages of a run, the lattice geometry, and
clone sizes per snapshot day (the time series only has clone counts,
diversity and the top share).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engraft.lattice import EMPTY, GRAFT
from engraft.readouts import clone_sizes


class PlotInputError(ValueError):
    """A run or sweep directory lacks what a figure needs (a user's mistake, not a bug)."""


# ----------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------
def fill_record_gaps(timeseries):
    """The time series with the lattice columns of tally-only records filled in for drawing.

    With ``time.lattice_record_interval_days`` the records between lattice
    read-outs leave the lattice columns empty; a figure draws a line through
    the read-outs either side (linear in the day), as it would by joining the
    points. Returns the table itself when no record is tally-only.
    """
    lattice = [c for c in ("clones_alive", "hsc_chimerism") if c in timeseries]
    if not lattice or not timeseries[lattice[0]].isna().any() or "occupancy" not in timeseries:
        return timeseries
    gaps = timeseries["occupancy"].isna()
    if not gaps.any():
        return timeseries
    filled = timeseries.copy()
    columns = [c for c in filled.columns if filled[c].dtype.kind in "fiu" and filled.loc[gaps, c].isna().all()]
    indexed = filled.set_index("day")[columns].interpolate(method="index", limit_area="inside")
    filled[columns] = indexed.to_numpy()
    return filled


def type_names(timeseries) -> list[str]:
    """Cell types in the config's order, from the ``<type>_host`` / ``<type>_graft`` columns."""
    return [c[: -len("_host")] for c in timeseries.columns
            if c.endswith("_host") and f"{c[: -len('_host')]}_graft" in timeseries]


def lineage_names(timeseries) -> list[str]:
    """Mature lineages, from the ``<lineage>_cells`` / ``<lineage>_chimerism`` columns."""
    return [c[: -len("_cells")] for c in timeseries.columns
            if c.endswith("_cells") and f"{c[: -len('_cells')]}_chimerism" in timeseries]


def hsc_type(run) -> str:
    """The HSC type's name (the config's ``kind: hsc`` type; the first type otherwise)."""
    for name, ct in (run.config.get("cell_types") or {}).items():
        if isinstance(ct, dict) and ct.get("kind") == "hsc":
            return name
    return type_names(run.timeseries)[0]


def threshold_iu_dl(run) -> float:
    value = run.summary.get("threshold_iu_dl")
    if value is None:
        value = (run.config.get("readouts") or {}).get("threshold_iu_dl", float("nan"))
    return float(value)


@dataclass(frozen=True)
class LatticeGeometry:
    """Shape of the lattice; sites are numbered ``x + L * (y + L * z)``."""

    size: int
    dims: int

    @classmethod
    def of(cls, run) -> LatticeGeometry:
        lattice = run.config.get("lattice") or {}
        n_sites = int(np.asarray(run.snapshots["ctype"]).shape[-1])
        size, dims = lattice.get("size"), lattice.get("dims")
        if size is None or dims is None or int(size) ** int(dims) != n_sites:
            dims = 2 if round(math.sqrt(n_sites)) ** 2 == n_sites else 3
            size = round(n_sites ** (1.0 / dims))
        return cls(int(size), int(dims))

    @property
    def slice_note(self) -> str:
        """How a 2D picture of this lattice was taken (empty for 2D lattices)."""
        return f"mid-plane slice z = {self.size // 2} of {self.size}" if self.dims == 3 else ""

    def plane(self, values: np.ndarray) -> np.ndarray:
        """Per-site ``values`` as a (y, x) image; the mid-plane z = L // 2 of a 3D lattice."""
        values = np.asarray(values)
        if self.dims == 2:
            return values.reshape(self.size, self.size)
        return values.reshape(self.size, self.size, self.size)[self.size // 2]


def snapshot_days(run) -> np.ndarray:
    return np.asarray(run.snapshots["day"], dtype=np.float64)


def snapshot(run, index: int) -> dict[str, np.ndarray]:
    """Lattice arrays (ctype, flags, vcn, clone) of snapshot ``index``, plus the niche map."""
    s = run.snapshots
    return {"ctype": s["ctype"][index], "flags": s["flags"][index], "vcn": s["vcn"][index],
            "clone": s["clone"][index], "niche": s["niche"]}


def clone_size_matrix(run) -> np.ndarray:
    """Graft lattice cells per clone id at every snapshot: (n_snapshots, max clone id + 1)."""
    s = run.snapshots
    rows = [clone_sizes(s["ctype"][i], s["flags"][i], s["clone"][i]) for i in range(len(s["day"]))]
    width = max(len(r) for r in rows)
    return np.stack([np.pad(r, (0, width - len(r))) for r in rows])


def top_clones(sizes: np.ndarray, count: int) -> np.ndarray:
    """Ids of the ``count`` clones with the largest peak share over the snapshots, largest first.

    Ranking by peak share (not by final size) keeps a clone that expanded and
    then waned visible in a Muller plot.
    """
    totals = sizes.sum(axis=1, keepdims=True)
    shares = np.divide(sizes, totals, out=np.zeros(sizes.shape), where=totals > 0)
    shares[:, 0] = 0.0  # clone 0 is the host
    peak = shares.max(axis=0)
    ids = np.flatnonzero(peak > 0)
    order = np.lexsort((ids, -peak[ids]))  # by peak share, ties by clone id
    return ids[order][:count]


def graft_mask(ctype: np.ndarray, flags: np.ndarray) -> np.ndarray:
    return (ctype != EMPTY) & ((flags & GRAFT) != 0)


def level_at(run, day: float) -> float:
    """Factor level (IU/dL) recorded on the last record at or before ``day``."""
    ts = run.timeseries
    days = ts["day"].to_numpy()
    i = int(np.searchsorted(days, day + 1e-9, side="right")) - 1
    return float(ts["factor_iu_dl"].iloc[max(i, 0)]) if len(days) else float("nan")


# ----------------------------------------------------------------------------------
# sweeps
# ----------------------------------------------------------------------------------
#: columns a sweep's aggregate table must have for the sweep figures
SWEEP_REQUIRED = ("final_factor_iu_dl", "threshold_day")
#: statuses of runs that did not finish: left out of every sweep figure
UNFINISHED_STATUSES = frozenset({"failed", "error", "pending", "running", "killed", "timeout",
                                 "cancelled", "skipped"})
#: aggregate columns that are never swept parameters
SWEEP_META = frozenset({"run_id", "replicate", "seed", "status", "error", "path", "run_dir",
                        "wall_seconds", "engine"})


def is_sweep_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "sweep.json").is_file() or (path / "aggregate.parquet").is_file()


@dataclass
class SweepTable:
    """A sweep's aggregate table (one row per finished run) and what was swept."""

    path: Path
    frame: object  # pandas.DataFrame
    parameters: list[str]
    spec: dict = field(default_factory=dict)
    n_unfinished: int = 0

    @property
    def numeric_parameters(self) -> list[str]:
        import pandas as pd

        return [p for p in self.parameters if pd.api.types.is_numeric_dtype(self.frame[p])]

    @property
    def threshold_iu_dl(self) -> float:
        if "threshold_iu_dl" in self.frame and self.frame["threshold_iu_dl"].notna().any():
            return float(self.frame["threshold_iu_dl"].dropna().iloc[0])
        value = self.spec.get("threshold_iu_dl")
        return float(value) if value is not None else float("nan")

    def levels(self, parameter: str) -> list:
        return sorted(self.frame[parameter].dropna().unique().tolist())


def _spec_parameters(spec: dict, columns) -> list[str]:
    """Swept key paths named in sweep.json, in its order, that are columns of the table."""
    found: list[str] = []

    def visit(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key in columns and key not in found:
                    found.append(key)
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                if isinstance(value, str) and value in columns and value not in found:
                    found.append(value)
                else:
                    visit(value)

    for key in ("parameters", "grid", "axes", "swept", "sweep", "zip", "product"):
        if key in spec:
            visit(spec[key])
    return [p for p in found if p not in SWEEP_META]


def read_sweep(path: str | os.PathLike) -> SweepTable:
    """Read ``SWEEP_DIR/aggregate.parquet`` (and ``sweep.json`` if present).

    Swept parameters are the columns named in sweep.json, else the columns
    whose names are config key paths (``infusions[0].dose_per_kg``,
    ``conditioning.myeloablation.HSC``). Runs whose status says they did not
    finish, or without a final level, are left out and counted.

    Raises
    ------
    PlotInputError
        No aggregate table, required columns missing, or no swept parameter.
    """
    import pandas as pd

    path = Path(path)
    table = path / "aggregate.parquet"
    spec: dict = {}
    if (path / "sweep.json").is_file():
        try:
            spec = json.loads((path / "sweep.json").read_text(encoding="utf-8")) or {}
        except json.JSONDecodeError as err:
            raise PlotInputError(f"{path / 'sweep.json'}: not valid JSON ({err})") from None
        if not isinstance(spec, dict):
            spec = {}
    if not table.is_file():
        raise PlotInputError(f"{path}: no aggregate.parquet (collect the sweep's runs first: "
                             "engraft collect SWEEP_DIR)")
    frame = pd.read_parquet(table)
    missing = [c for c in SWEEP_REQUIRED if c not in frame]
    if missing:
        raise PlotInputError(f"{table}: missing column(s) {', '.join(missing)}; "
                             f"the table has {', '.join(map(str, frame.columns))}")
    parameters = _spec_parameters(spec, frame.columns)
    if not parameters:
        parameters = [c for c in frame.columns
                      if isinstance(c, str) and ("." in c or "[" in c) and c not in SWEEP_META]
    if not parameters:
        raise PlotInputError(f"{table}: no swept parameter column (a config key path such as "
                             "infusions[0].dose_per_kg)")
    n_rows = len(frame)
    if "status" in frame:
        frame = frame[~frame["status"].astype(str).str.lower().isin(UNFINISHED_STATUSES)]
    frame = frame[frame["final_factor_iu_dl"].notna()].reset_index(drop=True)
    if frame.empty:
        raise PlotInputError(f"{table}: no finished run with a final factor level ({n_rows} rows)")
    return SweepTable(path=path, frame=frame, parameters=parameters, spec=spec,
                      n_unfinished=n_rows - len(frame))
