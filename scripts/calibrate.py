"""Check a parameter set's steady state against the whole-body figures it cites.

Runs the host marrow alone (no conditioning, no infusion) to steady state and
prints daily mature output, compartment sizes and the HSC pool next to their
reference values, then the factor level the experiment reaches. Use it after
changing rates or amplification factors in ``configs/base/*.yaml``::

    python scripts/calibrate.py configs/hemophilia_a_lentiviral.yaml
    python scripts/calibrate.py configs/mouse_transplant.yaml --days 200
"""

from __future__ import annotations

import argparse

import numpy as np

from engraft import load_config, simulate
from engraft.simulation import Simulation

#: daily output per lineage (Catlin et al., Blood 2011: > 1e11 each of red cells,
#: granulocytes and platelets in an adult human); mouse values from blood counts
#: and lifespans (2 mL blood; 1e9 platelets/mL over 4 days; 1e10 red cells/mL over 40 days).
#: Human platelets: 35e9 per litre of blood a day x 4.9 L = 1.7e11 (Harker, Clin Haematol 1977).
REFERENCE_OUTPUT = {
    "human": {"myeloid": 1e11, "platelets": 1.7e11, "erythroid": 2e11, "lymphoid": 1e10},
    "mouse": {"myeloid": 1e8, "platelets": 5e8, "erythroid": 5e8, "lymphoid": 1e7},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--days", type=float, default=300.0, help="days of steady state to average")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    exp = load_config(args.config, ["conditioning=null", "infusions=[]"])
    species = "mouse" if exp.patient.weight_kg < 1 else "human"
    sim = Simulation(exp, seed=args.seed)
    sim.burn_in()
    exits = sim.advance(int(args.days / exp.time.dt_days))
    inflow = sim.tally_tables.inflow(exits, exp.time.dt_days).mean(axis=0)[:, 0]
    counts = np.bincount(sim.state.ctype[sim.state.ctype >= 0], minlength=len(exp.type_names))
    print(f"{exp.name}: {species} parameter set, {args.days:g} days of steady state")
    print(f"  lattice cells: {dict(zip(exp.type_names, counts.tolist(), strict=False))}")
    niche = len(sim.niche_sites)
    print(f"  HSCs: {counts[0]} on {niche} niche sites = {counts[0] / niche:.0%}; body equivalent "
          f"{counts[0] * exp.marrow.hsc_count / niche:.3g} (marrow.hsc_count {exp.marrow.hsc_count:.3g})")
    print(f"  {'lineage':<10} {'output/day':>12} {'reference':>12} {'ratio':>7} {'cells':>12}")
    for lin, name in enumerate(exp.lineage_names):
        ref = REFERENCE_OUTPUT[species].get(name, float("nan"))
        cells = inflow[lin] * exp.mature[name].lifespan_days
        print(f"  {name:<10} {inflow[lin]:>12.3g} {ref:>12.3g} {inflow[lin] / ref:>7.2f} {cells:>12.3g}")
    full = simulate(load_config(args.config), seed=args.seed).summary
    print(f"  transplant: factor {full['mean_factor_last_year_iu_dl']:.1f} IU/dL (mean of the last year), "
          f"neutrophil engraftment day {full['neutrophil_engraftment_day']}, HSC chimerism {full['final_hsc_chimerism']:.1%}")


if __name__ == "__main__":
    main()
