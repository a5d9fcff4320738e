"""Check (and set) the blood-count calibration of a parameter set against clinical figures.

Two parts:

1. **Normal counts.** Runs the host marrow alone to steady state (as
   ``scripts/calibrate.py``) and prints each blood count next to its normal
   value, with the ``blood_fraction`` that would give the normal value
   exactly. ANC and lymphocytes have calibrated fractions (the part of the
   whole-body compartment that a blood count sees is not measured directly);
   platelets and hemoglobin use physiological fractions (two thirds of
   platelets circulate; red cells live in blood) and are printed as checks.
2. **Transplant kinetics.** Runs the experiment with ``--seeds`` seeds on the
   parallel kernel and prints the clinical read-outs (median and range) next
   to their targets: severe neutropenia 7-11 days and severe
   thrombocytopenia 1-7 days (Srivastava et al., N Engl J Med 2025);
   neutrophil engraftment median day 21 (13-38) and platelet engraftment
   median day 42 (19-191) after myeloablative busulfan and lentiviral
   CD34+ gene therapy (ZYNTEGLO SmPC, 45 patients).

Rerun after any change to rates, amplification, maturation, conditioning or
the infused product::

    python scripts/calibrate_counts.py configs/hemophilia_a_lentiviral.yaml --seeds 20
    python scripts/calibrate_counts.py configs/hemophilia_a_lentiviral.yaml --set infusions[0].homing=0.2
"""

from __future__ import annotations

import argparse

import numpy as np

from engraft import load_config
from engraft.readouts import COUNT_COLUMNS, ReadoutSpec
from engraft.simulation import Simulation

#: normal adult values the calibrated fractions aim at (1e9/L; g/dL), by species
NORMAL = {
    # ANC 2.3-8.1e9/L and lymphocytes 1-4e9/L (adult reference ranges, Rodak's Hematology);
    # platelets 150-400e9/L; hemoglobin 13.5-17.5 g/dL (adult men)
    "human": {"anc": 4.0, "lymphocytes": 2.0, "platelets": 250.0, "hemoglobin": 15.0},
    # C57BL/6 mice: neutrophils ~1e9/L, lymphocytes ~7e9/L, platelets ~1000e9/L, Hb ~14 g/dL
    "mouse": {"anc": 1.0, "lymphocytes": 7.0, "platelets": 1000.0, "hemoglobin": 14.0},
}

#: targets of the transplant read-outs: (low, high) of the range, per key
TARGETS = {
    "days_anc_below_500": (7, 11),               # Srivastava et al. 2025
    "days_platelets_below_20": (1, 7),           # Srivastava et al. 2025
    "neutrophil_engraftment_day": (13, 38),      # ZYNTEGLO SmPC: median 21
    "platelet_engraftment_day": (19, 191),       # ZYNTEGLO SmPC: median 42
    "anc_nadir": (None, None),
    "anc_nadir_day": (None, None),
    "platelet_nadir": (None, None),
    "platelet_nadir_day": (None, None),
}


def steady_counts(exp, seed: int, days: float) -> dict[str, float]:
    """Blood counts of the host marrow at steady state, averaged over ``days``."""
    host = exp.model_copy(update={"conditioning": None, "infusions": []})
    sim = Simulation(host, seed=seed)
    sim.burn_in()
    spec = ReadoutSpec.from_experiment(exp)
    rows = []
    steps = max(1, int(round(1.0 / exp.time.dt_days)))
    for _ in range(int(days)):
        sim.advance(steps)
        rows.append({col: float(sim.mature[lin, 0]) * per for col, lin, per in spec.counts})
    return {col: float(np.mean([r[col] for r in rows])) for col in rows[0]}


def transplant_readouts(exp, seeds: list[int]) -> list[dict]:
    from engraft.engines import simulate

    return [simulate(exp, seed=s, kernel="parallel").summary for s in seeds]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, default=5, help="transplant runs (0: normal counts only)")
    parser.add_argument("--root-seed", type=int, default=0)
    parser.add_argument("--days", type=float, default=100.0, help="days of steady state to average")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    exp = load_config(args.config, args.overrides)
    if exp.blood_counts is None:
        raise SystemExit(f"{args.config}: no blood_counts section")
    species = "mouse" if exp.patient.weight_kg < 1 else "human"
    counts = steady_counts(exp, args.root_seed, args.days)
    bc = exp.blood_counts
    print(f"{exp.name}: steady-state blood counts ({species}, {args.days:g} days)")
    print(f"  {'count':<22} {'model':>9} {'normal':>9} {'fraction':>9} {'fraction for normal':>20}")
    for name, column in COUNT_COLUMNS.items():
        frac = getattr(bc, name).blood_fraction
        normal = NORMAL[species][name]
        print(f"  {column:<22} {counts[column]:>9.3g} {normal:>9.3g} {frac:>9.3g} "
              f"{frac * normal / counts[column]:>20.3g}")
    if args.seeds <= 0:
        return
    seeds = np.random.SeedSequence(args.root_seed).generate_state(args.seeds).tolist()
    summaries = transplant_readouts(exp, seeds)
    print(f"transplant read-outs over {len(seeds)} seeds: median [min, max]  (target)")
    for key, (lo, hi) in TARGETS.items():
        values = [s[key] for s in summaries]
        known = np.array([v for v in values if v is not None], dtype=float)
        censored = sum(v is None for v in values)
        text = (f"{np.median(known):.3g} [{known.min():.3g}, {known.max():.3g}]" if known.size else "none")
        target = f"({lo}-{hi})" if lo is not None else ""
        note = f", {censored} not reached" if censored else ""
        print(f"  {key:<28} {text:<26} {target}{note}")
    levels = [s["mean_factor_last_year_iu_dl"] for s in summaries]
    print(f"  {'factor, last year (IU/dL)':<28} {np.median(levels):.3g} [{min(levels):.3g}, {max(levels):.3g}]")


if __name__ == "__main__":
    main()
