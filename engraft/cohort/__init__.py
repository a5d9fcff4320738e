"""Virtual patient cohorts: per-patient draws on the sweep machinery, trial read-outs, figures.

>>> from engraft.cohort import load_cohort, run_cohort          # doctest: +SKIP
>>> outcome = run_cohort(load_cohort("configs/cohort_hemophilia_a.yaml"), "results/cohort", workers=2)

``distributions`` parses and draws one parameter; ``spec`` reads the
``cohort:`` section, draws the patients (Monte Carlo, Latin hypercube or
Sobol, with a Gaussian copula) and lists the runs of every design arm;
``engraft.trial`` turns a finished cohort into trial read-outs.
"""

from engraft.cohort.spec import Cohort, CohortSpec, draw, load_cohort, parse_cohort, patient_seed

__all__ = ["Cohort", "CohortSpec", "draw", "load_cohort", "parse_cohort", "patient_seed", "run_cohort"]


def run_cohort(cohort, out, **kwargs):
    """Run a cohort (see :func:`engraft.sweep.run_sweep` for the options), then write its trial report."""
    from engraft.cohort.run import run_cohort as _run

    return _run(cohort, out, **kwargs)
