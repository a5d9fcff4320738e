"""Batch experiments: sweeps and replicates from YAML, local processes or Dask, resumable."""

from engraft.sweep.runner import SweepOutcome, collect, run_sweep
from engraft.sweep.spec import Sweep, load_sweep, parse_sweep, run_seeds

__all__ = ["Sweep", "SweepOutcome", "collect", "load_sweep", "parse_sweep", "run_seeds", "run_sweep"]
