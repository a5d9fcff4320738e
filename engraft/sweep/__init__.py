"""Batch experiments: sweeps and replicates from YAML, on local processes or Dask, resumable.

>>> from engraft.sweep import load_sweep, run_sweep      # doctest: +SKIP
>>> outcome = run_sweep(load_sweep("configs/sweep_dose_conditioning.yaml"), "results/dose", workers=2)

``spec`` reads and validates the ``sweep:`` section and lists the runs with
their seeds; ``executors`` runs them (this process, a local process pool, a
Dask cluster); ``runner`` owns the sweep directory (resume, refusal of a
changed sweep, failures); ``aggregate`` builds the one-row-per-run table.
"""

from engraft.sweep.aggregate import SweepDirError, collect
from engraft.sweep.runner import SweepOutcome, SweepProgress, run_sweep
from engraft.sweep.spec import Run, Sweep, load_sweep, parse_sweep, run_seeds

__all__ = ["Run", "Sweep", "SweepDirError", "SweepOutcome", "SweepProgress", "collect", "load_sweep",
           "parse_sweep", "run_seeds", "run_sweep"]
