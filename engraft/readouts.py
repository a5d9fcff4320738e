"""Read-outs per recorded time point, computed in one place for every engine.

The kernel engine, the Mesa reference, the plots and the tests all call
:func:`record_row` (one time point) and :func:`clone_table` /
:func:`summarize` (end of run), so a read-out means the same everywhere.

Conventions:

- *chimerism*: graft (donor) cells / all cells of that population.
- *transduced fraction*: cells carrying at least one vector copy / all cells.
- *VCN* is the bulk mean over all cells of the population, transduced or not,
  as a ddPCR assay of that population reports it.
- *clones*: graft cells on the lattice (all types) grouped by clone id.
  Shannon diversity H = -sum p ln p over clone shares; ``top_clone_share`` is
  the largest clone's share of graft lattice cells.
- *blood counts* (with ``blood_counts`` in the config): ``anc_1e9_per_L``,
  ``lymphocytes_1e9_per_L``, ``platelets_1e9_per_L`` = cells in the mature
  compartment x its blood fraction / blood volume; ``hemoglobin_g_per_dL`` =
  red cells x blood fraction x MCH / blood volume.
- *engraftment* (:func:`engraftment_day`): the first of ``engraftment_days``
  consecutive daily counts at or above the level, after the count first fell
  below it; the model gives no transfusions, so platelet engraftment is the
  unsupported count's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engraft import tally
from engraft.kernel.census import lattice_census
from engraft.lattice import EMPTY, GRAFT

ORIGINS = ("host", "graft")
#: time-series columns of the blood counts, with the config section each is read with
COUNT_COLUMNS = {"anc": "anc_1e9_per_L", "lymphocytes": "lymphocytes_1e9_per_L",
                 "platelets": "platelets_1e9_per_L", "hemoglobin": "hemoglobin_g_per_dL"}
#: summary keys of the clinical read-outs (None where there are no blood counts or no event)
CLINICAL_KEYS = ("neutrophil_engraftment_day", "neutrophil_engraftment_censored", "platelet_engraftment_day",
                 "platelet_engraftment_censored", "days_anc_below_500", "days_platelets_below_20",
                 "anc_nadir", "anc_nadir_day", "platelet_nadir", "platelet_nadir_day")
#: each engraftment day's days-below read-out. A run with none of those days never fell below the level:
#: its engraftment day is :func:`engraftment_day`'s convention (the infusion day), not a recovery
DAYS_BELOW_KEY = {"neutrophil_engraftment_day": "days_anc_below_500",
                  "platelet_engraftment_day": "days_platelets_below_20"}


def fell_below(summary: dict, engraftment_key: str) -> bool | None:
    """Whether a run's count fell below its engraftment level (``engraftment_key`` one of
    :data:`DAYS_BELOW_KEY`); None where the summary has no blood counts."""
    below = summary.get(DAYS_BELOW_KEY[engraftment_key])
    return None if below is None else below > 0


#: window of the trailing mean that decides whether a level is held (days)
THRESHOLD_WINDOW_DAYS = 28.0


@dataclass(frozen=True)
class ReadoutSpec:
    """What :func:`record_row` needs to know about the experiment (no config object)."""

    type_names: tuple[str, ...]
    hsc_index: int
    lineage_names: tuple[str, ...]
    factor_mode: str  # "secreted" or "platelet_stored"
    expressing: tuple[str, ...]  # lineages that express the transgene
    expression_per_vcn: float
    baseline_iu_dl: float
    threshold_iu_dl: float
    bleeding_at_15: float
    bleeding_reduction: float
    #: (column, lineage index, count per body cell) of each blood count; empty without blood_counts
    counts: tuple = ()
    #: the ANC and platelet levels of engraftment (1e9/L) and the consecutive days it needs
    neutrophil_level: float = 0.5
    platelet_level: float = 20.0
    engraftment_days: int = 3
    #: day of the first conditioning dose (counts before it are not cytopenia); infusion day
    conditioning_start_day: float = 0.0
    infusion_day: float = 0.0

    @classmethod
    def from_experiment(cls, exp) -> ReadoutSpec:
        names = tuple(exp.type_names)
        bc = exp.blood_counts
        counts = ()
        extra = {}
        if bc is not None:
            litres = bc.blood_volume_ml_per_kg * exp.patient.weight_kg / 1000.0
            lineages = list(exp.lineage_names)
            counts = tuple(
                (column, lineages.index(getattr(bc, name).lineage),
                 getattr(bc, name).blood_fraction * (bc.hemoglobin.hemoglobin_pg_per_cell * 1e-12 / (litres * 10.0)
                                                    if name == "hemoglobin" else 1.0 / (litres * 1e9)))
                for name, column in COUNT_COLUMNS.items())
            extra = {"neutrophil_level": bc.neutrophil_engraftment_1e9_per_L,
                     "platelet_level": bc.platelet_engraftment_1e9_per_L,
                     "engraftment_days": bc.engraftment_days}
        cond = exp.conditioning
        return cls(
            counts=counts,
            conditioning_start_day=cond.dose_days[0] if cond is not None else 0.0,
            infusion_day=min((inf.day for inf in exp.infusions), default=0.0),
            **extra,
            type_names=names,
            hsc_index=names.index(exp.hsc_type),
            lineage_names=tuple(exp.lineage_names),
            factor_mode=exp.transgene.mode,
            expressing=tuple(exp.transgene.lineages),
            expression_per_vcn=exp.transgene.expression_per_vcn,
            baseline_iu_dl=exp.pk.baseline_iu_dl,
            threshold_iu_dl=exp.readouts.threshold_iu_dl,
            bleeding_at_15=exp.readouts.bleeding.joint_bleeds_per_year_at_15,
            bleeding_reduction=exp.readouts.bleeding.reduction_per_iu_dl,
        )


def _safe_ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def clone_sizes(ctype: np.ndarray, flags: np.ndarray, clone: np.ndarray) -> np.ndarray:
    """Lattice graft cells per clone id (index = clone id; index 0 unused)."""
    n_types = 1 + int(ctype.max(initial=0))  # only the clone sizes are used: any HSC index will do
    return lattice_census(ctype, flags, np.zeros_like(flags), clone, n_types, 0)[3]


def diversity(sizes: np.ndarray) -> tuple[int, float, float]:
    """(clones alive, Shannon diversity, top clone share) from clone sizes."""
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        return 0, 0.0, float("nan")
    p = sizes / sizes.sum()
    return int(sizes.size), float(-(p * np.log(p)).sum()), float(p.max())


def factor_level(spec: ReadoutSpec, mature: np.ndarray, conc_iu_dl: float) -> dict:
    """Factor read-outs: plasma level (IU/dL), class, bleeding, platelet content."""
    out = {}
    if spec.factor_mode == "secreted":
        level = spec.baseline_iu_dl + conc_iu_dl
        out["factor_iu_dl"] = level
        out["transgene_iu_dl"] = conc_iu_dl
    else:
        lin = spec.lineage_names.index(spec.expressing[0])
        cells = mature[lin, tally.CELLS]
        per_1e8 = spec.expression_per_vcn * _safe_ratio(mature[lin, tally.EXPRESSION_UNITS], cells)
        # platelet-stored FVIII is not in plasma: the plasma level stays endogenous
        level = spec.baseline_iu_dl
        out["factor_iu_dl"] = level
        out["transgene_iu_dl"] = 0.0
        out["platelet_factor_iu_per_1e8"] = per_1e8
        out["platelet_factor_iu_per_platelet"] = per_1e8 / 1e8
    out["severity"] = tally.severity(level)
    out["joint_bleeds_per_year"] = tally.joint_bleeds_per_year(
        level, spec.bleeding_at_15, spec.bleeding_reduction
    )
    return out


def record_row(spec: ReadoutSpec, day: float, ctype: np.ndarray, flags: np.ndarray,
               vcn: np.ndarray, clone: np.ndarray, pool_size: int, mature: np.ndarray,
               conc_iu_dl: float, baseline_mature: np.ndarray | None = None, census: bool = True) -> dict:
    """All read-outs of one time point as a flat dict (one row of the time series).

    Parameters
    ----------
    spec : what the experiment reports.
    day : days since conditioning (negative during burn-in).
    ctype, flags, vcn, clone : lattice state arrays (see :mod:`engraft.lattice`).
    pool_size : cells circulating in the blood.
    mature : (n_lineages, 5) whole-body compartment contents (see :mod:`engraft.tally`).
    conc_iu_dl : transgene factor in plasma, IU/dL.
    baseline_mature : the compartments before conditioning, for relative sizes.
    census : read the lattice (cell counts, HSC chimerism and VCN, pool, clones);
        False leaves those columns out (``time.lattice_record_interval_days``)
        and gives only the tally read-outs: factor level, bleeding, lineages, blood counts.
    """
    row: dict = {"day": float(day)}
    if not census:
        _lineage_readouts(row, spec, mature, baseline_mature)
        row.update(factor_level(spec, mature, conc_iu_dl))
        return row
    n_types = len(spec.type_names)
    counts, hsc_transduced, hsc_copies, clone_cells, hsc_clone_cells = lattice_census(
        ctype, flags, vcn, clone, n_types, spec.hsc_index)
    host_counts, graft_counts = counts
    for t, name in enumerate(spec.type_names):
        row[f"{name}_host"] = int(host_counts[t])
        row[f"{name}_graft"] = int(graft_counts[t])
    row["pool_cells"] = int(pool_size)
    row["occupancy"] = float(counts.sum() / ctype.shape[0])

    n_hsc = int(host_counts[spec.hsc_index] + graft_counts[spec.hsc_index])
    row["hsc_chimerism"] = _safe_ratio(graft_counts[spec.hsc_index], n_hsc)
    row["hsc_transduced_fraction"] = _safe_ratio(hsc_transduced, n_hsc)
    row["hsc_vcn"] = _safe_ratio(hsc_copies, n_hsc)

    _lineage_readouts(row, spec, mature, baseline_mature)

    alive, shannon, top = diversity(clone_cells)
    row["clones_alive"] = alive
    row["hsc_clones_alive"] = int(np.count_nonzero(hsc_clone_cells))
    row["shannon_diversity"] = shannon
    row["top_clone_share"] = top
    row.update(factor_level(spec, mature, conc_iu_dl))
    return row


def _lineage_readouts(row: dict, spec: ReadoutSpec, mature: np.ndarray, baseline_mature) -> None:
    """The mature-lineage columns of a record (from the tally, not the lattice)."""
    for lin, name in enumerate(spec.lineage_names):
        m = mature[lin]
        row[f"{name}_cells"] = float(m[tally.CELLS])
        row[f"{name}_chimerism"] = _safe_ratio(m[tally.GRAFT_CELLS], m[tally.CELLS])
        row[f"{name}_transduced_fraction"] = _safe_ratio(m[tally.TRANSDUCED_CELLS], m[tally.CELLS])
        row[f"{name}_vcn"] = _safe_ratio(m[tally.VECTOR_COPIES], m[tally.CELLS])
        if baseline_mature is not None:
            row[f"{name}_relative"] = _safe_ratio(m[tally.CELLS], baseline_mature[lin, tally.CELLS])
    for column, lin, per_cell in spec.counts:  # blood counts, in clinical units
        row[column] = float(mature[lin, tally.CELLS]) * per_cell


def clone_table(spec: ReadoutSpec, ctype: np.ndarray, flags: np.ndarray, clone: np.ndarray,
                clone_vcn: np.ndarray, clone_infusion: np.ndarray):
    """Clone sizes at the end of a run: one row per graft clone still on the lattice."""
    import pandas as pd

    graft = (ctype != EMPTY) & ((flags & GRAFT) != 0)
    n_ids = max(int(clone.max(initial=0)) + 1, len(clone_vcn))
    cols = {"clone_id": np.arange(n_ids)}
    total = np.bincount(clone[graft], minlength=n_ids)
    for t, name in enumerate(spec.type_names):
        cols[f"{name}_cells"] = np.bincount(clone[graft & (ctype == t)], minlength=n_ids)
    cols["lattice_cells"] = total
    table = pd.DataFrame(cols)
    table["vcn"] = np.pad(clone_vcn, (0, n_ids - len(clone_vcn)))[table["clone_id"]]
    table["infusion"] = np.pad(clone_infusion, (0, n_ids - len(clone_infusion)),
                               constant_values=-1)[table["clone_id"]]
    table = table[(table["clone_id"] > 0) & (table["lattice_cells"] > 0)].copy()
    table["share"] = table["lattice_cells"] / max(int(table["lattice_cells"].sum()), 1)
    return table.sort_values(["lattice_cells", "clone_id"], ascending=[False, True]).reset_index(drop=True)


class GraftClones:
    """The clones of a run: every infused cell founds its own; clone 0 is the host.

    Holds each clone's vector copies and infusion, for :func:`clone_table`;
    both engines keep theirs in one.
    """

    def __init__(self) -> None:
        self._vcn = [np.zeros(1, dtype=np.uint8)]  # clone 0 = host
        self._infusion = [np.full(1, -1, dtype=np.int64)]
        self.next_id = 1

    def add(self, vcn: np.ndarray, infusion: int) -> np.ndarray:
        """New clones, one per cell of infusion ``infusion`` with vector copies ``vcn``; return their ids."""
        n = vcn.size
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int32)
        self.next_id += n
        self._vcn.append(vcn.copy())
        self._infusion.append(np.full(n, infusion, dtype=np.int64))
        return ids

    def table(self, spec: ReadoutSpec, ctype: np.ndarray, flags: np.ndarray, clone: np.ndarray):
        """:func:`clone_table` of the lattice arrays given."""
        return clone_table(spec, ctype, flags, clone, np.concatenate(self._vcn),
                           np.concatenate(self._infusion))


def rolling_mean(days: np.ndarray, values: np.ndarray, window_days: float) -> np.ndarray:
    """Trailing mean of ``values`` over the records within ``window_days`` of each day."""
    days = np.asarray(days, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
    start = np.searchsorted(days, days - window_days, side="right")
    end = np.arange(1, days.size + 1)
    return (csum[end] - csum[start]) / (end - start)


def threshold_day(days: np.ndarray, levels: np.ndarray, threshold: float,
                  window_days: float = THRESHOLD_WINDOW_DAYS) -> float:
    """First day from which the level, averaged over ``window_days``, stays >= ``threshold``.

    Daily levels fluctuate with the clonal output of a finite marrow sample,
    as measured levels do between visits; a trailing 28-day mean asks whether
    the patient is *held* above the threshold. NaN if that never happens.
    """
    days = np.asarray(days)
    if days.size == 0:
        return float("nan")
    above = rolling_mean(days, levels, window_days) >= threshold
    if not above[-1]:
        return float("nan")
    below = np.flatnonzero(~above)
    first = 0 if below.size == 0 else below[-1] + 1
    return float(days[first])


def first_day_at_or_above(days: np.ndarray, levels: np.ndarray, threshold: float) -> float:
    """First recorded day with the level at or above ``threshold`` (NaN if none)."""
    hit = np.flatnonzero(np.asarray(levels) >= threshold)
    return float(np.asarray(days)[hit[0]]) if hit.size else float("nan")


@dataclass(frozen=True)
class CountWatch:
    """When a record's blood counts are low enough that the next record must be a day later."""

    anc_below: float
    platelets_below: float

    @classmethod
    def from_experiment(cls, exp) -> CountWatch:
        bc = exp.blood_counts
        return cls(bc.daily_below_anc_1e9_per_L, bc.daily_below_platelets_1e9_per_L)

    def low(self, row: dict) -> bool:
        return (row.get("anc_1e9_per_L", np.inf) < self.anc_below
                or row.get("platelets_1e9_per_L", np.inf) < self.platelets_below)


def calendar_days(days: np.ndarray) -> np.ndarray:
    """The calendar day of each record (records fall on whole steps; a day is [d, d + 1))."""
    return np.floor(np.asarray(days, dtype=np.float64) + 1e-6)


def daily_series(days: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per calendar day: the first record of each day (records sooner than daily are dropped)."""
    cal = calendar_days(days)
    first = np.concatenate([[True], cal[1:] != cal[:-1]]) if cal.size else np.zeros(0, dtype=bool)
    return cal[first], np.asarray(counts, dtype=np.float64)[first]


def _daily_runs(days: np.ndarray) -> np.ndarray:
    """``gap[i]``: True where record i + 1 is on the calendar day after record i's."""
    return np.diff(calendar_days(days)) == 1.0


def engraftment_day(days: np.ndarray, counts: np.ndarray, level: float, consecutive: int,
                    start_day: float = 0.0, infusion_day: float = 0.0) -> tuple[float | None, bool]:
    """Engraftment: the first of ``consecutive`` daily counts at or above ``level``.

    Counted among the records from ``start_day`` (the first conditioning
    dose) on. Once a count has fallen below the level, engraftment is the
    first day, on or after that fall and on or after ``infusion_day``, that
    begins ``consecutive`` records one day apart, all at or above the level.
    A count that never falls below the level engrafts on the first such
    day on or after ``infusion_day``. Days are calendar days (the first record
    of each). Returns ``(day, censored)``: ``(None,
    True)`` when follow-up ends first (censored at the last record).
    """
    days, counts = daily_series(days, counts)
    keep = days >= start_day - 1e-9
    days, counts = days[keep], counts[keep]
    if days.size == 0:
        return None, True
    ok = counts >= level
    below = np.flatnonzero(~ok)
    earliest = infusion_day if below.size == 0 else max(infusion_day, days[below[0]])
    daily = _daily_runs(days)
    for i in range(days.size - consecutive + 1):
        if days[i] < earliest - 1e-9:
            continue
        if ok[i: i + consecutive].all() and daily[i: i + consecutive - 1].all():
            return float(days[i]), False
    return None, True


def days_below(days: np.ndarray, counts: np.ndarray, level: float, start_day: float = 0.0) -> int:
    """Calendar days with a count below ``level`` from ``start_day`` on (records are daily while counts
    are low; of records sooner than daily, the first of each day counts)."""
    days, counts = daily_series(days, counts)
    return int(np.count_nonzero((counts < level) & (days >= start_day - 1e-9)))


def nadir(days: np.ndarray, counts: np.ndarray, start_day: float = 0.0) -> tuple[float | None, float | None]:
    """The lowest count from ``start_day`` on and its (first) day."""
    days = np.asarray(days, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    keep = (days >= start_day - 1e-9) & np.isfinite(counts)
    if not keep.any():
        return None, None
    d, c = days[keep], counts[keep]
    i = int(np.argmin(c))
    return float(c[i]), float(d[i])


def clinical_readouts(timeseries, spec: ReadoutSpec) -> dict:
    """Engraftment days, cytopenia durations and nadirs (see :data:`CLINICAL_KEYS`)."""
    out: dict = dict.fromkeys(CLINICAL_KEYS)
    if not spec.counts or "anc_1e9_per_L" not in timeseries:
        return out
    days = timeseries["day"].to_numpy(dtype=np.float64)
    start = spec.conditioning_start_day
    for prefix, column, level, short in (
            ("neutrophil", "anc_1e9_per_L", spec.neutrophil_level, "anc"),
            ("platelet", "platelets_1e9_per_L", spec.platelet_level, "platelet")):
        values = timeseries[column].to_numpy(dtype=np.float64)
        day, censored = engraftment_day(days, values, level, spec.engraftment_days, start, spec.infusion_day)
        out[f"{prefix}_engraftment_day"] = day
        out[f"{prefix}_engraftment_censored"] = censored
        low, low_day = nadir(days, values, start)
        out[f"{short}_nadir"] = low
        out[f"{short}_nadir_day"] = low_day
    out["days_anc_below_500"] = days_below(days, timeseries["anc_1e9_per_L"].to_numpy(), spec.neutrophil_level,
                                           start)
    out["days_platelets_below_20"] = days_below(days, timeseries["platelets_1e9_per_L"].to_numpy(),
                                                spec.platelet_level, start)
    return out


def summarize(timeseries, spec: ReadoutSpec) -> dict:
    """End-of-run summary from the time-series table (a pandas DataFrame)."""
    last = timeseries.iloc[-1]
    days = timeseries["day"].to_numpy()
    out = {
        "final_day": float(last["day"]),
        "final_factor_iu_dl": float(last["factor_iu_dl"]),
        "final_severity": str(last["severity"]),
        "threshold_iu_dl": spec.threshold_iu_dl,
        "threshold_day": threshold_day(days, timeseries["factor_iu_dl"].to_numpy(), spec.threshold_iu_dl),
        "first_threshold_day": first_day_at_or_above(days, timeseries["factor_iu_dl"].to_numpy(),
                                                     spec.threshold_iu_dl),
        "mean_factor_last_year_iu_dl": float(
            timeseries["factor_iu_dl"][timeseries["day"] > last["day"] - 365].mean()),
        "final_hsc_chimerism": float(last["hsc_chimerism"]),
        "final_hsc_vcn": float(last["hsc_vcn"]),
        "final_clones_alive": int(last["clones_alive"]),
        "final_shannon_diversity": float(last["shannon_diversity"]),
        "final_top_clone_share": float(last["top_clone_share"]),
        "final_joint_bleeds_per_year": float(last["joint_bleeds_per_year"]),
    }
    out.update(clinical_readouts(timeseries, spec))
    for name in spec.lineage_names:
        out[f"final_{name}_chimerism"] = float(last[f"{name}_chimerism"])
    if "platelet_factor_iu_per_1e8" in timeseries:
        out["final_platelet_factor_iu_per_1e8"] = float(last["platelet_factor_iu_per_1e8"])
    return out
