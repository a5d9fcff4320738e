"""Where a sweep's runs execute: this process, a local process pool, or a Dask cluster.

Every executor maps :func:`execute` over :class:`Task` objects and yields a
:class:`RunOutcome` per task as runs finish, in any order. ``map(tasks, fn,
on_lost)`` maps another picklable function the same way (``engraft verify``
runs its cases' simulations so); ``on_lost(task, message)`` then gives the
result of a task whose worker was lost for good. Tasks are plain
data (a config mapping, a seed, a path); a worker simulates, writes the run
directory itself (atomically, :func:`engraft.results.write_run`) and sends
back only the small outcome, so the parent's memory does not grow with the
number of runs. At most a bounded window of runs is in flight at a time.

A run that raises is recorded in ``<run_dir>.error.json`` and reported as
failed; the sweep goes on. A worker that dies (killed, out of memory, a
crash) takes its run with it: the local pool is restarted and the lost runs
are tried again, up to :data:`MAX_ATTEMPTS` times; Dask retries them itself
(its ``allowed-failures``).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engraft.errors import DiskFull
from engraft.outputs import is_disk_full
from engraft.results import atomic_write_text, is_run_dir, run_dir_problem, to_json

STATUS_DONE, STATUS_FAILED, STATUS_MISSING, STATUS_DAMAGED = "done", "failed", "missing", "damaged"
#: a run that could not be written because the disk is full (the sweep stops)
STATUS_DISK_FULL = "disk_full"
#: says when a worker is lost (Python's last-resort handler prints it on stderr)
log = logging.getLogger(__name__)
#: attempts of a run whose worker process died before it finished
MAX_ATTEMPTS = 3
#: runs in flight per worker: enough to keep workers busy, few enough to keep memory flat
WINDOW_PER_WORKER = 2


class WorkersLost(RuntimeError):
    """The local worker processes keep dying before they finish any run (a broken environment)."""


@dataclass(frozen=True)
class Task:
    """What a worker needs for one run: plain data, cheap to send.

    Attributes
    ----------
    run_id : the run's id in the sweep (``r00017``).
    config : the run's experiment mapping (seed included).
    seed : the run's seed.
    run_dir : absolute path of the run directory to write.
    figure : also write the summary figure.
    numba_threads : threads for a parallel kernel in this worker (None: leave as is).
    """

    run_id: str
    config: dict
    seed: int
    run_dir: str
    figure: bool = False
    numba_threads: int | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What a worker sends back: the run's id, seed, status and summary read-outs."""

    run_id: str
    seed: int
    status: str
    summary: dict | None = None
    error: str | None = None
    wall_seconds: float = 0.0


def error_path(run_dir: str | os.PathLike) -> Path:
    """``runs/r00017`` -> ``runs/r00017.error.json``."""
    return Path(f"{run_dir}.error.json")


def run_status(run_dir: str | os.PathLike) -> str:
    """``done`` (a complete run directory whose files parse), ``damaged`` (complete, but a file does
    not parse), ``failed`` (an error record) or ``missing``."""
    if is_run_dir(run_dir):
        return STATUS_DONE if run_dir_problem(run_dir) is None else STATUS_DAMAGED
    if error_path(run_dir).exists():
        return STATUS_FAILED
    return STATUS_MISSING


def record_failure(task: Task, message: str, details: str = "") -> RunOutcome:
    """Write ``<run_dir>.error.json`` (atomically) and return the failed outcome."""
    atomic_write_text(error_path(task.run_dir), to_json({
        "run_id": task.run_id, "seed": task.seed, "error": message, "traceback": details,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }))
    return RunOutcome(task.run_id, task.seed, STATUS_FAILED, error=message)


def execute(task: Task) -> RunOutcome:
    """Run one simulation and write its run directory; a run that raises is recorded, not raised.

    Parameters
    ----------
    task : the run to make.

    Returns
    -------
    RunOutcome
        ``done`` with the summary read-outs, or ``failed`` with the error
        (also written to ``<run_dir>.error.json``).
    """
    from engraft.config.load import validate
    from engraft.engines import simulate
    from engraft.results import write_run

    start = time.perf_counter()
    try:
        if task.numba_threads:
            import numba

            numba.set_num_threads(max(1, min(task.numba_threads, numba.config.NUMBA_NUM_THREADS)))
        exp = validate(task.config)
        result = simulate(exp, seed=task.seed)
        write_run(result, task.run_dir, command=["engraft", "sweep", task.run_id], figure=task.figure,
                  owned=True)
        error_path(task.run_dir).unlink(missing_ok=True)  # a retried run that now worked
        return RunOutcome(task.run_id, task.seed, STATUS_DONE, summary=result.summary,
                          wall_seconds=time.perf_counter() - start)
    except DiskFull as err:  # nothing more can be written: the sweep stops, the run stays to do
        return RunOutcome(task.run_id, task.seed, STATUS_DISK_FULL, error=str(err))
    except Exception as err:  # the run is recorded as failed; the sweep goes on
        try:
            return record_failure(task, f"{type(err).__name__}: {err}", traceback.format_exc())
        except OSError as write_err:
            if is_disk_full(write_err) or is_disk_full(err):
                return RunOutcome(task.run_id, task.seed, STATUS_DISK_FULL, error=str(write_err))
            raise


def outcome_from_dir(task: Task) -> RunOutcome:
    """The outcome of a run whose directory is complete (finished just before its worker was lost)."""
    import json

    summary = json.loads((Path(task.run_dir) / "summary.json").read_text(encoding="utf-8"))
    error_path(task.run_dir).unlink(missing_ok=True)
    return RunOutcome(task.run_id, task.seed, STATUS_DONE, summary=summary)


# ------------------------------------------------------------------------------------
# this process
# ------------------------------------------------------------------------------------
class SerialExecutor:
    """Runs one after another in this process (``--workers 1``): no start-up cost."""

    description = "this process"
    workers = 1

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, tasks: Iterable[Task], fn=None, on_lost=None) -> Iterator[RunOutcome]:
        fn = fn or execute
        for task in tasks:
            yield fn(task)


# ------------------------------------------------------------------------------------
# a local process pool
# ------------------------------------------------------------------------------------
class ProcessExecutor:
    """A local pool of ``workers`` processes (``concurrent.futures``, 'spawn' start method).

    Spawned, not forked: a forked child inherits the parent's Numba and
    threading state, which is fragile. Each worker loads the cached compiled
    kernel once and then takes run after run.
    """

    def __init__(self, workers: int, max_attempts: int = MAX_ATTEMPTS):
        self.workers = workers
        self.max_attempts = max_attempts
        self.description = f"{workers} local processes"
        self._pool = None

    def _start(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                         mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> ProcessExecutor:
        self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        if exc_type is not None:  # interrupted: runs in flight are abandoned (run dirs are atomic)
            self._terminate()
        else:
            self._pool.shutdown(wait=True)
        self._pool = None

    def _terminate(self) -> None:
        # ProcessPoolExecutor has no public way to stop a running call before
        # Python 3.14 (terminate_workers); ending its processes is safe here
        # because a run directory only appears, complete, by a final rename.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, tasks: Iterable[Task], fn=None, on_lost=None) -> Iterator[RunOutcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        fn = fn or execute
        on_lost = on_lost or record_failure
        window = WINDOW_PER_WORKER * self.workers
        upcoming = iter(tasks)
        retry: deque[tuple[Task, int]] = deque()
        pending: dict = {}  # future -> (task, attempt)
        exhausted = False
        barren = 0  # pools in a row that broke before finishing a run
        finished_here = 0  # runs finished by the current pool
        while True:
            while len(pending) < window and (retry or not exhausted):
                if retry:
                    task, attempt = retry.popleft()
                else:
                    task, attempt = next(upcoming, None), 1
                    if task is None:
                        exhausted = True
                        break
                pending[self._pool.submit(fn, task)] = (task, attempt)
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            lost: list[tuple[Task, int]] = []
            for future in done:
                task, attempt = pending.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    lost.append((task, attempt))
                else:
                    finished_here += 1
                    yield outcome
            if not lost:
                continue
            # a worker died; the pool is broken and every run in flight is lost with it
            self._pool.shutdown(wait=True, cancel_futures=True)
            for future, (task, attempt) in pending.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    finished_here += 1
                    yield future.result()
                else:
                    lost.append((task, attempt))
            pending.clear()
            barren = 0 if finished_here else barren + 1
            if barren >= self.max_attempts:
                self._pool = None
                raise WorkersLost(f"the local worker processes died {barren} times in a row before "
                                  "finishing any run (see the messages above); the finished runs are "
                                  "kept: rerun to resume, or try --workers 1")
            self._start()
            finished_here = 0
            retried = []
            for task, attempt in lost:
                if fn is execute and is_run_dir(task.run_dir):  # it finished just before the pool broke
                    yield outcome_from_dir(task)
                elif attempt >= self.max_attempts:
                    yield on_lost(task, f"the worker process died while running it, {attempt} "
                                               "times (killed, out of memory or crashed)")
                else:
                    retry.append((task, attempt + 1))
                    retried.append(task.run_id)
            log.warning("engraft sweep: a worker process died (killed, out of memory or crashed); "
                        "started new workers%s", f", retrying {', '.join(retried)}" if retried else "")


# ------------------------------------------------------------------------------------
# a Dask distributed cluster
# ------------------------------------------------------------------------------------
def _import_distributed():
    try:
        import distributed
    except ImportError:
        from engraft.cli import UsageError

        raise UsageError("Dask is not installed; install it with: pip install 'engraft[dask]'") from None
    return distributed


class DaskExecutor:
    """Runs on a Dask distributed cluster: an existing scheduler, or a new loopback LocalCluster.

    The run directories are written by the Dask workers, so with a remote
    scheduler the sweep directory must be on a file system every worker sees
    under the same path.

    Parameters
    ----------
    scheduler : address of a running scheduler (``tcp://10.0.0.5:8786``), or
        None to start a :class:`distributed.LocalCluster` on 127.0.0.1.
    local_workers : worker processes of the LocalCluster (one thread each).
    """

    def __init__(self, scheduler: str | None = None, local_workers: int | None = None):
        self.scheduler = scheduler
        self.local_workers = local_workers or available_cpus()
        self.description = f"Dask at {scheduler}" if scheduler else \
            f"a Dask LocalCluster of {self.local_workers} processes"
        self.client = None
        self.cluster = None

    @property
    def workers(self) -> int:
        return max(1, sum(self.client.nthreads().values())) if self.client else self.local_workers

    def __enter__(self) -> DaskExecutor:
        distributed = _import_distributed()
        if self.scheduler:
            try:
                self.client = distributed.Client(self.scheduler, timeout="30s")
            except OSError as err:
                from engraft.cli import UsageError

                raise UsageError(f"--scheduler {self.scheduler}: cannot connect ({err})") from None
        else:
            self.cluster = distributed.LocalCluster(
                n_workers=self.local_workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None,
            )
            self.client = distributed.Client(self.cluster)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def map(self, tasks: Iterable[Task], fn=None, on_lost=None) -> Iterator[RunOutcome]:
        distributed = _import_distributed()
        fn = fn or execute
        on_lost = on_lost or (lambda task, message: record_failure(task, message, traceback.format_exc()))
        window = WINDOW_PER_WORKER * self.workers
        upcoming = iter(tasks)
        pending: dict = {}  # future key -> (future, task)
        flow = distributed.as_completed()

        def submit() -> bool:
            task = next(upcoming, None)
            if task is None:
                return False
            future = self.client.submit(fn, task, pure=False,
                                        key=f"engraft-{task.run_id}-{os.urandom(4).hex()}")
            pending[future.key] = (future, task)
            flow.add(future)
            return True

        try:
            while len(pending) < window and submit():
                pass
            for future in flow:
                _, task = pending.pop(future.key)
                try:
                    yield future.result()
                except Exception as err:  # lost workers beyond Dask's retries, a cancelled task
                    yield on_lost(task, f"lost on the Dask cluster: {type(err).__name__}: {err}")
                future.release()
                submit()
        finally:
            if pending and self.client is not None:  # interrupted: stop what is queued or running
                self.client.cancel([future for future, _ in pending.values()])


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1
