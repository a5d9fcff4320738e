"""engraft: cell-by-cell simulation of autologous HSC gene therapy for hemophilia."""

from engraft._version import __version__
from engraft.config import ConfigError, Experiment, load_config
from engraft.engines import simulate
from engraft.simulation import Simulation
from engraft.sweep import load_sweep, run_sweep
from engraft.timeline import Result

__all__ = ["ConfigError", "Experiment", "Result", "Simulation", "__version__", "load_config", "load_sweep",
           "run_sweep", "simulate"]
