"""Hand-sized lattices for rule tests: a Simulation with a cleared, hand-set state."""

from __future__ import annotations

import numpy as np

from engraft import load_config
from engraft.lattice import EMPTY, GRAFT, QUIESCENT
from engraft.simulation import Simulation
from tests.conftest import CONFIGS

#: every rate of the tiny config set to zero, so a test switches on only what it checks
QUIET = [
    "conditioning=null", "infusions=[]", "time.burn_in_days=0",
    "cell_types.HSC.activation_rate=0", "cell_types.HSC.division_rate=0",
    "cell_types.HSC.apoptosis_rate=0", "circulation.egress_rate=0",
    *[f"cell_types.{t}.{r}=0" for t in ("MPP", "GMP", "MkP", "EP", "CLP")
      for r in ("division_rate", "apoptosis_rate")],
]


#: the kernel quiet_sim runs (tests/test_rules.py runs each rule test on both)
KERNEL = "sequential"


def quiet_sim(*overrides: str, seed: int = 0, kernel: str | None = None) -> Simulation:
    """A tiny-config simulation with all rates zero (plus ``overrides``) and an empty lattice,
    on ``kernel`` (default :data:`KERNEL`)."""
    exp = load_config(CONFIGS / "tiny.yaml", [*QUIET, *overrides])
    sim = Simulation(exp, seed=seed, kernel=kernel or KERNEL)
    clear(sim)
    sim.burn_in()
    return sim


def clear(sim: Simulation) -> None:
    s = sim.state
    s.ctype[:] = EMPTY
    s.flags[:] = 0
    s.vcn[:] = 0
    s.divs[:] = 0
    s.clone[:] = 0
    s.affinity[:] = 0
    sim.pool.n[0] = 0
    sim.recount()


def put(sim: Simulation, sites, type_name: str, *, graft=False, quiescent=False, vcn=0, divs=None,
        clone=0, affinity=1.0) -> None:
    """Place cells of one type on ``sites`` (an index or an array of indices)."""
    names = sim.exp.type_names
    t = names.index(type_name)
    s = sim.state
    sites = np.atleast_1d(sites)
    s.ctype[sites] = t
    s.flags[sites] = (GRAFT if graft else 0) | (QUIESCENT if quiescent else 0)
    s.vcn[sites] = vcn
    s.divs[sites] = sim.rules.max_divisions[t] if divs is None else divs
    s.clone[sites] = clone
    s.affinity[sites] = affinity
    sim.recount()


def site(sim: Simulation, x: int, y: int) -> int:
    return x + sim.exp.lattice.size * y
