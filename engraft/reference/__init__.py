"""The Mesa reference model: engraft's slow, readable oracle for the kernel.

Use :func:`run_reference` (or ``engraft.simulate(exp, engine="mesa")``) on
small lattices to check the compiled kernel, or to read the rules as agent
code (:mod:`engraft.reference.agents`). :func:`reference_cost` estimates what
a run would take; larger runs are refused with a :class:`~engraft.ConfigError`.
"""

from engraft.reference.agents import HSC, MarrowCell, Progenitor
from engraft.reference.model import (
    MAX_AGENT_STEPS,
    MAX_SITES,
    ReferenceCost,
    ReferenceModel,
    check_reference_cost,
    reference_cost,
    run_reference,
)

__all__ = [
    "HSC",
    "MAX_AGENT_STEPS",
    "MAX_SITES",
    "MarrowCell",
    "Progenitor",
    "ReferenceCost",
    "ReferenceModel",
    "check_reference_cost",
    "reference_cost",
    "run_reference",
]
