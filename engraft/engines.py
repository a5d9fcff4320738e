"""Running an experiment on either engine: the one module that knows both.

:mod:`engraft.simulation` (the compiled kernel) and
:mod:`engraft.reference` (the Mesa model) import each other nowhere: both
build on the timeline and the run around it (:mod:`engraft.timeline`), the
tally (:mod:`engraft.tally`) and the scales (:mod:`engraft.scaling`). What
picks between them lives here.
"""

from __future__ import annotations

from engraft.config.schema import Experiment
from engraft.scaling import check_infusions
from engraft.simulation import Simulation
from engraft.timeline import ProgressCallback, Result

__all__ = ["preflight", "simulate"]


def preflight(exp: Experiment) -> None:
    """Every check a run makes before it starts, so ``validate`` and sweeps refuse what ``run`` would.

    Raises
    ------
    ConfigError
        Memory beyond the machine, a dose that gives no lattice cell, a run
        the Mesa engine cannot finish.
    """
    from engraft.config.load import check_memory
    from engraft.reference.model import check_reference_cost

    check_memory(exp)
    check_infusions(exp)
    if exp.engine == "mesa":
        check_reference_cost(exp)


def simulate(exp: Experiment, seed: int | None = None, engine: str | None = None,
             progress: ProgressCallback | None = None, kernel: str | None = None) -> Result:
    """Run one experiment and return its :class:`Result`.

    Parameters
    ----------
    exp : a validated experiment (see :func:`engraft.load_config`).
    seed : overrides ``exp.seed``.
    engine : ``"kernel"`` (compiled, default) or ``"mesa"`` (the reference model);
        defaults to ``exp.engine``.
    progress : called as ``progress(steps_done, steps_total)``.
    kernel : with the kernel engine, ``"sequential"`` (random sequential update,
        the reference dynamics) or ``"parallel"`` (sublattice updates on all
        Numba threads; the same results for any thread count, statistically
        equivalent to the sequential kernel); defaults to ``exp.kernel``.

    The result's config names the engine and kernel that ran, so running it
    again gives the same result.
    """
    engine = engine or exp.engine
    if engine == "kernel":
        return Simulation(exp, seed, kernel=kernel).run(progress)
    if engine == "mesa":
        from engraft.reference import run_reference

        if (kernel or "sequential") != "sequential":
            raise ValueError(f"kernel: the mesa engine has one update order, 'sequential'; got {kernel!r}")
        if exp.engine != "mesa" or exp.kernel != "sequential":
            exp = exp.model_copy(update={"engine": "mesa", "kernel": "sequential"})
        return run_reference(exp, seed, progress)
    raise ValueError(f"engine: must be 'kernel' or 'mesa', got {engine!r}")
