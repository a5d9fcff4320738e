"""The experiment schema: frozen, typed models of every config section.

Units are in field names or stated per field. Rates are per day, times in days.
Each model rejects unknown keys; cross-field checks that need the whole config
(cell-type names, lineages, dt against rates) live in :func:`Experiment._check`.

Default values here are deliberately few: a config states its biology
explicitly (with a source in a comment), usually by building on a species file
in ``configs/base/``. Defaults are kept only for switches whose default is the
model's documented behaviour (neighbourhood, boundary, placement, ...).
"""

from __future__ import annotations

import json
import math
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engraft.errors import brief

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Rate = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def _numbers_only(annotation) -> bool:
    """True if a field holds numbers only (``int``, ``float``, ``X | None``, ``dict[K, float]``, ...)."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _numbers_only(typing.get_args(annotation)[0])
    if origin is Literal:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_numbers_only(a) for a in args)
    if origin in (list, tuple):
        return all(_numbers_only(a) for a in typing.get_args(annotation) if a is not Ellipsis)
    if origin is dict:
        return _numbers_only(typing.get_args(annotation)[1])
    return False


def _boolean_inside(value, path: str = "") -> tuple[str, Any] | None:
    """The first ``true``/``false`` in a value (a key path suffix and the value), or None."""
    if isinstance(value, bool):
        return path, value
    if isinstance(value, dict):
        for key, item in value.items():
            found = _boolean_inside(key, f"{path}.{key}") or _boolean_inside(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _boolean_inside(item, f"{path}[{i}]")
            if found:
                return found
    return None


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected, numbers finite and never true/false.

    Types are lax where YAML needs it (YAML 1.1 reads ``1.0e6`` as a string,
    which is accepted as the number it spells), but a boolean is never taken
    for a number (pydantic would read ``weight_kg: true`` as 1 kg), and
    ``.inf`` / ``.nan`` are refused everywhere.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data):
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is None or not _numbers_only(field.annotation):
                    continue
                found = _boolean_inside(value)
                if found:
                    suffix, flag = found
                    raise ValueError(f"{name}{suffix}: must be a number, not true or false, got {json.dumps(flag)}")
        return data


class LatticeConfig(Section):
    """The marrow lattice (model section 2)."""

    dims: Literal[2, 3] = Field(2, description="2 (L x L) or 3 (L x L x L)")
    size: int = Field(..., ge=3, le=100_000, description="edge length L, in sites")
    niche_fraction: Probability = Field(..., description="fraction of sites that are niches")
    niche_placement: Literal["random", "clustered"] = Field(
        "random", description="niches scattered at random, or in clusters around vessel centres"
    )
    niche_cluster_size: float | None = Field(
        None, ge=1.0, le=1e6, allow_inf_nan=False,
        description="clustered placement: mean niche sites per vessel cluster; the vessel centres then "
                    "have a fixed density per site (niche_fraction / niche_cluster_size), so the niche "
                    "geometry is the same at every lattice size",
    )
    niche_cluster_count: int | None = Field(
        None, ge=1, description="clustered placement: a fixed number of vessel centres instead of "
                                "niche_cluster_size (the clusters then grow with the lattice)"
    )
    neighbourhood: Literal["moore", "von_neumann"] = Field(
        "moore", description="moore: 8 (2D) / 26 (3D) neighbours; von_neumann: 4 / 6"
    )
    boundary: Literal["periodic", "closed"] = Field(
        "periodic", description="periodic wraps around; closed has edges")

    @model_validator(mode="after")
    def _placement(self) -> LatticeConfig:
        if self.niche_cluster_count is not None and self.niche_placement != "clustered":
            raise ValueError("niche_cluster_count: only used with niche_placement 'clustered'")
        n_niche = round(self.niche_fraction * self.n_sites)
        if self.niche_cluster_count is not None and self.niche_cluster_count > max(n_niche, 1):
            raise ValueError(f"niche_cluster_count: at most the number of niche sites ({n_niche:,} = "
                             f"niche_fraction x {self.n_sites:,} sites), got {self.niche_cluster_count:,}")
        if self.niche_cluster_size is not None and self.niche_placement != "clustered":
            raise ValueError("niche_cluster_size: only used with niche_placement 'clustered'")
        if self.niche_placement == "clustered":
            if self.niche_cluster_size is not None and self.niche_cluster_count is not None:
                raise ValueError("niche_cluster_size: give niche_cluster_size or niche_cluster_count, "
                                 "not both")
            if self.niche_cluster_size is None and self.niche_cluster_count is None:
                raise ValueError("niche_cluster_size: required with niche_placement 'clustered' (mean niche "
                                 "sites per vessel cluster, e.g. 4), unless niche_cluster_count is given")
        return self

    @property
    def n_sites(self) -> int:
        return self.size**self.dims


class MarrowConfig(Section):
    """Whole-body anchors that fix ``scale`` (body cells per lattice cell).

    A single scale cannot serve HSCs (about 1e5 in a human body) and the far
    larger progenitor pool (about 1e9 and more) on one lattice, so the lattice
    holds both at their own scale: ``hsc_count / niche sites`` for the HSC
    kind and ``progenitor_count / non-niche sites`` for progenitors.
    """

    hsc_count: PositiveFloat = Field(..., ge=1.0, description="body HSCs that the niche sites represent")
    progenitor_count: PositiveFloat = Field(
        ..., ge=1.0, description="body progenitors that the non-niche sites represent"
    )


#: the most steps a burn-in or a follow-up may take: 1e9 steps of the human set's 0.25 days are
#: about 680,000 years, so more is a mistyped number, not an experiment (it would run for days)
MAX_STEPS = 1e9


class TimeConfig(Section):
    """Time stepping (model section 4). All in days."""

    dt_days: PositiveFloat = Field(..., description="time step (burn-in and follow-up at most 1e9 steps each)")
    duration_days: PositiveFloat = Field(..., description="follow-up after day 0 (conditioning)")
    record_interval_days: PositiveFloat = Field(..., description="one time-series row every this many days")
    burn_in_days: NonNegativeFloat = Field(..., description="host-only run before conditioning")
    snapshot_interval_days: PositiveFloat | None = Field(
        None, description="lattice snapshots every this many days, at least dt_days (None: first and last only)"
    )
    lattice_record_interval_days: PositiveFloat | None = Field(
        None, description="after time.lattice_record_after_days, the lattice read-outs (cell counts by type "
        "and origin, HSC chimerism and VCN, pool, clones) only at the first record at or after each multiple "
        "of this many days (and the last); the records between keep the tally read-outs (factor level, "
        "bleeding, mature lineages, blood counts) and leave the lattice columns empty. The same trajectory; "
        "None: every record"
    )
    lattice_record_after_days: NonNegativeFloat = Field(
        0.0, description="day after which lattice read-outs follow lattice_record_interval_days"
    )
    max_event_probability: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="upper bound on total rate x dt for any cell state; a coarser dt is an error",
    )
    event_probability: Literal["rate_dt", "first_event"] = Field(
        "rate_dt",
        description="per-step probability that a cell with total event rate R acts: rate_dt, R dt (a cell "
        "that keeps acting, one event per step, then acts at exactly its configured rates, so results "
        "do not depend on dt to first order); first_event, 1 - exp(-R dt) (the exact chance of a first "
        "event in continuous time; with one event per step it slows a repeatedly acting cell by up to "
        "R dt / 2: the only rule before this option, kept to reproduce earlier results)",
    )

    @model_validator(mode="after")
    def _steps(self) -> TimeConfig:
        over = [key for key in ("burn_in_days", "duration_days") if getattr(self, key) / self.dt_days > MAX_STEPS]
        if over:
            steps = (self.burn_in_days + self.duration_days) / self.dt_days
            key = "dt_days" if len(over) == 2 else over[0]  # both too long in steps: the step is too short
            raise ValueError(f"{key}: {self.burn_in_days:g} days of burn-in and {self.duration_days:g} of follow-up "
                             f"at dt_days {self.dt_days:g} make {steps:.3g} steps, more than a run may take "
                             f"({MAX_STEPS:.0e}); check the days and dt_days")
        return self


class CellTypeConfig(Section):
    """One cell type of the hierarchy; the hierarchy itself is data.

    ``kind: hsc`` marks the long-term stem cells (exactly one type), which use
    the niche rules. Every other type is a progenitor: it divides until its
    ``max_divisions`` are spent, its daughters taking types drawn from
    ``differentiation``; a progenitor with no divisions left exits the lattice
    into its ``lineage`` compartment at its division rate, adding
    ``amplification`` mature cells per body cell it represents.
    """

    kind: Literal["hsc", "progenitor"] = Field(..., description="hsc: niche rules (exactly one type)")
    division_rate: Rate = Field(..., description="per day (for an HSC: once active)")
    apoptosis_rate: Rate = Field(..., description="per day")
    # HSC only
    activation_rate: Rate | None = Field(None, description="HSC: quiescent -> active, per day")
    self_renewal: Probability | None = Field(
        None, description="HSC: probability that a division gives a daughter HSC (else an MPP)"
    )
    differentiated_type: str | None = Field(
        None, description="HSC: the type of a non-self-renewing daughter (e.g. MPP)"
    )
    affinity_loss_rate: Rate | None = Field(
        None, description="HSC: off-niche niche-affinity decay, per day (Roeder-Loeffler)"
    )
    affinity_min: Probability | None = Field(
        None, description="HSC: below this affinity an off-niche HSC commits to differentiated_type"
    )
    # progenitor only
    max_divisions: int | None = Field(None, ge=0, le=250, description="progenitor: divisions on the lattice")
    differentiation: dict[str, Probability] | None = Field(
        None, description="progenitor: type of each daughter at division, probabilities sum to 1"
    )
    lineage: str | None = Field(None, description="progenitor: mature compartment it exits to")
    amplification: PositiveFloat | None = Field(
        None, description="mature cells per exiting progenitor (divisions off the lattice)"
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> CellTypeConfig:
        hsc_only = ("activation_rate", "self_renewal", "differentiated_type",
                    "affinity_loss_rate", "affinity_min")
        prog_only = ("max_divisions", "differentiation", "lineage", "amplification")
        own, other = (hsc_only, prog_only) if self.kind == "hsc" else (prog_only, hsc_only)
        for name in other:
            if getattr(self, name) is not None:
                raise ValueError(f"{name}: not a field of kind '{self.kind}'")
        required = own if self.kind == "hsc" else ("max_divisions", "differentiation")
        for name in required:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required for kind '{self.kind}'")
        if self.kind == "progenitor":
            total = sum(self.differentiation.values())
            if not math.isclose(total, 1.0, abs_tol=1e-9):
                raise ValueError(f"differentiation: probabilities must sum to 1, got {total:g}")
            if (self.lineage is None) != (self.amplification is None):
                raise ValueError("lineage and amplification: give both or neither")
        return self


class MatureConfig(Section):
    """A mature-cell compartment (model section 6): not agents, a tally."""

    lifespan_days: PositiveFloat = Field(..., description="mean lifespan (exponential turnover)")


class MaturationConfig(Section):
    """Post-mitotic maturation of one lineage between the lattice and the blood.

    The semi-mechanistic form of Friberg et al. (J Clin Oncol 2002): a chain
    of ``stages`` transit compartments, each left at rate
    ``stages / mean_transit_days``, so that a cohort leaving the lattice
    reaches the end of the chain after an Erlang (gamma) delay with mean
    ``mean_transit_days`` and variance ``mean_transit_days**2 / stages``.
    An optional storage pool (``reserve_days`` > 0: the marrow's reserve of
    mature neutrophils, for instance) then releases cells into the blood at
    rate ``1 / reserve_days``. Maturing and stored cells are post-mitotic:
    conditioning spares them. ``blood_stages`` > 1 makes the lifespan in
    blood senescent (Erlang with the lineage's mean lifespan) instead of
    exponential.
    """

    stages: int = Field(..., ge=1, le=50, description="transit compartments in the chain")
    mean_transit_days: PositiveFloat = Field(
        ..., description="mean time through the whole chain, days (each stage: mean_transit_days / stages)")
    reserve_days: NonNegativeFloat = Field(
        0.0, description="mean residence in a storage pool after the chain, days (0: no storage pool)")
    blood_stages: int = Field(
        1, ge=1, le=50, description="stages of the lifespan in blood (1: random removal, exponential; "
        "more: senescence, an Erlang lifespan with mean mature.<lineage>.lifespan_days)")
    feedback_exponent: float = Field(
        0.0, ge=0.0, le=1.0, description="production feedback (Friberg et al. 2002): after burn-in the "
        "lineage's off-lattice amplification is multiplied by (M0 / M)^exponent, M its cells in blood and M0 "
        "their number at the end of burn-in; 0: none. Friberg's estimate for neutrophils after docetaxel is "
        "0.163. The shipped sets use 0: their count kinetics are fitted without it (docs/model.md sec. 6)")


class CountConfig(Section):
    """One blood count: which compartment it reads and how much of it circulates."""

    lineage: str = Field(..., description="mature compartment the count is read from")
    blood_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        ..., description="fraction of that compartment's cells counted in circulating blood")


class HemoglobinConfig(CountConfig):
    """Hemoglobin from red cells: cells in blood x mean cell hemoglobin / blood volume."""

    hemoglobin_pg_per_cell: PositiveFloat = Field(..., description="mean corpuscular hemoglobin (MCH), pg")


class BloodCountsConfig(Section):
    """Blood counts in clinical units and the engraftment definitions read from them.

    A count is ``cells x blood_fraction / blood volume`` (1e9/L); hemoglobin
    is ``red cells x blood_fraction x MCH / blood volume`` (g/dL). Records
    are daily from the first conditioning day to ``daily_records_until_day``
    and, after it, whenever a record shows the ANC or the platelets below
    their ``daily_below`` level, so that durations and engraftment days are
    counted on daily values whatever ``time.record_interval_days`` says.
    """

    blood_volume_ml_per_kg: PositiveFloat = Field(..., description="total blood volume, mL per kg body weight")
    anc: CountConfig = Field(..., description="absolute neutrophil count (1e9/L)")
    lymphocytes: CountConfig = Field(..., description="lymphocyte count (1e9/L)")
    platelets: CountConfig = Field(..., description="platelet count (1e9/L)")
    hemoglobin: HemoglobinConfig = Field(..., description="hemoglobin (g/dL)")
    neutrophil_engraftment_1e9_per_L: PositiveFloat = Field(
        0.5, description="ANC at or above which a day counts towards neutrophil engraftment")
    platelet_engraftment_1e9_per_L: PositiveFloat = Field(
        20.0, description="platelet count at or above which a day counts towards platelet engraftment")
    engraftment_days: int = Field(3, ge=1, le=30, description="consecutive days at or above the level")
    daily_records_until_day: NonNegativeFloat = Field(
        42.0, description="records are daily from the first conditioning day to this day")
    daily_below_anc_1e9_per_L: PositiveFloat = Field(
        1.5, description="after that, records are daily while the ANC is below this")
    daily_below_platelets_1e9_per_L: PositiveFloat = Field(
        150.0, description="after that, records are daily while the platelets are below this")

    @model_validator(mode="after")
    def _levels(self) -> BloodCountsConfig:
        if self.daily_below_anc_1e9_per_L < self.neutrophil_engraftment_1e9_per_L:
            raise ValueError(f"daily_below_anc_1e9_per_L: must be >= neutrophil_engraftment_1e9_per_L "
                             f"({self.neutrophil_engraftment_1e9_per_L:g}), got {self.daily_below_anc_1e9_per_L:g}")
        if self.daily_below_platelets_1e9_per_L < self.platelet_engraftment_1e9_per_L:
            raise ValueError(f"daily_below_platelets_1e9_per_L: must be >= platelet_engraftment_1e9_per_L "
                             f"({self.platelet_engraftment_1e9_per_L:g}), got "
                             f"{self.daily_below_platelets_1e9_per_L:g}")
        return self


class CirculationConfig(Section):
    """Blood circulation and homing (model section 4)."""

    egress_rate: Rate = Field(..., description="HSCs leaving the marrow, per day")
    lodging_rate: Rate = Field(
        ..., description="per day, for a circulating cell when every target site is empty"
    )
    blood_lifetime_minutes: PositiveFloat = Field(..., description="mean time before death in blood")
    placement: Literal["neighbour", "pool"] = Field(
        "neighbour", description="daughters to a random empty neighbour, or into the blood pool"
    )
    lodging_search: Literal["adaptive", "rejection"] = Field(
        "adaptive", description="how a lodging cell's free site is found, uniformly among the free sites "
        "either way: adaptive, by random trials until they would cost a pass over the candidate sites, then "
        "from a list of the free ones (fast when free sites are scarce); rejection, by random trials only "
        "(the stream of earlier engraft runs, which it reproduces: CHANGELOG). The kernels only: the Mesa "
        "reference draws from its list of free sites")


class ConditioningConfig(Section):
    """Busulfan conditioning (model section 5): one day, or a regimen of several doses.

    With ``day`` (one dose), each host cell on the lattice or in the blood is
    killed with its type's ``myeloablation``. With ``days`` (a regimen, e.g.
    busulfan on days -6 to -3), ``myeloablation`` is the kill of the whole
    course, split into equal fractional kills per dose: a cell present
    throughout survives each of the n doses with probability
    ``(1 - myeloablation) ** (1 / n)``. Cells in maturation transit, in a
    storage pool and in the mature compartments are post-mitotic and spared.
    """

    day: float | None = Field(None, description="day of a single conditioning dose (default 0, the transplant day)")
    days: list[float] | None = Field(
        None, min_length=1, max_length=30,
        description="days of the doses of a regimen (ascending, e.g. [-6, -5, -4, -3]); instead of day")
    myeloablation: dict[str, Probability] = Field(
        ..., description="per cell type: probability that a host cell is killed (by the whole course)"
    )

    @model_validator(mode="after")
    def _schedule(self) -> ConditioningConfig:
        if self.day is not None and self.days is not None:
            raise ValueError("days: give either day (one dose) or days (a regimen), not both")
        if self.days is not None:
            if any(not math.isfinite(d) for d in self.days):
                raise ValueError(f"days: must be finite, got {self.days}")
            if list(self.days) != sorted(set(self.days)):
                raise ValueError(f"days: must be ascending without repeats, got {self.days}")
        return self

    @property
    def dose_days(self) -> list[float]:
        """The days of the doses, ascending."""
        if self.days is not None:
            return list(self.days)
        return [0.0 if self.day is None else float(self.day)]

    def kill_per_dose(self, cell_type: str) -> float:
        """Probability that one dose kills a host cell of ``cell_type``."""
        total = self.myeloablation.get(cell_type, 0.0)
        n = len(self.dose_days)
        return total if n == 1 else 1.0 - (1.0 - total) ** (1.0 / n)


class VCNConfig(Section):
    """Vector copies per transduced cell."""

    distribution: Literal["zero_truncated_poisson", "categorical"] = "zero_truncated_poisson"
    mean: PositiveFloat | None = Field(
        None, description="zero_truncated_poisson: the Poisson parameter lambda (before truncation)"
    )
    probabilities: dict[int, Probability] | None = Field(
        None, description="categorical: copies -> probability, copies in 1..255"
    )

    @model_validator(mode="after")
    def _dist_fields(self) -> VCNConfig:
        if self.distribution == "zero_truncated_poisson":
            if self.mean is None:
                raise ValueError("mean: required for zero_truncated_poisson")
            if self.mean > 50:
                raise ValueError(f"mean: must be <= 50 copies, got {self.mean:g}")
        else:
            if not self.probabilities:
                raise ValueError("probabilities: required for categorical")
            bad = [k for k in self.probabilities if not 1 <= k <= 255]
            if bad:
                raise ValueError(f"probabilities: copy numbers must be in 1..255, got {bad[0]}")
            total = sum(self.probabilities.values())
            if not math.isclose(total, 1.0, abs_tol=1e-9):
                raise ValueError(f"probabilities: must sum to 1, got {total:g}")
        return self


class InfusionConfig(Section):
    """One infusion of the CD34+ product (model section 5)."""

    day: float = Field(0.0, description="day of infusion")
    dose_per_kg: PositiveFloat = Field(..., description="CD34+ cells per kg body weight")
    composition: dict[str, Probability] = Field(
        ..., description="fraction of CD34+ cells of each lattice type; the rest are not modelled"
    )
    homing: Probability = Field(..., description="fraction reaching the marrow circulation")
    transduction: Probability = Field(..., description="fraction of cells carrying the vector")
    vcn: VCNConfig

    @model_validator(mode="after")
    def _composition(self) -> InfusionConfig:
        total = sum(self.composition.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"composition: fractions sum to {total:g}, must be <= 1")
        return self


class FitnessConfig(Section):
    """Competitive effect of the transgene on transduced cells."""

    division_factor: PositiveFloat = Field(1.0, description="multiplies division rates of vector-carrying cells")
    apoptosis_factor: PositiveFloat = Field(1.0, description="multiplies their apoptosis rates")


class TransgeneConfig(Section):
    """The F8/F9 transgene and its expression (model section 6)."""

    factor: Literal["FVIII", "FIX"] = Field(..., description="the transgene product")
    mode: Literal["secreted", "platelet_stored"] = Field(
        ..., description="secreted into plasma, or stored in platelet granules (FVIII)")
    lineages: list[str] = Field(..., min_length=1, description="mature lineages that express")
    expression_per_vcn: PositiveFloat = Field(
        ...,
        description=(
            "secreted: IU per day per 1e9 expressing cells per vector copy; "
            "platelet_stored: IU per 1e8 platelets per vector copy"
        ),
    )
    vcn_response: Literal["linear", "saturating"] = Field(
        "linear", description="expression proportional to copies, or Michaelis-Menten in copies")
    vcn_half_saturation: PositiveFloat | None = Field(
        None, description="saturating: copies at half-maximal expression"
    )
    silencing_rate: Rate = Field(0.0, description="per day, per expressing cell")
    fitness: FitnessConfig = FitnessConfig()

    @model_validator(mode="after")
    def _mode(self) -> TransgeneConfig:
        if self.vcn_response == "saturating" and self.vcn_half_saturation is None:
            raise ValueError("vcn_half_saturation: required for vcn_response 'saturating'")
        if self.mode == "platelet_stored" and self.factor != "FVIII":
            raise ValueError("mode: platelet_stored applies to FVIII only")
        return self


class PKConfig(Section):
    """One-compartment plasma kinetics (model section 6)."""

    half_life_days: PositiveFloat = Field(..., description="plasma half-life of the factor")
    volume_of_distribution_ml_per_kg: PositiveFloat = Field(..., description="volume of distribution")
    baseline_iu_dl: NonNegativeFloat = Field(..., description="endogenous level, IU/dL")


class BleedingConfig(Section):
    """Log-linear joint-bleeding model anchored at 15 IU/dL (see engraft.tally)."""

    joint_bleeds_per_year_at_15: NonNegativeFloat = Field(..., description="expected joint bleeds at 15 IU/dL")
    reduction_per_iu_dl: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        ..., description="fractional fall in bleeding per IU/dL")


class PatientConfig(Section):
    weight_kg: PositiveFloat = Field(..., le=1000.0, description="body weight (dose and plasma volume scale "
                                     "with it)")
    disease: Literal["hemophilia_a", "hemophilia_b"] = Field(..., description="FVIII or FIX deficiency")


class ReadoutConfig(Section):
    threshold_iu_dl: PositiveFloat = Field(..., description="therapeutic target level")
    bleeding: BleedingConfig


class CalibrationConfig(Section):
    """What a parameter set's calibrated numbers were fitted on (docs/model.md sec. 2).

    The amplifications, blood fractions and transgene expression of a
    parameter set are fitted to whole-body figures on a lattice of one
    dimension; a run on the other says that its whole-body numbers are not
    calibrated (a 3D site has 26 neighbours instead of 8: another marrow).
    """

    dims: Literal[2, 3] | None = Field(
        None, description="lattice dimension the parameter set was calibrated on (none: not stated)")
    note: str | None = Field(
        None, max_length=400,
        description="what the calibration does not reach, in one line: printed with each run's summary and recorded")


class Experiment(Section):
    """A whole engraft experiment."""

    name: str = Field("experiment", description="short name, used for output directories")
    description: str = Field("", description="free text")
    seed: int = Field(0, ge=0, lt=2**63, description="random seed (--seed overrides)")
    engine: Literal["kernel", "mesa"] = Field(
        "kernel", description="kernel: compiled; mesa: the readable reference model")
    kernel: Literal["sequential", "parallel"] = Field(
        "sequential", description="engine kernel only. sequential: random sequential update (the reference "
        "dynamics); parallel: sublattice updates on all Numba threads, the same result for any thread count, "
        "the same dynamics in distribution (not the same numbers as sequential)")
    patient: PatientConfig
    lattice: LatticeConfig
    marrow: MarrowConfig
    time: TimeConfig
    cell_types: dict[str, CellTypeConfig] = Field(..., min_length=2)
    mature: dict[str, MatureConfig] = Field(..., min_length=1)
    maturation: dict[str, MaturationConfig] = Field(
        default_factory=dict, description="per lineage: post-mitotic transit before the blood (none: immediate)")
    blood_counts: BloodCountsConfig | None = Field(
        None, description="blood counts in clinical units and engraftment read-outs (none: not reported)")
    circulation: CirculationConfig
    conditioning: ConditioningConfig | None = None
    infusions: list[InfusionConfig] = Field(default_factory=list)
    transgene: TransgeneConfig
    pk: PKConfig
    readouts: ReadoutConfig
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    sweep: dict | None = Field(None, description="batch experiments; see engraft.sweep")
    cohort: dict | None = Field(None, description="virtual patient cohorts; see engraft.cohort")
    sensitivity: dict | None = Field(None, description="global sensitivity designs; see engraft.sensitivity")
    virtual_patient: dict | None = Field(
        None, description="a cohort run's arm, patient index and draws (recorded; the simulation ignores it)")

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        check_experiment(self)
        return self

    # -- derived quantities used by both engines -------------------------------------
    @property
    def type_names(self) -> list[str]:
        return list(self.cell_types)

    @property
    def hsc_type(self) -> str:
        return next(n for n, t in self.cell_types.items() if t.kind == "hsc")

    @property
    def lineage_names(self) -> list[str]:
        return list(self.mature)


class ScopedError(ValueError):
    """A config error raised from a cross-field check, with its key path."""

    def __init__(self, path: str, value, allowed: str):
        self.path, self.value, self.allowed = path, value, allowed
        super().__init__(f"{path}: {allowed}, got {brief(value)}")


def check_experiment(exp: Experiment) -> None:
    """Cross-field checks: engine and kernel agree, names that must exist, one HSC type.

    Whether dt is fine enough for the rates is checked after these, by
    :func:`engraft.rates.check_time_step` (:func:`engraft.config.load.validate`
    runs both): it needs the per-step rate tables, and the schema does not
    import the rules.
    """
    if exp.engine == "mesa" and exp.kernel != "sequential":
        raise ScopedError("kernel", exp.kernel, "must be 'sequential' with engine 'mesa' (the Mesa engine has "
                          "one update order, random sequential; use engine 'kernel' for the parallel kernel)")
    names = exp.type_names
    hsc = [n for n, t in exp.cell_types.items() if t.kind == "hsc"]
    if len(hsc) != 1:
        raise ScopedError("cell_types", sorted(hsc), "exactly one type must have kind 'hsc'")
    if len(names) > 100:
        raise ScopedError("cell_types", len(names), "at most 100 cell types")
    for name, ct in exp.cell_types.items():
        if ct.kind == "hsc":
            target = ct.differentiated_type
            if target not in names or exp.cell_types[target].kind != "progenitor":
                raise ScopedError(
                    f"cell_types.{name}.differentiated_type", target,
                    f"must name a progenitor type, one of {_progenitors(exp)}",
                )
        else:
            for target in ct.differentiation:
                if target not in names or exp.cell_types[target].kind != "progenitor":
                    raise ScopedError(
                        f"cell_types.{name}.differentiation.{target}", target,
                        f"must name a progenitor type, one of {_progenitors(exp)}",
                    )
            if ct.lineage is not None and ct.lineage not in exp.mature:
                raise ScopedError(
                    f"cell_types.{name}.lineage", ct.lineage,
                    f"must name a mature compartment, one of {exp.lineage_names}",
                )
    _check_exits(exp)
    if exp.conditioning is not None:
        for name in exp.conditioning.myeloablation:
            if name not in names:
                raise ScopedError(
                    f"conditioning.myeloablation.{name}", name, f"must be a cell type, one of {names}"
                )
    for i, inf in enumerate(exp.infusions):
        for name in inf.composition:
            if name not in names:
                raise ScopedError(
                    f"infusions[{i}].composition.{name}", name, f"must be a cell type, one of {names}"
                )
        if inf.day < 0 or inf.day > exp.time.duration_days:
            raise ScopedError(
                f"infusions[{i}].day", inf.day,
                f"must be within [0, time.duration_days={exp.time.duration_days:g}]",
            )
    for lin in exp.transgene.lineages:
        if lin not in exp.mature:
            raise ScopedError("transgene.lineages", lin,
                              f"must name a mature compartment, one of {exp.lineage_names}")
    if exp.transgene.mode == "platelet_stored" and len(exp.transgene.lineages) != 1:
        raise ScopedError("transgene.lineages", exp.transgene.lineages,
                          "platelet_stored expression names exactly one (platelet) lineage")
    for lin in exp.maturation:
        if lin not in exp.mature:
            raise ScopedError(f"maturation.{lin}", lin, f"must name a mature compartment, one of {exp.lineage_names}")
    if exp.blood_counts is not None:
        for count in ("anc", "lymphocytes", "platelets", "hemoglobin"):
            lin = getattr(exp.blood_counts, count).lineage
            if lin not in exp.mature:
                raise ScopedError(f"blood_counts.{count}.lineage", lin,
                                  f"must name a mature compartment, one of {exp.lineage_names}")
    if exp.conditioning is not None:
        days = exp.conditioning.dose_days
        if days[0] < -exp.time.burn_in_days or days[-1] > exp.time.duration_days:
            key = "conditioning.days" if exp.conditioning.days is not None else "conditioning.day"
            raise ScopedError(key, days if exp.conditioning.days is not None else days[0],
                              f"must lie within [-time.burn_in_days={-exp.time.burn_in_days:g}, "
                              f"time.duration_days={exp.time.duration_days:g}]")
    t = exp.time
    if t.record_interval_days < t.dt_days:
        raise ScopedError("time.record_interval_days", t.record_interval_days,
                          f"must be >= time.dt_days ({t.dt_days:g})")
    if t.snapshot_interval_days is not None and t.snapshot_interval_days < t.dt_days:  # at most one a step
        raise ScopedError("time.snapshot_interval_days", t.snapshot_interval_days,
                          f"must be >= time.dt_days ({t.dt_days:g}) or null")
    if t.duration_days < t.dt_days:
        raise ScopedError("time.duration_days", t.duration_days, f"must be >= time.dt_days ({t.dt_days:g})")


def _progenitors(exp: Experiment) -> list[str]:
    return [n for n, t in exp.cell_types.items() if t.kind == "progenitor"]


def _check_exits(exp: Experiment) -> None:
    """Every progenitor must end in a mature compartment or hand its cells on."""
    for name, ct in exp.cell_types.items():
        if ct.kind != "progenitor" or ct.lineage is not None:
            continue
        others = [k for k, p in ct.differentiation.items() if k != name and p > 0]
        if not others:
            raise ScopedError(
                f"cell_types.{name}", name,
                "a progenitor without a lineage must differentiate into another type "
                "(its cells would otherwise never leave the lattice)",
            )
