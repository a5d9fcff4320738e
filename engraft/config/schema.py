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
    niche_cluster_count: int | None = Field(
        None, ge=1, description="number of vessel centres (clustered placement only)"
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

    hsc_count: PositiveFloat = Field(..., description="body HSCs that the niche sites represent")
    progenitor_count: PositiveFloat = Field(
        ..., description="body progenitors that the non-niche sites represent"
    )


class TimeConfig(Section):
    """Time stepping (model section 4). All in days."""

    dt_days: PositiveFloat = Field(..., description="time step")
    duration_days: PositiveFloat = Field(..., description="follow-up after day 0 (conditioning)")
    record_interval_days: PositiveFloat = Field(..., description="one time-series row every this many days")
    burn_in_days: NonNegativeFloat = Field(..., description="host-only run before conditioning")
    snapshot_interval_days: PositiveFloat | None = Field(
        None, description="lattice snapshots every this many days (None: first and last only)"
    )
    max_event_probability: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="upper bound on total rate x dt for any cell state; a coarser dt is an error",
    )


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


class ConditioningConfig(Section):
    """Busulfan conditioning (model section 5)."""

    day: float = Field(0.0, description="day of conditioning (0: the transplant day)")
    myeloablation: dict[str, Probability] = Field(
        ..., description="per cell type: probability that a host cell is killed"
    )


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
    weight_kg: PositiveFloat = Field(..., description="body weight (dose and plasma volume scale with it)")
    disease: Literal["hemophilia_a", "hemophilia_b"] = Field(..., description="FVIII or FIX deficiency")


class ReadoutConfig(Section):
    threshold_iu_dl: PositiveFloat = Field(..., description="therapeutic target level")
    recovery_lineage: str = Field(..., description="lineage whose recovery marks engraftment")
    recovery_fraction: Probability = Field(
        ..., description="recovered when the lineage regains this fraction of its pre-conditioning size"
    )
    bleeding: BleedingConfig


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
    circulation: CirculationConfig
    conditioning: ConditioningConfig | None = None
    infusions: list[InfusionConfig] = Field(default_factory=list)
    transgene: TransgeneConfig
    pk: PKConfig
    readouts: ReadoutConfig
    sweep: dict | None = Field(None, description="batch experiments; see engraft.sweep")

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
    if exp.readouts.recovery_lineage not in exp.mature:
        raise ScopedError("readouts.recovery_lineage", exp.readouts.recovery_lineage,
                          f"must name a mature compartment, one of {exp.lineage_names}")
    t = exp.time
    if t.record_interval_days < t.dt_days:
        raise ScopedError("time.record_interval_days", t.record_interval_days,
                          f"must be >= time.dt_days ({t.dt_days:g})")
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
