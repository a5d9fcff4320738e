"""Scales and doses: config-level arithmetic that both engines share.

Every lattice cell stands for a number of body cells (its *scale*, per cell
type: body HSCs per niche site, body progenitors per other site; see
``MarrowConfig``). From the scales follow what the clone read-outs mean
(:func:`scale_notes`) and how many lattice cells of each type an infusion
puts into the blood (:func:`expected_infused_lattice_cells`; the draw of
them, :func:`draw_infusion`). Nothing here steps a marrow: the kernel
(:class:`engraft.simulation.Simulation`) and the Mesa reference model
(:class:`engraft.reference.ReferenceModel`) both call it, so a dose means the
same in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engraft.config.load import ConfigError
from engraft.config.schema import Experiment, InfusionConfig


def niche_site_count(exp: Experiment) -> int:
    return int(round(exp.lattice.niche_fraction * exp.lattice.n_sites))


def scales(exp: Experiment) -> dict[str, float]:
    """Body cells per lattice cell, per cell type (see MarrowConfig)."""
    n_niche = niche_site_count(exp)
    n_other = exp.lattice.n_sites - n_niche
    hsc_scale = exp.marrow.hsc_count / n_niche if n_niche else math.inf
    prog_scale = exp.marrow.progenitor_count / n_other if n_other else math.inf
    return {name: hsc_scale if ct.kind == "hsc" else prog_scale for name, ct in exp.cell_types.items()}


#: body HSCs per lattice HSC up to which clone read-outs (clones alive, Shannon diversity,
#: largest clone) are those of a body-sized pool: each lattice clone is then at most 1.5
#: body clones. Above it they describe the lattice sample (a run says so).
BODY_EQUIVALENT_HSC_SCALE = 1.5


def hsc_scale(exp: Experiment) -> float:
    """Body HSCs per lattice HSC."""
    return scales(exp)[exp.hsc_type]


def lattice_size_for_hsc_scale(exp: Experiment, limit: float = BODY_EQUIVALENT_HSC_SCALE) -> int:
    """The smallest lattice.size (same dims and niche fraction) at which the HSC scale is <= limit."""
    lat = exp.lattice
    if lat.niche_fraction == 0:
        return lat.size
    size = max(3, math.ceil((exp.marrow.hsc_count / limit / lat.niche_fraction) ** (1.0 / lat.dims)) - 1)
    while exp.marrow.hsc_count / max(1, round(lat.niche_fraction * size**lat.dims)) > limit:
        size += 1
    return size


def scale_notes(exp: Experiment) -> dict:
    """What the HSC scale means for the clone read-outs (summary and provenance)."""
    sc = hsc_scale(exp)
    body = sc <= BODY_EQUIVALENT_HSC_SCALE
    note = None
    if not body:
        note = (f"HSC scale {sc:.3g} body HSCs per lattice HSC (above {BODY_EQUIVALENT_HSC_SCALE:g}): clone "
                f"counts, Shannon diversity and the largest clone describe the lattice sample, not a "
                f"body-sized HSC pool; lattice.size >= {lattice_size_for_hsc_scale(exp)} gives body-equivalent "
                f"clones")
    return {"hsc_scale": sc, "clone_readouts_body_equivalent": body, "hsc_scale_warning": note}


def calibration_notes(exp: Experiment) -> dict:
    """Whether the run's lattice dimension is the one its parameter set was calibrated on (summary
    and provenance): a warning where ``calibration.dims`` is stated and differs; and the set's own
    note of what its calibration does not reach (``calibration.note``)."""
    fitted = exp.calibration.dims
    note = None
    if fitted is not None and fitted != exp.lattice.dims:
        from engraft.lattice import neighbour_offsets

        hood = exp.lattice.neighbourhood
        here, there = (len(neighbour_offsets(d, hood)) for d in (exp.lattice.dims, fitted))
        note = (f"the parameter set was calibrated on a {fitted}D lattice (calibration.dims) and this run is "
                f"{exp.lattice.dims}D, where a site has {here} neighbours instead "
                f"of {there}: its whole-body outputs, blood counts and factor levels are not "
                "calibrated (docs/model.md sec. 2); refit them (scripts/recalibrate.py) before reading them")
    return {"calibrated_dims": fitted, "calibration_warning": note, "calibration_note": exp.calibration.note}


def expected_infused_lattice_cells(exp: Experiment, infusion: InfusionConfig) -> dict[str, float]:
    """Mean lattice cells of each type that an infusion puts into the blood."""
    sc = scales(exp)
    body = infusion.dose_per_kg * exp.patient.weight_kg * infusion.homing
    return {name: body * frac / sc[name] for name, frac in infusion.composition.items() if frac > 0}


#: bytes per infused lattice cell while it is drawn and put in the blood pool (the pool's 8 bytes of
#: cell and 4 of visit order, and the draw's temporary arrays of types, copies and clones: an upper estimate)
INFUSED_BYTES_PER_CELL = 48


def check_infusions(exp: Experiment, limit_fraction: float = 0.8) -> None:
    """A dose that would put no cell of a type on the lattice is an error, with the fix; so is one whose
    cells, with the rest of the run (:func:`engraft.config.load.estimate_memory_bytes`), would not fit
    in ``limit_fraction`` of memory, with the estimate."""
    from engraft.config.load import available_memory_bytes, estimate_memory_bytes

    expected = [expected_infused_lattice_cells(exp, inf) for inf in exp.infusions]
    cells = [sum(e.values()) for e in expected]
    if cells:
        need = estimate_memory_bytes(exp) + sum(cells) * INFUSED_BYTES_PER_CELL
        have = available_memory_bytes()
        if need > limit_fraction * have:
            i = max(range(len(cells)), key=cells.__getitem__)
            size = f"{need / 2**30:.1f} GiB" if need < 2**70 else f"{need:.2g} bytes"
            raise ConfigError(
                f"infusions[{i}].dose_per_kg: {exp.infusions[i].dose_per_kg:g} puts about {cells[i]:.3g} cells into "
                f"the blood of the {exp.lattice.n_sites:,}-site lattice (marrow.hsc_count and "
                f"marrow.progenitor_count set how many body cells a lattice cell stands for): the run needs "
                f"about {size}, more than {limit_fraction:.0%} of this machine's {have / 2**30:.1f} GiB; check "
                f"the dose and the marrow counts")
    for i, per_type in enumerate(expected):
        for name, mean in per_type.items():
            if mean >= 1.0:
                continue
            if mean == 0.0:  # an infinite scale: no sites of the kind this type needs
                raise ConfigError(
                    f"infusions[{i}].composition.{name}: the lattice has no "
                    f"{'niche' if exp.cell_types[name].kind == 'hsc' else 'non-niche'} sites for "
                    f"infused {name} cells; change lattice.niche_fraction ({exp.lattice.niche_fraction:g})"
                )
            needed = exp.lattice.size * (1.0 / mean) ** (1.0 / exp.lattice.dims)
            raise ConfigError(
                f"infusions[{i}].composition.{name}: the dose gives {mean:.3g} lattice {name} cells "
                f"(scale {scales(exp)[name]:.3g} body cells per lattice cell); at least one is "
                f"needed: use lattice.size >= {math.ceil(needed)} or a larger dose"
            )


def sample_vcn(inf: InfusionConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Vector copies of ``n`` transduced cells (each >= 1, capped at 255)."""
    spec = inf.vcn
    if spec.distribution == "categorical":
        copies = np.array(sorted(spec.probabilities), dtype=np.int64)
        p = np.array([spec.probabilities[c] for c in copies])
        return rng.choice(copies, size=n, p=p / p.sum()).astype(np.uint8)
    out = rng.poisson(spec.mean, size=n)
    bad = out == 0
    while bad.any():  # zero-truncated Poisson by rejection
        out[bad] = rng.poisson(spec.mean, size=int(bad.sum()))
        bad = out == 0
    return np.minimum(out, 255).astype(np.uint8)


def stochastic_round(x: float, rng: np.random.Generator) -> int:
    """floor(x) plus one with probability frac(x): unbiased integer for x."""
    base = math.floor(x)
    return int(base + (rng.random() < x - base))


@dataclass(frozen=True)
class InfusedCells:
    """The lattice cells one infusion puts into the blood (:func:`draw_infusion`).

    ``counts``: cells per type name, in the order of the composition;
    ``types``: each cell's type index (int8, grouped as ``counts``);
    ``vcn``: each cell's vector copies (uint8; 0: not transduced).
    """

    counts: dict[str, int]
    types: np.ndarray
    vcn: np.ndarray


def draw_infusion(exp: Experiment, index: int, rng: np.random.Generator) -> InfusedCells:
    """Draw infusion ``index``'s homed cells: how many of each type, and their vector copies.

    Each type's count is its expected count (:func:`expected_infused_lattice_cells`),
    stochastically rounded; each cell is transduced with probability
    ``transduction`` and a transduced cell's copies come from the VCN
    distribution (:func:`sample_vcn`). Both engines draw an infusion with
    this, from their own set-up stream, in this order.
    """
    inf = exp.infusions[index]
    names = exp.type_names
    counts = {name: stochastic_round(mean, rng)
              for name, mean in expected_infused_lattice_cells(exp, inf).items()}
    types = np.concatenate([np.full(c, names.index(name), dtype=np.int8) for name, c in counts.items()]
                           or [np.zeros(0, np.int8)])
    transduced = rng.random(types.size) < inf.transduction
    vcn = np.zeros(types.size, dtype=np.uint8)
    vcn[transduced] = sample_vcn(inf, int(transduced.sum()), rng)
    return InfusedCells(counts=counts, types=types, vcn=vcn)
