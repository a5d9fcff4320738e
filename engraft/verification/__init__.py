"""``engraft verify``: named cases that compare engraft against theory and independent models.

Each case (:data:`engraft.verification.registry.CASES`) runs its simulations
as jobs on the sweep executors, compares the results with analytic theory,
an independent model or another implementation at alpha = 1e-3 (Bonferroni
across the case's comparisons), states the power of every comparison, and
draws a figure. :func:`run_verification` runs them and writes
``report.md``, ``verification.json`` and ``figures/``.

Families (one module each): :mod:`~engraft.verification.plasma`,
:mod:`~engraft.verification.neutral`, :mod:`~engraft.verification.fixation`
(with the independent Gillespie model :mod:`~engraft.verification.gillespie`),
:mod:`~engraft.verification.steady`, :mod:`~engraft.verification.engines`,
:mod:`~engraft.verification.timestep`, :mod:`~engraft.verification.setup`.
"""

from engraft.verification.runner import Verification, run_verification

__all__ = ["Verification", "run_verification"]
