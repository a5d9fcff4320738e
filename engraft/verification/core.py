"""Cases, jobs and results: the pieces every verification case is made of.

A :class:`Case` says what it compares and with which theory, lists the
simulations it needs as :class:`Job` objects (plain data: a function named by
``module:function``, its parameters and its seeds), and, once their results
are back, makes its :class:`~engraft.verification.stats.Comparison` objects
and its figure. Jobs run on the sweep executors (this process, local
processes or Dask), in any order and on any worker; each job's seeds and
parameters are fixed by the case and the tier alone, and the results are put
back in job order, so a case gives the same numbers for any worker count.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from engraft.verification.stats import ALPHA, Comparison, finalize

TIERS = ("quick", "full")


@dataclass(frozen=True)
class Job:
    """One share of a case's simulations, cheap to send to a worker.

    Attributes
    ----------
    run_id : ``<case>-<index>``, unique within a verification run.
    fn : ``module:function`` called as ``function(params, seeds, fault)``.
    params : plain data for the function.
    seeds : the seeds of the replicates this job runs.
    fault : the name of a deliberate fault to inject, or None.
    """

    run_id: str
    fn: str
    params: dict
    seeds: tuple[int, ...] = ()
    fault: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """What a worker sends back: the job's value (plain data) or its error, and its cost."""

    run_id: str
    status: str
    value: object = None
    error: str | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0


def run_job(job: Job) -> JobOutcome:
    """Run one job in this process (the function the executors map); errors are returned, not raised."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        import numba

        numba.set_num_threads(1)  # one job per core; results do not depend on threads
        module, name = job.fn.split(":")
        fn = getattr(importlib.import_module(module), name)
        value = fn(job.params, job.seeds, job.fault)
        return JobOutcome(job.run_id, "done", value, wall_seconds=time.perf_counter() - start,
                          cpu_seconds=time.process_time() - cpu)
    except Exception as err:  # the case is reported as failed with the error
        return JobOutcome(job.run_id, "failed", error=f"{type(err).__name__}: {err}\n{traceback.format_exc()}",
                          wall_seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)


def job_lost(job: Job, message: str) -> JobOutcome:
    """The outcome of a job whose worker died every time it was tried."""
    return JobOutcome(job.run_id, "failed", error=message)


def seeds(case: str, n: int, stream: int = 0) -> tuple[int, ...]:
    """``n`` seeds of a case's stream ``stream``: fixed by the case name, the stream and the index."""
    base = (zlib.crc32(f"{case}/{stream}".encode()) & 0x7FFFFFFF) * 1_000_000
    return tuple(base + i for i in range(n))


def chunked(case: str, fn: str, params: dict, all_seeds: tuple[int, ...], per_job: int,
            fault: str | None, tag: str) -> list[Job]:
    """Jobs of ``per_job`` seeds each (the split depends on the tier only, never on the workers)."""
    return [Job(f"{case}-{tag}-{i // per_job:04d}", fn, params, tuple(all_seeds[i:i + per_job]), fault)
            for i in range(0, len(all_seeds), per_job)]


@dataclass
class CaseResult:
    """A case's verdict, numbers and figure."""

    name: str
    title: str
    tier: str
    compared: str
    theory: str
    comparisons: list[Comparison]
    tables: list[tuple[str, list[str], list[list]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figure: str | None = None
    error: str | None = None
    fault: str | None = None
    replicates: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    #: what the figure is drawn from (not written to the JSON)
    plot_data: dict = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.comparisons)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "title": self.title, "tier": self.tier, "passed": self.passed,
            "fault": self.fault, "compared": self.compared, "theory": self.theory,
            "replicates": self.replicates, "wall_seconds": self.wall_seconds,
            "cpu_seconds_in_jobs": self.cpu_seconds, "error": self.error, "figure": self.figure,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "tables": [{"title": t, "columns": cols, "rows": rows} for t, cols, rows in self.tables],
            "notes": self.notes,
        }


class Case:
    """A named verification case. Subclasses set the class attributes and the three methods."""

    name: str = ""
    family: str = ""
    title: str = ""
    #: what is compared, in a sentence or two (the report's first paragraph)
    compared: str = ""
    #: the theory or reference and where the tolerance comes from
    theory: str = ""
    #: fault name -> what it changes in the simulated model (the theory side is left alone)
    faults: dict[str, str] = {}

    def jobs(self, tier: str, fault: str | None) -> list[Job]:
        raise NotImplementedError

    def evaluate(self, tier: str, values: list, fault: str | None) -> CaseResult:
        """Comparisons from the jobs' values (in job order); call :meth:`result` to build the result."""
        raise NotImplementedError

    def figure(self, result: CaseResult, data: dict, path: str) -> None:
        """Draw the case's figure from ``data`` (what :meth:`evaluate` kept) into ``path``."""
        raise NotImplementedError

    # helpers
    def result(self, tier: str, comparisons: list[Comparison], fault: str | None, **kw) -> CaseResult:
        finalize(comparisons, ALPHA)
        return CaseResult(self.name, self.title, tier, self.compared, self.theory, comparisons, fault=fault, **kw)


def flatten(values: list) -> list:
    """The per-seed records of jobs that each return a list of them, in job order."""
    return [row for part in values for row in part]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


FigureFn = Callable[[CaseResult, dict, str], None]


#: the repository root (configs/ and tests/data/configs/ hold the configs the cases run)
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def repo_file(*parts: str):
    """A config file of the repository; a clear error where engraft is not run from a clone."""
    from engraft.errors import UserError

    path = ROOT.joinpath(*parts)
    if not path.is_file():
        raise UserError(f"{path}: not found; engraft verify runs the configs of the repository "
                        "(configs/, tests/data/configs/): run it from a clone with an editable install")
    return path


def load(parts: tuple[str, ...], overrides=()):
    """A validated experiment from a repository config and ``--set``-style overrides."""
    from engraft import load_config

    return load_config(repo_file(*parts), list(overrides))
