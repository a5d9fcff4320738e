"""Running a sweep into a directory: pick an executor, resume, record, aggregate.

Layout of a sweep directory::

    sweep.json              the sweep: base config and its digest, parameters, every run's id, values, seed
    runs/r00000/            one run directory per finished run (see engraft.results)
    runs/r00007.error.json  a run that raised: its error (retried on the next resume)
    aggregate.parquet       one row per run (see engraft.sweep.aggregate)

A run is done exactly when its run directory is complete and its files parse
(:func:`engraft.results.run_dir_problem`); run directories appear whole by a final
rename, so an interrupted sweep (Ctrl-C, ``kill -9``, a lost worker) never
leaves half a run. Running the same sweep into the same directory again runs
only what is not done and reuses the rest; a different sweep (changed config,
parameters or seeds) is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engraft._version import __version__
from engraft.errors import brief
from engraft.outputs import (
    OutputError,
    check_sweep_dir,
    describe_os_error,
    disk_full_failure,
    is_disk_full,
    share_like_umask,
)
from engraft.results import atomic_write_text, check_disk_space, run_dir_problem, to_json
from engraft.sweep.aggregate import SPEC_FILE, SweepDirError, collect, read_spec
from engraft.sweep.executors import (
    STATUS_DAMAGED,
    STATUS_DISK_FULL,
    STATUS_DONE,
    STATUS_FAILED,
    DaskExecutor,
    ProcessExecutor,
    RunOutcome,
    SerialExecutor,
    Task,
    available_cpus,
    log,
    run_status,
)
from engraft.sweep.spec import Run, Sweep, load_sweep

LOCK_FILE = ".sweep.lock"


@dataclass
class SweepProgress:
    """Where a sweep stands; passed to the progress callback after every run."""

    total: int
    reused: int
    ran: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        """Runs accounted for: reused, ran now (done or failed)."""
        return self.reused + self.ran


ProgressCallback = Callable[[SweepProgress], None]


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    total : runs in the sweep.
    reused : runs already done in the directory, not run again.
    ran : runs attempted now.
    failed : runs attempted now that failed (their ids in ``failed_ids``).
    out : the sweep directory.
    executor : where the runs ran, in words.
    """

    total: int
    reused: int
    ran: int
    failed: int
    out: Path
    executor: str = ""
    failed_ids: list[str] = field(default_factory=list)
    damaged_ids: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 if every run is done, else 1."""
        return 1 if self.failed else 0


def run_dir(out: Path, run: Run) -> Path:
    """``SWEEP_DIR/runs/<run_id>``."""
    return out / "runs" / run.run_id


def _first_difference(old, new, path: str = "") -> str | None:
    """The first key path where two JSON-like values differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                return f"{sub} {'added' if key not in old else 'removed'}"
            found = _first_difference(old[key], new[key], sub)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if old == new else f"{path or '(top level)'} {brief(old)} -> {brief(new)}"


def _describe_change(old: dict, new: dict) -> str:
    """Say what differs between a directory's sweep.json and this sweep, in a few words."""
    if old.get("base_config_sha256") != new["base_config_sha256"]:
        detail = _first_difference(old.get("base_config"), new["base_config"])
        return f"the base config changed ({detail})" if detail else "the base config changed"
    for key in ("parameters", "overrides", "replicates", "root_seed"):
        if json.dumps(old.get(key), sort_keys=True) != json.dumps(new[key], sort_keys=True, default=float):
            return f"sweep.{key} changed"
    return "its runs differ"


class SweepLock:
    """An exclusive lock on a sweep directory, so two sweeps never write one directory at once.

    ``flock`` locks are released by the kernel when the process dies, so a
    killed sweep never leaves a stale lock behind.
    """

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> SweepLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on Windows: no lock
            return self
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise SweepDirError(f"{self.path.parent}: another engraft sweep is running in this "
                                "directory; wait for it, or choose another --out") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def prepare(sweep: Sweep, out: Path) -> None:
    """Create a sweep directory, or reopen one holding the same sweep; refuse a different one.

    Also removes what an interrupted sweep may have left: half-written run
    directories and temporary files (never complete, never read).

    Raises
    ------
    SweepDirError
        ``out`` holds another sweep (its config, parameters or seeds changed).
    """
    spec_path = out / SPEC_FILE
    spec = {"digest": sweep.digest(), "engraft_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **sweep.spec_json()}
    if spec_path.exists():
        old = read_spec(out)  # one line if it is not a sweep file engraft can read
        if old.get("digest") != spec["digest"]:
            raise SweepDirError(f"{out}: holds a different sweep ({_describe_change(old, spec)}); "
                                "rerun it with its own file, or choose a new --out")
    else:
        atomic_write_text(spec_path, to_json(spec))
    (out / "runs").mkdir(exist_ok=True)
    share_like_umask(out, directory=True)
    remove_leftovers(out)


def remove_leftovers(out: Path) -> None:
    """Remove what killed writers leave: half-written run directories and temporary files.

    They are never complete and never read; only call this while no worker
    writes into ``out`` (before a sweep starts, after it ends).
    """
    runs = out / "runs"
    for stale in [*runs.glob(".*.tmp-*"), *runs.glob(".*.old-*"), *runs.glob(".*.tmp"),
                  *out.glob(".*.tmp-*"), *out.glob(".*.tmp")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def choose_executor(workers: int | None = None, scheduler: str | None = None, dask_local: bool = False):
    """The executor for these options: Dask (a scheduler or a LocalCluster), a local pool, or this process."""
    if scheduler and dask_local:
        from engraft.cli import UsageError

        raise UsageError("--scheduler and --dask-local: choose one")
    if workers is not None and workers < 1:
        from engraft.cli import UsageError

        raise UsageError(f"--workers: must be >= 1, got {workers}")
    if scheduler:
        return DaskExecutor(scheduler=scheduler)
    if dask_local:
        return DaskExecutor(local_workers=workers)
    workers = workers or available_cpus()
    return ProcessExecutor(workers) if workers > 1 else SerialExecutor()


def worker_threads(executor, cpus: int) -> int | None:
    """Numba threads per worker on this machine: its share of the cores (None: leave as is).

    A parallel kernel in each of N local workers would otherwise start a
    thread per core in every worker. Results do not depend on it (the kernel
    is bit-identical for any thread count). Remote Dask workers are left as
    their cluster configures them.
    """
    if isinstance(executor, ProcessExecutor):
        return max(1, cpus // executor.workers)
    if isinstance(executor, DaskExecutor) and not executor.scheduler:
        return max(1, cpus // executor.local_workers)
    return None


def run_sweep(sweep: Sweep | str | os.PathLike, out: str | os.PathLike, *, workers: int | None = None,
              scheduler: str | None = None, dask_local: bool = False, figures: bool = False,
              progress: ProgressCallback | None = None) -> SweepOutcome:
    """Run every run of ``sweep`` that is not done in ``out``, then write the aggregate table.

    Parameters
    ----------
    sweep : a :class:`~engraft.sweep.spec.Sweep` (from :func:`~engraft.sweep.load_sweep`)
        or the path of a sweep file.
    out : the sweep directory: created, or resumed if it holds the same sweep.
    workers : local worker processes (default: the sweep file's ``workers``,
        else every CPU; 1 runs in this process); with ``dask_local``, the
        LocalCluster's worker processes.
    scheduler : a Dask scheduler address (``tcp://host:8786``; default: the
        sweep file's ``scheduler``): run on that cluster.
    dask_local : start a Dask LocalCluster on 127.0.0.1 and run there.
    figures : also write each run's summary figure (slower).
    progress : called with a :class:`SweepProgress` at the start and after every run.

    Returns
    -------
    SweepOutcome
        Counts of runs reused, run and failed; ``exit_status`` is 1 if any failed.

    Raises
    ------
    SweepDirError
        ``out`` holds a different sweep, or another sweep is running in it.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out).resolve()
    executor = choose_executor(workers if workers is not None else sweep.workers,
                               scheduler or (None if dask_local else sweep.scheduler), dask_local)
    check_sweep_dir(out, SPEC_FILE, LOCK_FILE)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with SweepLock(out):
            prepare(sweep, out)
            return _run_prepared(sweep, out, executor, figures, progress)
    except OSError as err:  # the file system refused a write of the sweep's own files
        if is_disk_full(err):
            raise disk_full_failure(out, f"{_done_count(sweep, out)} of {len(sweep.runs)} runs are complete "
                                         "and kept") from None
        raise OutputError(describe_os_error(out, err)) from None


def _done_count(sweep: Sweep, out: Path) -> int:
    try:
        return sum(run_status(run_dir(out, r)) == STATUS_DONE for r in sweep.runs)
    except OSError:  # pragma: no cover - the directory itself became unreadable
        return 0


def _run_prepared(sweep: Sweep, out: Path, executor, figures: bool,
                  progress: ProgressCallback | None) -> SweepOutcome:
    statuses = {r.run_id: run_status(run_dir(out, r)) for r in sweep.runs}
    todo = [r for r in sweep.runs if statuses[r.run_id] != STATUS_DONE]
    damaged = [r.run_id for r in todo if statuses[r.run_id] == STATUS_DAMAGED]
    if damaged:
        log.warning("engraft sweep: %d finished run%s had files that do not parse and will run again: %s",
                    len(damaged), "s" if len(damaged) > 1 else "",
                    ", ".join(f"{i} ({run_dir_problem(out / 'runs' / i)})" for i in damaged[:5])
                    + (", ..." if len(damaged) > 5 else ""))
    if todo:
        check_disk_space(sweep.run_experiment(todo[0]), out, runs=len(todo))
    state = SweepProgress(total=len(sweep.runs), reused=len(sweep.runs) - len(todo))
    threads = worker_threads(executor, available_cpus())
    tasks = (Task(r.run_id, sweep.run_config(r), r.seed, str(run_dir(out, r)), figures, threads)
             for r in todo)
    failed_ids: list[str] = []
    disk_full: str | None = None
    if progress:
        progress(state)
    try:
        if todo:
            with executor:
                for outcome in executor.map(tasks):
                    if outcome.status == STATUS_DISK_FULL:
                        disk_full = outcome.error
                        break
                    _count(state, outcome, failed_ids)
                    if progress:
                        progress(state)
    finally:
        if not getattr(executor, "scheduler", None):  # local workers are gone: clean up after them
            remove_leftovers(out)
        try:
            collect(out)  # also after an interruption: the table says what is missing
        except OSError as err:
            if not (disk_full or is_disk_full(err)):
                raise
            disk_full = disk_full or str(err)
    if disk_full:
        raise disk_full_failure(out, f"{_done_count(sweep, out)} of {len(sweep.runs)} runs are complete and "
                                     "kept (the aggregate table may be out of date)")
    return SweepOutcome(total=state.total, reused=state.reused, ran=state.ran, failed=state.failed,
                        out=out, executor=executor.description, failed_ids=failed_ids, damaged_ids=damaged)


def _count(state: SweepProgress, outcome: RunOutcome, failed_ids: list[str]) -> None:
    state.ran += 1
    if outcome.status == STATUS_FAILED:
        state.failed += 1
        failed_ids.append(outcome.run_id)
