"""Run verification cases on the sweep executors and write their report.

:func:`run_verification` lists every selected case's jobs, maps
:func:`engraft.verification.core.run_job` over them on an executor of
:mod:`engraft.sweep.executors` (this process, local processes or a Dask
cluster), puts each case's results back in job order, evaluates the cases
and writes the report (:mod:`engraft.verification.report`).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engraft.errors import UserError
from engraft.outputs import OutputError, check_verification_dir, is_verification_dir, stage_dir
from engraft.verification.core import TIERS, CaseResult, job_lost, run_job
from engraft.verification.registry import CASES


@dataclass
class Verification:
    """What a verification run did: the cases' results and its cost."""

    tier: str
    results: list[CaseResult]
    executor: str
    workers: int
    wall_seconds: float
    cpu_seconds: float
    fault: str | None = None
    out: Path | None = None
    command: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def reproduce(self, result: CaseResult) -> str:
        cmd = f"engraft verify --{self.tier} --only {result.name}"
        if result.fault:
            cmd += f" --fault {result.fault}"
        return cmd


def select(names: list[str] | None, fault: str | None) -> list[str]:
    """The cases to run, in report order; unknown names or faults are a one-line error."""
    if names:
        unknown = [n for n in names if n not in CASES]
        if unknown:
            raise UserError(f"--only {unknown[0]}: no such case; cases: {', '.join(CASES)}")
        chosen = [n for n in CASES if n in names]
    else:
        chosen = list(CASES)
    if fault is not None:
        with_fault = [n for n in chosen if fault in CASES[n].faults]
        if not with_fault:
            known = sorted({f for n in chosen for f in CASES[n].faults})
            raise UserError(f"--fault {fault}: no selected case has this fault; faults: {', '.join(known)}")
        chosen = with_fault
    return chosen


def run_verification(names: list[str] | None = None, tier: str = "quick", out: str | os.PathLike | None = None,
                     workers: int | None = None, scheduler: str | None = None, fault: str | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     command: list[str] | None = None) -> Verification:
    """Run the named cases (default: all) at a tier and, with ``out``, write the report there.

    Parameters
    ----------
    names : case names (see :data:`engraft.verification.registry.CASES`).
    tier : ``"quick"`` (minutes) or ``"full"``.
    out : directory for ``report.md``, ``verification.json`` and ``figures/``: a new path, an empty
        directory or an earlier verification directory (replaced); anything else is refused.
    workers, scheduler : as for sweeps: local processes, or a Dask scheduler's address.
    fault : inject this deliberate fault into the simulated model of every case that defines it
        (only those cases run); such a run is expected to FAIL.
    progress : called as ``progress(jobs_done, jobs_total)``.
    """
    from engraft.sweep.runner import choose_executor

    if tier not in TIERS:
        raise UserError(f"tier: must be one of {', '.join(TIERS)}, got {tier!r}")
    chosen = select(names, fault)
    if out is not None:
        check_verification_dir(out)
    jobs = {name: CASES[name].jobs(tier, fault if fault in CASES[name].faults else None) for name in chosen}
    every = [job for name in chosen for job in jobs[name]]
    start, cpu0 = time.perf_counter(), time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    outcomes = {}
    with choose_executor(workers, scheduler) as executor:
        description, n_workers = executor.description, executor.workers
        for outcome in executor.map(every, fn=run_job, on_lost=job_lost):
            outcomes[outcome.run_id] = outcome
            if progress:
                progress(len(outcomes), len(every))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    results = []
    for name in chosen:
        case = CASES[name]
        case_fault = fault if fault in case.faults else None
        mine = [outcomes[j.run_id] for j in jobs[name]]
        failed = [o for o in mine if o.status != "done"]
        if failed:
            result = CaseResult(name, case.title, tier, case.compared, case.theory, [], fault=case_fault,
                                error=f"{failed[0].run_id}: {failed[0].error}")
        else:
            try:
                result = case.evaluate(tier, [o.value for o in mine], case_fault)
            except Exception as err:  # a case that cannot be evaluated fails, with its reason
                import traceback

                result = CaseResult(name, case.title, tier, case.compared, case.theory, [], fault=case_fault,
                                    error=f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        result.wall_seconds = sum(o.wall_seconds for o in mine)
        result.cpu_seconds = sum(o.cpu_seconds for o in mine)
        results.append(result)
    cpu = (time.process_time() - cpu0) + (children.ru_utime + children.ru_stime
                                          - children0.ru_utime - children0.ru_stime)
    verification = Verification(tier, results, description, n_workers, time.perf_counter() - start, cpu,
                                fault=fault, command=command or [])
    if out is not None:
        write(verification, Path(out))
    return verification


def write(verification: Verification, out: Path) -> None:
    """Write the report into a staged directory, then move it into place (replacing an earlier one)."""
    from engraft.verification.report import write_report

    check_verification_dir(out)
    tmp = stage_dir(out)
    try:
        write_report(verification, tmp)
        if os.path.lexists(out):
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            elif is_verification_dir(out):
                trash = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
                os.replace(out, trash)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                raise OutputError(f"{out}: something else was put there while the cases ran; it was left "
                                  "alone: choose another --out")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    verification.out = out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
