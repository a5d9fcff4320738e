"""Running a cohort: the sweep runner, then the trial read-outs and (optionally) the figures."""

from __future__ import annotations

import os
from pathlib import Path

from engraft.cohort.spec import Cohort, load_cohort
from engraft.sweep.runner import SweepOutcome, run_sweep


def run_cohort(cohort: Cohort | str | os.PathLike, out: str | os.PathLike, *, workers: int | None = None,
               scheduler: str | None = None, dask_local: bool = False, progress=None,
               report: bool = True, figures: bool = True, formats: tuple = ("png",)) -> SweepOutcome:
    """Run every (arm, patient) of a cohort not yet done in ``out``; then write the trial read-outs.

    Parameters
    ----------
    cohort : a :class:`~engraft.cohort.spec.Cohort` or the path of a cohort file.
    out : the cohort directory (a sweep directory: resumed if it holds the same cohort).
    workers, scheduler, dask_local, progress : as for :func:`engraft.sweep.run_sweep`.
    report : write ``trial.json``, ``patients.parquet`` and ``trial_report.md`` (only when every run is done).
    figures : also write the cohort figures into ``out/figures``.
    """
    if not isinstance(cohort, Cohort):
        cohort = load_cohort(cohort)
    outcome = run_sweep(cohort, out, workers=workers, scheduler=scheduler, dask_local=dask_local,
                        progress=progress)
    if report and not outcome.failed:
        from engraft.trial import analyze_cohort

        analyze_cohort(outcome.out)
        if figures:
            from engraft.plots.cohort_figures import plot_cohort

            plot_cohort(Path(outcome.out), None, formats)
    return outcome
